"""Quality benchmark: LPIPS of generated focal stacks on held-out synthetic scenes.

For each of the first N stacks of the fixed held-out split and each input position
k, the refocuser is run on ground-truth frame k and every output frame j is
compared with ground-truth frame j (LPIPS alex, inputs in [-1, 1]). Rows = input
position, columns = F1..F9, mean over stacks: the paper's 9x9 evaluation grid,
restricted to the positions asked for. Two reference points sit beside it:

  * identity baseline: frame k copied to all 9 outputs. It is perfect at j = k and
    degrades with the focal jump. The project's quality bar: the model must beat
    it on large jumps (|j - k| >= 4), where generative refocusing is meant to win;
  * VAE round trip: encode + decode of the ground truth (decoded 8 + 1 like the
    sampler), the floor any output of this autoencoder can reach.

    python -m benchmarks.quality --model refocus-tiny --count 8 --positions 0 4 8 \
        --seed 0 --mode fast --out out/quality
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.models import load, working_size

LARGE_JUMP = 4  # |j - k| at or above which a cell counts as a large focal jump
LPIPS_NET = "alex"


def _u8(frames: torch.Tensor) -> np.ndarray:
    """[F, 3, H, W] in [0, 1] -> [F, H, W, 3] uint8 (for the figure only)."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _vae_roundtrip(refocuser, gt_pm1: torch.Tensor) -> torch.Tensor:
    """Encode (.mode()) and decode the 9 GT frames exactly as the sampler decodes: -> [9, 3, H, W] in [0, 1]."""
    from runtime.conditioning import component_dtype
    from runtime.sampler import decode_latents

    vae = refocuser.vae
    dtype = component_dtype(vae)
    latents = vae.encode(gt_pm1.to(dtype)).latent_dist.mode().float()
    # decode_latents divides by the scaling factor (diffusion latents are scaled), so scale here.
    return decode_latents(vae, latents[None] * vae.config.scaling_factor, refocuser.config.decode_chunk_sizes)


@torch.no_grad()
def evaluate_quality(model, count: int = 8, positions=(0, 4, 8), seed: int = 0, mode: str = "fast",
                     progress: bool = True) -> dict:
    """LPIPS tables (model, identity baseline, VAE floor) over the first `count` held-out stacks."""
    from tqdm.auto import tqdm

    from focalstacks.synthetic import SYNTHETIC_SPLITS, SyntheticFocalStacks
    from runtime.errors import InvalidArgumentError
    from runtime.metrics.lpips import LPIPS
    from runtime.sampler import SamplerConfig, sample_focal_stack

    refocuser = load(model)
    frames_n = refocuser.config.num_frames
    positions = [int(k) for k in positions]
    if not positions or any(not 0 <= k < frames_n for k in positions):
        raise InvalidArgumentError(f"positions must be in 0..{frames_n - 1}, got {positions}")
    heldout = SYNTHETIC_SPLITS["heldout"]
    if not 1 <= int(count) <= heldout.count:
        raise InvalidArgumentError(f"count must be in 1..{heldout.count}, got {count}")
    if mode not in ("fast", "reference"):
        raise InvalidArgumentError(f"mode must be 'fast' or 'reference', got {mode!r}")
    count = int(count)
    w, h = working_size(refocuser)
    data = SyntheticFocalStacks("heldout", size=(h, w), length=count)
    lpips = LPIPS(LPIPS_NET)
    model_d = np.zeros((count, len(positions), frames_n))
    base_d = np.zeros_like(model_d)
    vae_d = np.zeros((count, frames_n))
    # Figure examples: stack 0 at the two ends of the stack (or the ends of what was asked).
    shown = [k for k in (0, frames_n - 1) if k in positions] or [positions[0], positions[-1]]
    examples, sampler_s, last = {}, [], None

    start = time.perf_counter()
    bar = tqdm(total=count * len(positions), desc="quality", unit="run", disable=not progress)
    for i in range(count):
        gt = data[i]["frames"]  # [9, 3, H, W] in [0, 1]
        gt_pm1 = gt * 2 - 1
        vae_d[i] = lpips(_vae_roundtrip(refocuser, gt_pm1) * 2 - 1, gt_pm1).numpy()
        for r, k in enumerate(positions):
            cfg = SamplerConfig(position=k, seed=seed + i, mode=mode, progress=False)
            last = sample_focal_stack(refocuser, gt_pm1[k:k + 1], cfg)
            model_d[i, r] = lpips(last.frames * 2 - 1, gt_pm1).numpy()
            # The input frame is bit-identical to GT frame k, so the j = k cell is exactly 0.
            base_d[i, r] = lpips(gt_pm1[k:k + 1].expand_as(gt_pm1), gt_pm1).numpy()
            sampler_s.append(last.timings["total"])
            if i == 0 and k in shown:
                examples[k] = {"gt": _u8(gt), "model": _u8(last.frames)}
            bar.set_postfix(stack=i, k=k, lpips=f"{model_d[i, r].mean():.3f}")
            bar.update()
    bar.close()
    wall = time.perf_counter() - start

    # How the model was asked for (a shipped name stays a name); a loaded model by its folder.
    name = str(model) if isinstance(model, (str, Path)) else str(refocuser.source)
    model_t, base_t = model_d.mean(0), base_d.mean(0)
    jump = np.abs(np.arange(frames_n)[None, :] - np.array(positions)[:, None]) >= LARGE_JUMP
    large_model, large_base = float(model_t[jump].mean()), float(base_t[jump].mean())
    return {
        "benchmark": "quality",
        "model": name,
        "model_path": str(refocuser.source),
        "mode": mode,
        "count": count,
        "positions": positions,
        "seed": int(seed),
        "scene_seeds": [heldout.seed(0), heldout.seed(count - 1)],
        "size": [w, h],
        "num_inference_steps": last.num_inference_steps,
        "guidance_scale": last.guidance_scale,
        "unet_calls_per_stack": last.unet_calls,
        "lpips_net": LPIPS_NET,
        "model_table": model_t.tolist(),
        "baseline_table": base_t.tolist(),
        "vae_roundtrip": vae_d.mean(0).tolist(),
        "vae_roundtrip_mean": float(vae_d.mean()),
        "large_jump": {"min_jump": LARGE_JUMP, "cells": int(jump.sum()), "model": large_model,
                       "baseline": large_base, "model_beats_baseline": large_model < large_base},
        "all_cells": {"model": float(model_t.mean()), "baseline": float(base_t.mean())},
        "per_stack": {"model": model_d.tolist(), "baseline": base_d.tolist(), "vae_roundtrip": vae_d.tolist()},
        "sampler_seconds_mean": float(np.mean(sampler_s)),
        "wall_time_s": wall,
        "command": _command(name, count, positions, seed, mode),
        "_examples": examples,  # uint8 frames for the figure; "_" keys stay out of results.json
    }


def _command(model, count, positions, seed, mode) -> str:
    args = ["--model", model, "--count", str(count), "--positions", *map(str, positions),
            "--seed", str(seed), "--mode", mode]
    return "python -m benchmarks.quality " + shlex.join(args)


# --------------------------------------------------------------------------- report

def _md_rows(table, positions) -> list[str]:
    n = len(table[0])
    lines = ["| input | " + " | ".join(f"F{j + 1}" for j in range(n)) + " |", "|---" * (n + 1) + "|"]
    for k, row in zip(positions, table):
        lines.append(f"| F{k + 1} (k={k}) | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return lines


def _markdown(res: dict) -> str:
    lj, allc = res["large_jump"], res["all_cells"]
    verdict = "beats" if lj["model_beats_baseline"] else "does NOT beat"
    w, h = res["size"]
    lines = [
        f"# Quality: {Path(res['model_path']).name}", "",
        f"- command: `{res['command']}`",
        f"- model: `{res['model_path']}`",
        f"- held-out synthetic stacks: {res['count']} (scene seeds {res['scene_seeds'][0]}..{res['scene_seeds'][1]}),"
        f" {w}x{h}, sampler seed {res['seed']} + stack index",
        f"- sampler: mode {res['mode']}, {res['num_inference_steps']} steps, guidance {res['guidance_scale']},"
        f" {res['unet_calls_per_stack']} UNet calls per stack, {res['sampler_seconds_mean']:.2f} s per stack",
        f"- metric: LPIPS {res['lpips_net']} (lower is better); wall time {res['wall_time_s']:.1f} s", "",
        f"## Large focal jumps (|j - k| >= {lj['min_jump']}, {lj['cells']} cells)", "",
        "| | model | identity baseline |", "|---|---|---|",
        f"| large jumps | {lj['model']:.3f} | {lj['baseline']:.3f} |",
        f"| all cells | {allc['model']:.3f} | {allc['baseline']:.3f} |", "",
        f"The model **{verdict}** the identity baseline on large jumps (the project's quality bar).", "",
        "## Model", "", *_md_rows(res["model_table"], res["positions"]), "",
        "## Identity baseline (input frame copied to every output)", "",
        *_md_rows(res["baseline_table"], res["positions"]), "",
        "## VAE round trip (autoencoder floor, encode + decode 8 + 1 of the ground truth)", "",
        "| | " + " | ".join(f"F{j + 1}" for j in range(len(res["vae_roundtrip"]))) + " |",
        "|---" * (len(res["vae_roundtrip"]) + 1) + "|",
        "| GT | " + " | ".join(f"{v:.3f}" for v in res["vae_roundtrip"]) + " |", "",
        f"Mean {res['vae_roundtrip_mean']:.3f}. Figure: `quality.png` (stack 0: ground truth, model, baseline; "
        "then the two tables as heat maps).", "",
    ]
    return "\n".join(lines)


def _figure(res: dict):
    """Example stacks (GT / model / baseline rows) above heat maps of both tables, with Pillow."""
    from PIL import Image, ImageDraw

    examples = res.get("_examples") or {}
    n = len(res["model_table"][0])
    w, h = res["size"]
    th = 96  # tile height; tiny working sizes are scaled up so that they can be seen
    tw = max(1, round(th * w / h))
    label_w, line, cell_h = 170, 16, 20
    rows = []
    for k, ex in examples.items():
        # (label, frames, frame to outline: the input frame in the GT row)
        rows += [(f"k={k} ground truth", list(ex["gt"]), k), (f"k={k} model", list(ex["model"]), None),
                 (f"k={k} identity", [ex["gt"][k]] * n, None)]
    tables = [("model LPIPS", res["model_table"]), ("identity baseline LPIPS", res["baseline_table"])]
    table_h = sum(line + cell_h * len(t) for _, t in tables)
    height = 2 * line + th * len(rows) + line + table_h + 8
    img = Image.new("RGB", (label_w + tw * n, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), f"{Path(res['model_path']).name}  mode={res['mode']}  stacks={res['count']}", fill="black")
    y = 2 * line
    for j in range(n):
        draw.text((label_w + j * tw + tw // 2 - 6, line), f"F{j + 1}", fill="black")
    for label, frames, mark in rows:
        draw.text((4, y + th // 2 - 6), label, fill="black")
        for j, frame in enumerate(frames):
            img.paste(Image.fromarray(frame).resize((tw, th), Image.NEAREST), (label_w + j * tw, y))
        if mark is not None:
            draw.rectangle([label_w + mark * tw, y, label_w + (mark + 1) * tw - 1, y + th - 1], outline="lime", width=3)
        y += th
    y += line // 2
    vmax = max(max(max(r) for r in t) for _, t in tables) or 1.0
    for title, table in tables:
        draw.text((4, y), f"{title} (white 0 .. red {vmax:.3f})", fill="black")
        y += line
        for k, row in zip(res["positions"], table):
            draw.text((4, y + 4), f"input F{k + 1}", fill="black")
            for j, v in enumerate(row):
                shade = 255 - int(200 * v / vmax)
                x0 = label_w + j * tw
                draw.rectangle([x0, y, x0 + tw - 1, y + cell_h - 1], fill=(255, shade, shade), outline="gray")
                draw.text((x0 + 4, y + 4), f"{v:.3f}", fill="black")
            y += cell_h
    return img


def write_quality_report(result: dict, out_dir) -> dict:
    """Write results.json, quality.md and quality.png into out_dir; returns their paths."""
    from benchmarks.report import write_report

    public = {k: v for k, v in result.items() if not k.startswith("_")}
    return write_report(out_dir, ("results", "quality", "quality"), public, _markdown(result), _figure(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="shipped model name or folder (default: $REFOCUS_MODEL "
                        "or refocus-tiny)")
    parser.add_argument("--count", type=int, default=8, help="held-out stacks to evaluate (default 8)")
    parser.add_argument("--positions", type=int, nargs="+", default=[0, 4, 8], help="input positions k (0..8)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed; stack i uses seed + i")
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast")
    parser.add_argument("--out", type=Path, default=Path("out/quality"))
    args = parser.parse_args(argv)
    from runtime.errors import RefocusError

    try:
        result = evaluate_quality(args.model, args.count, args.positions, args.seed, args.mode)
    except RefocusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else list(argv)
    result["command"] = "python -m benchmarks.quality " + shlex.join(argv)  # what was actually run
    paths = write_quality_report(result, args.out)
    lj = result["large_jump"]
    print(f"large jumps: model {lj['model']:.3f} vs identity {lj['baseline']:.3f} "
          f"({'beats' if lj['model_beats_baseline'] else 'does NOT beat'} the baseline); "
          f"all cells: model {result['all_cells']['model']:.3f}; VAE floor {result['vae_roundtrip_mean']:.3f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
