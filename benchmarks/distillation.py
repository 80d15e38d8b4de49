"""Distillation benchmark: what a few-step student costs in quality, and what it saves in time.

On the first N held-out synthetic stacks, inputs at positions k (default 0, 4, 8),
seed i for stack i:

  * quality: LPIPS (alex) against ground truth, averaged over output frames with
    |j - k| >= 4, for the teacher and each student (the issue's bar: a student
    within +0.02 of its teacher);
  * drift: LPIPS(student, teacher with the same seed) per output frame, next to
    the teacher's own seed-to-seed spread LPIPS(teacher seed i, teacher seed
    i + 1000), the noise floor below which drift means nothing;
  * latency: end to end on the same backend (torch, this CPU), the teacher in
    reference mode (50 UNet calls) and in fast mode, each student as shipped;
    the ratio reference / student, and the UNet calls per stack.

    python -m benchmarks.distillation --teacher refocus-tiny \
        --students refocus-tiny-4step refocus-tiny-2step refocus-tiny-1step \
        --count 8 --positions 0 4 8 --out benchmarks/results/distillation
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from refocus_edge.bench.models import load, working_size
from benchmarks.quality import LARGE_JUMP, LPIPS_NET, _u8
from refocus_edge.runtime.zoo import TEACHER_MODEL

SPREAD_SEED_OFFSET = 1000


def _stacks(refocuser, count: int) -> list[torch.Tensor]:
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

    w, h = working_size(refocuser)
    data = SyntheticFocalStacks("heldout", size=(h, w), length=count)
    return [data[i]["frames"] * 2 - 1 for i in range(count)]  # [9, 3, H, W] in [-1, 1]


def _frames(refocuser, image, k: int, seed: int, mode: str = "fast") -> torch.Tensor:
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    return sample_focal_stack(refocuser, image, SamplerConfig(position=k, seed=seed, mode=mode,
                                                               progress=False)).frames * 2 - 1


def _latency(refocuser, image, k: int, mode: str, repeats: int) -> dict:
    from refocus_edge.bench.timing import timed
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    cfg = SamplerConfig(position=k, seed=0, mode=mode, progress=False)
    stats, res = timed(lambda: sample_focal_stack(refocuser, image, cfg), repeats, warmup=1)
    return {"median_s": float(stats["median_s"]), "min_s": float(stats["min_s"]), "unet_calls": res.unet_calls,
            "unet_s": float(res.timings["unet_total"]), "vae_decode_s": float(res.timings["vae_decode"])}


@torch.no_grad()
def evaluate_distillation(teacher, students, count: int = 8, positions=(0, 4, 8), seed: int = 0,
                          repeats: int = 3, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from refocus_edge.runtime.metrics.lpips import LPIPS

    t_model = load(teacher)
    s_models = {str(s): load(s) for s in students}
    stacks = _stacks(t_model, count)
    lpips = LPIPS(LPIPS_NET)
    positions = [int(k) for k in positions]
    n = t_model.config.num_frames
    shape = (count, len(positions), n)
    gt = {"teacher": np.zeros(shape), **{s: np.zeros(shape) for s in s_models}}
    drift = {s: np.zeros(shape) for s in s_models}
    spread, identity = np.zeros(shape), np.zeros(shape)
    examples = {}
    bar = tqdm(total=count * len(positions), desc="distillation", unit="input", disable=not progress)
    for i, stack in enumerate(stacks):
        for r, k in enumerate(positions):
            image = stack[k:k + 1]
            teach = _frames(t_model, image, k, seed + i)
            other = _frames(t_model, image, k, seed + i + SPREAD_SEED_OFFSET)
            gt["teacher"][i, r] = lpips(teach, stack).numpy()
            spread[i, r] = lpips(other, teach).numpy()
            identity[i, r] = lpips(image.expand_as(stack), stack).numpy()
            if i == 0 and r == 0:
                examples = {"ground truth": stack, "teacher": teach}
            for name, model in s_models.items():
                out = _frames(model, image, k, seed + i)
                gt[name][i, r] = lpips(out, stack).numpy()
                drift[name][i, r] = lpips(out, teach).numpy()
                if i == 0 and r == 0:
                    examples[name] = out
            bar.update()
    bar.close()

    jump = np.abs(np.arange(n)[None, :] - np.array(positions)[:, None]) >= LARGE_JUMP
    large = {name: float(t.mean(0)[jump].mean()) for name, t in gt.items()}
    image = stacks[0][4:5]
    lat = {"teacher (reference mode)": _latency(t_model, image, 4, "reference", repeats),
           "teacher (fast mode)": _latency(t_model, image, 4, "fast", repeats)}
    for name, model in s_models.items():
        lat[name] = _latency(model, image, 4, "fast", repeats)
    ref_s = lat["teacher (reference mode)"]["median_s"]
    rows = []
    for name, model in s_models.items():
        rows.append({
            "student": name, "steps": model.config.num_inference_steps,
            "unet_calls": lat[name]["unet_calls"],
            "latency_s": lat[name]["median_s"], "ratio_vs_reference": ref_s / lat[name]["median_s"],
            "ratio_vs_fast_teacher": lat["teacher (fast mode)"]["median_s"] / lat[name]["median_s"],
            "unet_stage_ratio": lat["teacher (reference mode)"]["unet_s"] / lat[name]["unet_s"],
            "lpips_gt_large_jump": large[name], "delta_vs_teacher": large[name] - large["teacher"],
            "meets_bar": large[name] <= large["teacher"] + 0.02,
            "drift_mean": float(drift[name].mean()), "drift_per_frame": drift[name].mean((0, 1)).tolist(),
        })
    return {
        "benchmark": "distillation", "teacher": str(teacher), "count": count, "positions": positions,
        "seed": seed, "lpips_net": LPIPS_NET, "min_jump": LARGE_JUMP,
        "teacher_lpips_gt_large_jump": large["teacher"],
        "identity_large_jump": float(identity.mean(0)[jump].mean()),
        "teacher_spread_mean": float(spread.mean()), "teacher_spread_per_frame": spread.mean((0, 1)).tolist(),
        "students": rows, "latency": lat,
        "threads": torch.get_num_threads(),
        "_examples": {k: _u8((v + 1) / 2) for k, v in examples.items()},
    }


def _markdown(res: dict) -> str:
    lines = [f"# Distillation: students of {res['teacher']}", "",
             f"- command: `{res['command']}`",
             f"- {res['count']} held-out synthetic stacks, inputs at positions {res['positions']}, "
             f"sampler seed i for stack i; LPIPS {res['lpips_net']}; torch on this CPU "
             f"({res['threads']} threads), median of the timed runs after a warm-up", "",
             "| model | steps | UNet calls | latency | reference / this | LPIPS vs GT, \\|j-k\\| >= 4 | "
             "vs teacher | drift to teacher (mean LPIPS) |",
             "|---|---|---|---|---|---|---|---|"]
    lat = res["latency"]
    ref = lat["teacher (reference mode)"]
    lines.append(f"| teacher, reference mode | 25 | {ref['unet_calls']} | {ref['median_s']:.2f} s | 1.0x | "
                 f"{res['teacher_lpips_gt_large_jump']:.3f} | | seed-to-seed spread "
                 f"{res['teacher_spread_mean']:.3f} |")
    fast = lat["teacher (fast mode)"]
    lines.append(f"| teacher, fast mode | 25 | {fast['unet_calls']} (batch 2) | {fast['median_s']:.2f} s | "
                 f"{ref['median_s'] / fast['median_s']:.1f}x | same samples | | |")
    for row in res["students"]:
        ok = "meets +0.02" if row["meets_bar"] else "misses +0.02"
        lines.append(f"| {row['student']} | {row['steps']} | {row['unet_calls']} | {row['latency_s']:.2f} s | "
                     f"{row['ratio_vs_reference']:.1f}x | {row['lpips_gt_large_jump']:.3f} | "
                     f"{row['delta_vs_teacher']:+.3f} ({ok}) | {row['drift_mean']:.3f} |")
    lines += ["", f"Identity baseline (input copied to every frame), same cells: {res['identity_large_jump']:.3f}.",
              "", "UNet stage alone, reference / student: " + ", ".join(
                  f"{r['student']} {r['unet_stage_ratio']:.1f}x" for r in res["students"]) + ".",
              "", "Drift per output frame (LPIPS to the teacher's stack, same seed) and the teacher's "
              "seed-to-seed spread:", "",
              "| | " + " | ".join(f"F{j + 1}" for j in range(len(res["teacher_spread_per_frame"]))) + " |",
              "|---|" + "---|" * len(res["teacher_spread_per_frame"]),
              "| teacher spread | " + " | ".join(f"{v:.3f}" for v in res["teacher_spread_per_frame"]) + " |"]
    for row in res["students"]:
        lines.append(f"| {row['student']} | " + " | ".join(f"{v:.3f}" for v in row["drift_per_frame"]) + " |")
    lines += ["", "Latency detail (seconds): " + "; ".join(
        f"{k}: total {v['median_s']:.2f}, UNet {v['unet_s']:.2f}, decode {v['vae_decode_s']:.2f}"
        for k, v in lat.items()), ""]
    return "\n".join(lines)


def _figure(res: dict):
    """Rows: ground truth, teacher, each student, for held-out stack 0 with the input at the first position."""
    from PIL import Image, ImageDraw

    ex = res["_examples"]
    th, label_w = 96, 190
    first = next(iter(ex.values()))
    n, tw = len(first), th
    img = Image.new("RGB", (label_w + tw * n, 20 + th * len(ex)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), f"held-out stack 0, input at F{res['positions'][0] + 1} (outlined)", fill="black")
    for r, (name, frames) in enumerate(ex.items()):
        y = 20 + r * th
        draw.text((4, y + th // 2 - 6), name, fill="black")
        for j, frame in enumerate(frames):
            img.paste(Image.fromarray(frame).resize((tw, th), Image.NEAREST), (label_w + j * tw, y))
        if r == 0:
            k = res["positions"][0]
            draw.rectangle([label_w + k * tw, y, label_w + (k + 1) * tw - 1, y + th - 1], outline="lime", width=3)
    return img


def main(argv=None) -> int:
    from refocus_edge.bench.report import write_report
    from refocus_edge.runtime.errors import RefocusError

    p = argparse.ArgumentParser(prog="python -m benchmarks.distillation", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default=TEACHER_MODEL)
    p.add_argument("--students", nargs="+", required=True)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--positions", type=int, nargs="+", default=[0, 4, 8])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("out/distillation"))
    args = p.parse_args(argv)
    try:
        res = evaluate_distillation(args.teacher, args.students, args.count, args.positions, args.seed,
                                    args.repeats)
    except RefocusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else list(argv)
    res["command"] = "python -m benchmarks.distillation " + shlex.join(argv)
    public = {k: v for k, v in res.items() if not k.startswith("_")}
    paths = write_report(args.out, "distillation", public, _markdown(res), _figure(res))
    print(_markdown(res))
    print(f"wrote {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
