"""Core ML benchmark on this machine (no Mac): the conversion table of `refocus export
coreml` (component, recipe, package size, conversion time, ops) and the LPIPS drift
of each recipe against PyTorch fp32.

Drift: every recipe's modules (the conversion-ready rewrites in the package
precision, with the same compressed UNet weights the packages hold) sample held-out
synthetic stacks through the runtime's adapters; each frame is compared (LPIPS alex)
with the PyTorch fp32 pipeline's frame for the same photo, position and seed. The
model's own seed-to-seed spread (seed s vs s + 1000) is the noise floor.

    python -m benchmarks.coreml --model refocus-tiny-4step --recipes fp16 fp16-w8 fp16-p6 fp16-p4 \
        --count 4 --positions 0 8 --out benchmarks/results/coreml-tiny
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

SPREAD_SEED_OFFSET = 1000


def _recipe(name: str):
    from refocus_edge.export.coreml.recipes import CoreMLRecipe

    precision, _, compress = name.partition("-")
    return CoreMLRecipe(precision, compress or None)


def conversion_table(model, recipes, out: Path) -> tuple[list, dict]:
    from refocus_edge.export.targets.target_coreml import CoreMLExportConfig, export_coreml
    from refocus_edge.runtime.bundle import read_bundle

    report = export_coreml(CoreMLExportConfig(model=model, out=out, recipes=tuple(recipes), force=True),
                           log=lambda m: print(m, file=sys.stderr))
    manifest = read_bundle(out).manifest
    return report.rows, manifest


@torch.no_grad()
def drift(model, recipes, manifest: dict, count: int, positions) -> dict:
    from benchmarks.distillation import _frames, _stacks
    from refocus_edge.export.coreml.packages import rewrite_modules
    from refocus_edge.export.emulation import ModuleRunner, emulated_refocuser
    from refocus_edge.export.coreml.recipes import compress_module
    from refocus_edge.runtime.components import ModelDims, component_specs
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.metrics.lpips import LPIPS

    refocuser = load_refocuser(model)
    specs = component_specs(ModelDims.of(refocuser))
    rewrites = rewrite_modules(refocuser, specs)
    lpips = LPIPS("alex")
    stacks = _stacks(refocuser, count)
    reference, spread = {}, []
    for i, stack in enumerate(stacks):
        for k in positions:
            reference[i, k] = _frames(refocuser, stack[k:k + 1], k, seed=i)
            other = _frames(refocuser, stack[k:k + 1], k, seed=i + SPREAD_SEED_OFFSET)
            spread.append(lpips(other, reference[i, k]))
    result = {"seed_spread": float(torch.cat(spread).mean()), "recipes": {}, "_examples": {}}
    result["_examples"]["PyTorch fp32"] = reference[0, positions[0]]
    for recipe in recipes:
        runners = {}
        for name, spec in specs.items():
            entry = manifest.coreml[recipe.name][name]
            dtype = torch.float16 if entry["compute_precision"] == "fp16" else torch.float32
            module = compress_module(rewrites[name], recipe) if recipe.compresses(name) else rewrites[name]
            runners[name] = ModuleRunner(module, spec.input_names, spec.output_names, dtype)
        emulated = emulated_refocuser(refocuser, specs, runners, f"coreml-emulated {recipe.name}")
        per_frame, t0 = [], time.perf_counter()
        for i, stack in enumerate(stacks):
            for k in positions:
                frames = _frames(emulated, stack[k:k + 1], k, seed=i)
                per_frame.append(lpips(frames, reference[i, k]))
                if (i, k) == (0, positions[0]):
                    result["_examples"][recipe.name] = frames
        values = torch.cat(per_frame)
        result["recipes"][recipe.name] = {"mean": float(values.mean()), "max": float(values.max()),
                                          "frames": int(values.numel()), "seconds": time.perf_counter() - t0}
        print(f"{recipe.name:8s} drift mean {values.mean():.4f} max {values.max():.4f}", file=sys.stderr)
    return result


def _markdown(res: dict) -> str:
    lines = ["# Core ML packages: conversion and drift (verified without a Mac)", "", f"`{res['command']}`", "",
             f"Model `{res['model']}`, {res['size'][0]}x{res['size'][1]}, UNet batch {res['unet_batch']}. "
             "Conversion on this machine (2-core CPU) with coremltools "
             f"{res['coremltools']}; packages are mlprograms for iOS 17 / macOS 14.", "",
             "| component | recipe | compute | weights | convert | ops | max rank |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['component']} | {r['recipe']} | {r['compute']} | {r['weights_mib']:.2f} MiB | "
                     f"{r['seconds']:.1f} s | {r['ops']} | {r['max_rank']} |")
    lines += ["", f"## LPIPS drift against PyTorch fp32 ({res['count']} held-out stacks x positions "
              f"{res['positions']}, same seed, every frame)", "",
              "| recipe | UNet package(s) | mean | worst frame |", "|---|---|---|---|"]
    for name, d in res["drift"]["recipes"].items():
        lines.append(f"| {name} | {res['unet_mib'][name]:.2f} MiB | {d['mean']:.4f} | {d['max']:.4f} |")
    lines += ["", f"Noise floor: the model's own seed-to-seed spread (seed s vs s + {SPREAD_SEED_OFFSET}) is "
              f"{res['drift']['seed_spread']:.3f} LPIPS.", ""]
    return "\n".join(lines)


def _figure(res: dict):
    from PIL import Image, ImageDraw

    from benchmarks.quality import _u8

    ex = res["_examples"]
    th, label_w = 96, 150
    img = Image.new("RGB", (label_w + th * 9, 20 + th * len(ex)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), f"held-out stack 0, input at F{res['positions'][0] + 1}, seed 0", fill="black")
    for r, (name, frames) in enumerate(ex.items()):
        y = 20 + r * th
        draw.text((4, y + th // 2 - 6), name, fill="black")
        for j, frame in enumerate(_u8((frames + 1) / 2)):  # [-1, 1] -> [0, 1]
            img.paste(Image.fromarray(frame).resize((th, th), Image.NEAREST), (label_w + j * th, y))
    return img


def main(argv=None) -> int:
    import coremltools

    from refocus_edge.bench.models import working_size
    from refocus_edge.bench.report import write_report
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.zoo import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m benchmarks.coreml", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--recipes", nargs="+", default=["fp16", "fp16-w8", "fp16-p6", "fp16-p4"])
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--positions", type=int, nargs="+", default=[0, 8])
    p.add_argument("--out", type=Path, default=Path("out/coreml"))
    args = p.parse_args(argv)
    recipes = [_recipe(r) for r in args.recipes]
    scratch = Path(tempfile.mkdtemp(prefix="coreml-bench-"))
    try:
        rows, manifest = conversion_table(args.model, recipes, scratch / "bundle")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res = {"command": "python -m benchmarks.coreml " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": args.model, "count": args.count, "positions": args.positions,
           "coremltools": coremltools.__version__, "rows": rows,
           "size": list(working_size(load_refocuser(args.model))),
           "unet_batch": manifest.coreml[recipes[0].name]["unet"]["inputs"]["sample"][0],
           "unet_mib": {r.name: sum(p["weight_bytes"] for p in manifest.coreml[r.name]["unet"]["packages"]) / 2 ** 20
                        for r in recipes}}
    res["drift"] = drift(args.model, recipes, manifest, args.count, args.positions)
    res["_examples"] = res["drift"].pop("_examples")
    figure = _figure(res)
    res.pop("_examples")
    write_report(args.out, "coreml", res, _markdown(res), figure)
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
