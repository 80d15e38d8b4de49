"""Quality at each size a model serves (issue 23 item 2): the quality benchmark's large-jump LPIPS,
own-frame LPIPS, identity baseline, autoencoder floor and depth-from-focus rank, per evaluation size
and set, in one table, from one model load.

A model that serves photos at their own shape (refocus.json `min_short_side`, runtime/resize.py) runs
a 4:3 photo at 320x256, a 16:9 one at 448x256, a square one at 320x320, ...; the blur of a scene grows
with the image, so quality at the working size says little about those. Each size renders the same
held-out stacks (synthetic scenes, whole photographs) at that size.

    python -m benchmarks.quality_sizes --model refocus-tiny-1step --sizes 128x128 256x256 384x256 512x256 \\
        --count 8 --out benchmarks/results/refocus-tiny-1step-sizes
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

SYNTHETIC_BAR = 0.90  # large-jump LPIPS / identity the issue asks for on synthetic stacks; photos: below 1


def evaluate_sizes(model, sizes, sets=("synthetic", "photos"), count: int = 8, positions=(0, 4, 8), seed: int = 0,
                   decoder: str | None = None, progress: bool = True, log=print) -> dict:
    from benchmarks.quality import evaluate_quality
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.run_model import run_decoder

    refocuser = load_refocuser(model, decoder=decoder or run_decoder("fast"))
    rows = []
    for w, h in sizes:
        for eval_set in sets:
            t0 = time.perf_counter()
            res = evaluate_quality(refocuser, count, positions, seed, "fast", progress=progress, eval_set=eval_set,
                                   size=(w, h))
            lj, own, dr = res["large_jump"], res["own_frame"], res["depth_rank"]
            row = {"size": [w, h], "set": eval_set, "lpips_large_jumps": lj["model"], "identity": lj["baseline"],
                   "ratio": lj["model"] / lj["baseline"], "vae_floor": lj["vae_roundtrip"],
                   "own_frame": own["model"], "own_frame_floor": own["vae_roundtrip"],
                   "depth_rank": dr["model"], "depth_rank_ground_truth": dr["ground_truth"],
                   "seconds_per_stack": res["sampler_seconds_mean"], "wall_s": time.perf_counter() - t0}
            row["bar_met"] = row["ratio"] <= SYNTHETIC_BAR if eval_set == "synthetic" else row["ratio"] < 1.0
            rows.append(row)
            log(f"{w}x{h} {eval_set}: LPIPS {row['lpips_large_jumps']:.3f} vs identity {row['identity']:.3f} "
                f"({row['ratio']:.2f}x), own frame {row['own_frame']:.3f}, depth rank {row['depth_rank']:.2f}")
    return {"benchmark": "quality_sizes", "model": str(refocuser.source), "decoder": refocuser.config.decoder,
            "count": count, "positions": list(positions), "seed": seed, "served": refocuser.config.resolution_policy
            .describe(), "rows": rows}


def markdown(res: dict, command: str) -> str:
    lines = [f"# Quality per served size: {Path(res['model']).name}", "",
             f"- command: `{command}`",
             f"- model `{res['model']}`, {res['decoder']} decoder; photos are served: {res['served']}",
             f"- {res['count']} stacks per set, input positions {res['positions']}, sampler seed {res['seed']} + stack",
             "- LPIPS (alex) at |j - k| >= 4 against the true frames; identity = the input copied to every frame; "
             "bars: synthetic <= 0.90x identity, photos below identity; depth = Spearman rank correlation of "
             "depth from focus with the true depth (bar 0.5)", "",
             "| size | set | LPIPS \\|j-k\\|>=4 | identity | ratio | bar | own frame | VAE floor | depth rank "
             "(GT stacks) | s / stack |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['set']} | {r['lpips_large_jumps']:.3f} | "
                     f"{r['identity']:.3f} | {r['ratio']:.2f}x | {'met' if r['bar_met'] else '**not met**'} | "
                     f"{r['own_frame']:.3f} | {r['vae_floor']:.3f} | {r['depth_rank']:.2f} "
                     f"({r['depth_rank_ground_truth']:.2f}) | {r['seconds_per_stack']:.2f} |")
    return "\n".join(lines) + "\n"


def figure(res: dict):
    """Model and identity LPIPS per size, one panel per set (Pillow only)."""
    from PIL import Image, ImageDraw

    sets = sorted({r["set"] for r in res["rows"]}, key=["synthetic", "photos"].index)
    sizes = [tuple(r["size"]) for r in res["rows"] if r["set"] == sets[0]]
    pw, ph, top = max(320, 70 * len(sizes) + 60), 300, 50
    img = Image.new("RGB", (pw * len(sets), ph), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 6), "LPIPS to the truth at |j-k| >= 4: model (blue), input copied (grey); lower is better", fill="black")
    peak = max(max(r["lpips_large_jumps"], r["identity"]) for r in res["rows"]) * 1.1
    for p, eval_set in enumerate(sets):
        x0 = p * pw + 30
        d.text((x0, 26), eval_set, fill="black")
        for i, size in enumerate(sizes):
            r = next(r for r in res["rows"] if r["set"] == eval_set and tuple(r["size"]) == size)
            for j, (v, colour) in enumerate(((r["lpips_large_jumps"], (40, 90, 200)), (r["identity"], (160, 160, 160)))):
                bh = int((ph - top - 40) * v / peak)
                x = x0 + i * 70 + j * 26
                d.rectangle((x, ph - 30 - bh, x + 22, ph - 30), fill=colour)
                d.text((x, ph - 44 - bh), f"{v:.2f}", fill="black")
            d.text((x0 + i * 70, ph - 24), f"{size[0]}x{size[1]}", fill="black")
    return img


def main(argv=None) -> int:
    from refocus_edge.bench.report import write_report
    from refocus_edge.cli.arg_types import size_wxh
    from refocus_edge.runtime.errors import RefocusError

    p = argparse.ArgumentParser(prog="python -m benchmarks.quality_sizes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="shipped model name or folder (default: the default model)")
    p.add_argument("--sizes", type=size_wxh, nargs="+", required=True, metavar="WxH")
    p.add_argument("--sets", nargs="+", choices=("synthetic", "photos"), default=["synthetic", "photos"])
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--positions", type=int, nargs="+", default=[0, 4, 8])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoder", choices=("full", "tiny", "guided", "auto"), default=None,
                   help="default: as `refocus run` decodes in fast mode")
    p.add_argument("--out", type=Path, default=Path("out/quality-sizes"))
    args = p.parse_args(argv)
    from refocus_edge.runtime.zoo import DEFAULT_MODEL

    try:
        res = evaluate_sizes(args.model or DEFAULT_MODEL, args.sizes, tuple(args.sets), args.count,
                             tuple(args.positions), args.seed, args.decoder)
    except RefocusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.quality_sizes " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    res["command"] = command
    paths = write_report(args.out, "quality_sizes", res, markdown(res, command), figure(res))
    print("wrote " + ", ".join(str(v) for v in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
