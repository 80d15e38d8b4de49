"""Quantization recipes side by side: size, per-stage latency, drift, quality at large focal jumps.

    python -m benchmarks.quantization --bundle out/quant-tiny4 --out benchmarks/results/quantization

The bundle is one written by chained `refocus quantize` runs (fp16, bf16, fp8, int8 on top of
the fp32 export of the student). Per recipe:
  * size of the recipe's graphs on disk (the graphs a deployment ships, shared fp32 ones included);
  * per-stage latency through ONNX Runtime on this CPU (median of --repeats after a warm-up),
    the same stage callables as bench/backends.py;
  * drift: LPIPS (alex) per output frame against the fp32 student, held-out synthetic stacks,
    fixed seeds (quantization/drift.py);
  * quality at large focal jumps: input focused near (position 0) -> output frame 8 (far), and
    the reverse, LPIPS against the renderer's ground-truth frame; fp32 alongside for scale.
bf16 has no CPU backend: its drift comes from the PyTorch modules in bf16 and it has no latency
row. Core ML recipes (w8/p6/p4) run their compressed UNet weights in PyTorch fp16 (Core ML
itself needs macOS), as the Core ML exporter's gate does.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from refocus_edge.runtime.disk_usage import disk_mib

JUMPS = ((0, 8), (8, 0))  # (input position, output frame) pairs four focal planes or more apart


def _stage_fns(refocuser) -> dict:
    from refocus_edge.bench.backends import stage_callables

    w, h = refocuser.config.working_size
    fns = stage_callables(refocuser, (h, w), refocuser.config.default_position, 0,
                          refocuser.config.num_inference_steps)
    fns.pop("end_to_end_reference", None)
    if not refocuser.config.uses_guidance:  # a student never calls the UNet on both branches
        fns.pop("unet_b2", None)
    return fns


def _interleaved_latency(refocusers: dict, repeats: int) -> dict:
    """{recipe: {stage: median ms}}, the recipes timed round-robin (one call of every stage of
    every recipe per round, after a warm-up round), so a machine that speeds up or slows down
    while the benchmark runs (a shared VM does) shifts every recipe alike instead of favouring
    whichever was measured in the quiet minute."""
    fns = {name: _stage_fns(r) for name, r in refocusers.items()}
    samples: dict = {name: {stage: [] for stage in f} for name, f in fns.items()}
    for round_ in range(repeats + 1):
        for name, stages in fns.items():
            for stage, fn in stages.items():
                t0 = time.perf_counter()
                fn()
                if round_:  # round 0 warms up
                    samples[name][stage].append(time.perf_counter() - t0)
    return {name: {stage: statistics.median(v) * 1000 for stage, v in per.items()} for name, per in samples.items()}


def _jump_quality(refocuser, stacks, lpips) -> dict:
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    scores = {f"{a}->{b}": [] for a, b in JUMPS}
    with torch.no_grad():
        for i, item in enumerate(stacks):
            frames = item["frames"]
            for a, b in JUMPS:
                out = sample_focal_stack(refocuser, frames[a:a + 1] * 2 - 1,
                                         SamplerConfig(position=a, seed=i, progress=False)).frames
                scores[f"{a}->{b}"].append(float(lpips(out[b:b + 1] * 2 - 1, frames[b:b + 1] * 2 - 1)))
    return {k: statistics.mean(v) for k, v in scores.items()}


def _coreml_swaps(source, specs, compress: str) -> dict:
    from refocus_edge.export.coreml.recipes import CoreMLRecipe, compress_module
    from refocus_edge.quantization.quantize import module_runners

    recipe = CoreMLRecipe("fp16", compress)
    return module_runners(source, specs, torch.float16, f"coreml-emulated {recipe.name}",
                          transform=lambda name, m: compress_module(m, recipe) if recipe.compresses(name) else m)


def _package_mib(bundle_root: Path, packages) -> float:
    """Bytes on disk of Core ML packages (folders), in MiB."""
    return disk_mib(*(bundle_root / rel for rel in packages))


def _coreml_sizes(coreml_bundle: Path | None) -> dict:
    """{compress: MiB} of the packages of a bundle written by `refocus export coreml` (fp16 compute)."""
    if coreml_bundle is None:
        return {}
    from refocus_edge.runtime.bundle import read_bundle

    tables = read_bundle(coreml_bundle).manifest.artifacts.get("coreml", {})
    return {name.split("-", 1)[1] if "-" in name else "fp16": _package_mib(coreml_bundle, table.values())
            for name, table in tables.items()}


def run_bench(bundle_path: Path, repeats: int, photos: int, jump_stacks: int, coreml: bool, first_photo: int = 100,
              coreml_bundle: Path | None = None, log=print) -> dict:
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks
    from refocus_edge.quantization.drift import DriftConfig, DriftMeter
    from refocus_edge.export.runner_swap import component_runners
    from refocus_edge.export.onnx_graphs import graphs_mib
    from refocus_edge.quantization.quantize import torch_precision_runners
    from refocus_edge.runtime.backends.backend_torch import source_folder
    from refocus_edge.runtime.bundle import read_bundle
    from refocus_edge.runtime.bundle_loading import load_bundle_refocuser
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.metrics.lpips import LPIPS

    bundle = read_bundle(bundle_path)
    records = bundle.manifest.quantization
    lpips = LPIPS("alex")
    fp32 = load_bundle_refocuser(bundle_path, backend="onnxruntime", precision="fp32")
    meter = DriftMeter(fp32, DriftConfig(photos=photos, positions=(0, 8, 4), first=first_photo), lpips=lpips)
    w, h = fp32.config.working_size
    stacks = [SyntheticFocalStacks("heldout", size=(h, w), length=jump_stacks)[i] for i in range(jump_stacks)]
    specs = bundle.specs

    def size(precision):
        return graphs_mib(bundle.root, bundle.manifest.table("onnx", precision).values())

    rows = {}
    log("fp32: jumps")
    rows["fp32"] = {"size_mib": size("fp32"), "drift": {"median": 0.0, "worst": 0.0},
                    "jumps": _jump_quality(fp32, stacks, lpips), "runs_on": "onnxruntime CPU fp32"}
    refocusers = {"fp32": fp32}
    for precision in ("fp16", "int8", "fp8"):
        if precision not in bundle.precisions("onnx"):
            continue
        log(f"{precision}: drift, jumps")
        r = refocusers[precision] = load_bundle_refocuser(bundle_path, backend="onnxruntime", precision=precision)
        drift = meter.measure(component_runners(r))
        rows[precision] = {"size_mib": size(precision), "drift": drift.to_json(),
                           "jumps": _jump_quality(r, stacks, lpips),
                           "keep_float": records.get(precision, {}).get("keep_float"),
                           "runs_on": f"onnxruntime CPU {precision}"}
    log(f"latency: {', '.join(refocusers)} interleaved, {repeats} rounds")
    for name, ms in _interleaved_latency(refocusers, repeats).items():
        rows[name]["latency_ms"] = ms
    if "bf16" in bundle.precisions("onnx"):
        log("bf16 (PyTorch bf16 emulation): drift")
        swaps = torch_precision_runners(bundle, torch.bfloat16)
        rows["bf16"] = {"size_mib": None, "latency_ms": {}, "drift": meter.measure(swaps).to_json(),
                        "jumps": {}, "runs_on": "TensorRT only (drift: PyTorch bf16 on CPU)"}
    if coreml:
        source = load_refocuser(source_folder(bundle))
        sizes = _coreml_sizes(coreml_bundle)
        for compress in ("w8", "p6", "p4"):
            log(f"coreml {compress} (PyTorch emulation): drift")
            rows[f"coreml-{compress}"] = {"size_mib": sizes.get(compress), "latency_ms": {},
                                          "drift": meter.measure(_coreml_swaps(source, specs, compress)).to_json(),
                                          "jumps": {}, "runs_on": "Core ML (macOS/iOS); drift: PyTorch fp16 emulation"}
    return {"bundle": str(bundle_path), "source": bundle.source, "photos": photos, "first_photo": first_photo,
            "jump_stacks": jump_stacks,
            "repeats": repeats, "threads": torch.get_num_threads(), "rows": rows,
            "records": {k: {kk: v.get(kk) for kk in ("keep_float", "calibration", "drift_result", "sizes_mib",
                                                      "seconds", "tensorrt_twin")} for k, v in records.items()}}


def write_report(res: dict, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "quantization.json").write_text(json.dumps(res, indent=1) + "\n")
    rows = res["rows"]
    stages = [s for s in rows["fp32"]["latency_ms"]]
    fp32_size = rows["fp32"]["size_mib"]
    lines = [f"# Quantization recipes: {Path(res['bundle']).name}", "", f"- command: `{command}`",
             f"- source: `{res['source'].get('model')}` (hash {str(res['source'].get('hash'))[:12]})",
             f"- drift: {res['photos']} held-out synthetic stacks from #{res.get('first_photo', 0)} (input positions "
             "0, 8, 4 cycled; seed = photo index), LPIPS alex per output frame vs the fp32 student through ONNX "
             "Runtime; the gates and the sensitivity scan in `refocus quantize` measure photos #0.., so these are "
             "photos they never saw",
             f"- latency: ONNX Runtime CPU, {res['threads']} threads, median of {res['repeats']} rounds after a "
             "warm-up round; the recipes are timed round-robin (every stage of every recipe once per round) "
             "so a shared VM's changing speed shifts them alike",
             f"- jumps: LPIPS vs the renderer's ground truth, mean of {res['jump_stacks']} held-out stacks", "",
             "| recipe | size MiB | x smaller | " + " | ".join(stages) + " | drift median | drift worst | "
             "jump 0->8 | jump 8->0 | runs on |",
             "|---" * (len(stages) + 8) + "|"]
    for name, r in rows.items():
        lat = [f"{r['latency_ms'][s]:.1f}" if s in r["latency_ms"] else "-" for s in stages]
        size = f"{r['size_mib']:.1f}" if r["size_mib"] else "-"
        ratio = f"{fp32_size / r['size_mib']:.2f}" if r["size_mib"] else "-"
        jumps = [f"{r['jumps'][k]:.4f}" if k in r["jumps"] else "-" for k in ("0->8", "8->0")]
        lines.append(f"| {name} | {size} | {ratio} | " + " | ".join(lat) +
                     f" | {r['drift']['median']:.4f} | {r['drift']['worst']:.4f} | {' | '.join(jumps)} | {r['runs_on']} |")
    lines += ["", "Latency columns are milliseconds per call (end_to_end_fast: one whole stack). Sizes: the "
              "recipe's ONNX graphs; Core ML rows: the recipe's .mlpackage folders (fp16 compute, UNet weights "
              "compressed), 'x smaller' against the fp32 ONNX graphs.", ""]
    per_photo = {n: r["drift"].get("median_per_photo") for n, r in rows.items() if r["drift"].get("median_per_photo")}
    if per_photo:
        lines += ["Drift per held-out photo (median over its 9 frames). One photo far above the rest while "
                  "the others stay near zero points at that photo's sample being sensitive to small "
                  "perturbations (few sampling steps from noise), rather than at the recipe degrading every "
                  "stack.", ""]
        lines += [f"- {n}: " + ", ".join(f"{x:.4f}" for x in v) for n, v in per_photo.items()] + [""]
    for name, rec in res["records"].items():
        if rec.get("keep_float"):
            lines.append(f"- {name}: kept in float after the sensitivity scan: {', '.join(rec['keep_float'])}")
        if rec.get("tensorrt_twin"):
            t = rec["tensorrt_twin"]
            lines.append(f"- {name} TensorRT twin ({t['activation_type']} activations): drift median "
                         f"{t['drift']['median']:.4f}, worst {t['drift']['worst']:.4f}; float: {', '.join(t['keep_float'])}")
    (out / "quantization.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quantization"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--first-photo", type=int, default=100,
                   help="first held-out photo for drift (the quantizer's gates use 0..)")
    p.add_argument("--jump-stacks", type=int, default=4)
    p.add_argument("--no-coreml", action="store_true")
    p.add_argument("--coreml-bundle", type=Path, default=None,
                   help="a `refocus export coreml --compress w8 p6 p4` bundle of the same model: its package "
                        "sizes fill the Core ML rows' size column")
    args = p.parse_args(argv)
    res = run_bench(args.bundle, args.repeats, args.photos, args.jump_stacks, not args.no_coreml, args.first_photo,
                    args.coreml_bundle, log=lambda m: print(m, file=sys.stderr, flush=True))
    write_report(res, args.out, "python -m benchmarks.quantization " + " ".join(argv or sys.argv[1:]))
    print(args.out / "quantization.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
