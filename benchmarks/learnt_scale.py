"""Time per stack of a model that generates at a share of the served size (refocus.json `generate_scale`,
runtime/learnt_scale.py) against generating at the served size itself, per served size, alternating
the two in one run so that the machine's load hits both alike; with the share of the time spent
bringing the frames back to the served size.

    python -m benchmarks.learnt_scale --model refocus-tiny-1step --sizes 320x256 448x256 512x256 \\
        --repeats 5 --out benchmarks/results/learnt-scale
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

POSITION = 0  # the input's focal position: frame 8 is then the largest jump


def time_sizes(model, sizes, repeats: int = 5, seed: int = 0, log=print) -> dict:
    import numpy as np
    import torch

    from refocus_edge.focalstacks.photo_stacks import PhotoFocalStacks
    from refocus_edge.runtime.errors import InvalidArgumentError
    from refocus_edge.runtime.run_model import RunModel, load_run_model
    from refocus_edge.runtime.sampler_config import SamplerConfig

    scaled = load_run_model(model, None, "fast", "torch", None, False)
    cfg = scaled.refocuser.config
    if cfg.generate_scale is None:
        raise InvalidArgumentError(f"{scaled.refocuser.source} has no generate_scale in refocus.json: nothing to compare")
    plain = RunModel(replace(scaled.refocuser, config=replace(cfg, generate_scale=None)), thin=False)
    load_before = os.getloadavg()
    rows, shown = [], None
    for w, h in sizes:
        truth = PhotoFocalStacks(size=(h, w), length=1)[0]["frames"]
        rgb = np.ascontiguousarray(truth[POSITION].permute(1, 2, 0).numpy())
        times = {"served": [], "scaled": [], "restore": []}
        examples = {"truth": truth.numpy()}
        for r in range(repeats + 1):  # the first round warms both up and is not counted
            for name, runner in (("served", plain), ("scaled", scaled)):
                t0 = time.perf_counter()
                res = runner.sample(rgb, SamplerConfig(position=POSITION, seed=seed, progress=False))
                wall = time.perf_counter() - t0
                if r:
                    times[name].append(wall)
                    if name == "scaled":
                        times["restore"].append(res.timings.get("restore_size", 0.0))
                    examples[name] = res.frames
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"size": [w, h], "generated_at": list(cfg.generation_size(w, h)), "served_s": med["served"],
               "scaled_s": med["scaled"], "restore_s": med["restore"], "speedup": med["served"] / med["scaled"]}
        rows.append(row)
        shown = (w, h, examples)  # the figure shows the last size's stacks
        log(f"{w}x{h}: at the served size {row['served_s']:.3f} s, generated at {row['generated_at'][0]}x"
            f"{row['generated_at'][1]} {row['scaled_s']:.3f} s (restore {row['restore_s']:.3f} s): "
            f"{row['speedup']:.1f}x")
    return {"benchmark": "learnt_scale", "model": str(scaled.refocuser.source), "generate_scale": cfg.generate_scale,
            "decoder": cfg.decoder, "repeats": repeats, "threads": torch.get_num_threads(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "rows": rows, "_examples": shown}


def figure(res: dict):
    """The first photo-derived stack at the last size, input at position 0: frames 0, 4, 8 of the truth,
    generated at the served size, and generated smaller and restored (Pillow only)."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h, ex = res["_examples"]
    cols, label_w, top = (0, 4, 8), 150, 22
    tw, th = min(w, 300), round(min(w, 300) * h / w)
    img = Image.new("RGB", (label_w + tw * len(cols), top + th * 3), "white")
    d = ImageDraw.Draw(img)
    d.text((label_w, 4), f"{w}x{h}, input = frame {POSITION}; frames {', '.join(map(str, cols))}", fill="black")
    for r, (name, label) in enumerate((("truth", "truth"), ("served", "generated at\nthe served size"),
                                       ("scaled", "generated at\n" + "x".join(map(str, res["rows"][-1]["generated_at"]))
                                        + ", restored"))):
        d.multiline_text((6, top + r * th + th // 3), label, fill="black")
        for c, j in enumerate(cols):
            frame = (np.clip(ex[name][j].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
            img.paste(Image.fromarray(frame).resize((tw, th), Image.Resampling.LANCZOS), (label_w + c * tw, top + r * th))
    return img


def markdown(res: dict, command: str) -> str:
    lines = [f"# Generating at {res['generate_scale']:g}x the served size: {Path(res['model']).name}", "",
             f"- command: `{command}`",
             f"- {res['decoder']} decoder, torch, {res['threads']} thread(s); median of {res['repeats']} stacks each "
             f"after a warm-up, the two ways alternating; load average before {res['load_before']}, after "
             f"{res['load_after']}", "- quality per served size: benchmarks/results/refocus-tiny-1step-sizes/", "",
             "| served | generated at | s / stack at the served size | s / stack generated smaller | of which restoring "
             "| speed-up |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['generated_at'][0]}x{r['generated_at'][1]} | "
                     f"{r['served_s']:.3f} | {r['scaled_s']:.3f} | {r['restore_s']:.3f} | {r['speedup']:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from refocus_edge.bench.report import write_report
    from refocus_edge.cli.arg_types import positive_int, size_wxh
    from refocus_edge.runtime.errors import RefocusError

    p = argparse.ArgumentParser(prog="python -m benchmarks.learnt_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="shipped model name or folder (default: the default model)")
    p.add_argument("--sizes", type=size_wxh, nargs="+", default=[(320, 256), (448, 256), (512, 256)], metavar="WxH")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--out", type=Path, default=Path("out/learnt-scale"))
    args = p.parse_args(argv)
    from refocus_edge.runtime.zoo import DEFAULT_MODEL

    try:
        res = time_sizes(args.model or DEFAULT_MODEL, args.sizes, args.repeats)
    except RefocusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.learnt_scale " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    res["command"] = command
    fig = figure(res)
    res.pop("_examples")
    paths = write_report(args.out, "learnt_scale", res, markdown(res, command), fig)
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
