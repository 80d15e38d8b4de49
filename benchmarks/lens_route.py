"""The lens route: a focus-depth head's estimate of each pixel's focus index, turned into a stack by the
thin-lens model (runtime/lens_stack.py), judged like a refocuser on the held-out stacks.

    python -m benchmarks.lens_route --head runs/depth-head/head.pt --count 8 --positions 0 4 8 \\
        [--set photos] [--amount 1.0] --out benchmarks/results/lens-route

No UNet and no decoder: the stack is the photo, re-blurred or unsharp-masked per pixel and frame
according to the head's focus-index probabilities. It says how far issue 23's depth bar is from a
refocuser that knows what the head knows, and what that costs in LPIPS. Reported as the quality
benchmark reports (benchmarks/quality.py): large-jump, own-frame and all-cell LPIPS (alex) against the
identity baseline, and depth from focus on the stacks rank-correlated with the true depth; besides, the
rank correlation of the head's own expected index (the depth the synthesis is given).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.quality import LARGE_JUMP, LPIPS_NET, _depth_from_focus, _depth_rank, _eval_stacks


@torch.no_grad()
def evaluate(head, count: int = 8, positions=(0, 4, 8), eval_set: str = "synthetic", size_hw=(128, 128),
             amount: float = 1.0, sharpen_sigma: float = 2.0, progress: bool = True, start: int = 0) -> dict:
    from tqdm.auto import tqdm

    from refocus_edge.focalstacks.lens import LensConfig
    from refocus_edge.runtime.lens_stack import LensStack
    from refocus_edge.runtime.metrics.lpips import LPIPS

    lens = LensConfig()
    # the very synthesis the guided decoder runs, with this head in it
    stack_maker = LensStack(lens.num_positions, amount=amount, sharpen_sigma=sharpen_sigma).eval()
    stack_maker.head = head
    data, names = _eval_stacks(eval_set, size_hw, count, start)
    lpips = LPIPS(LPIPS_NET)
    positions = [int(k) for k in positions]
    n = lens.num_positions
    model_d = np.zeros((count, len(positions), n))
    base_d = np.zeros_like(model_d)
    rank_stack = np.zeros((count, len(positions)))
    rank_head = np.zeros_like(rank_stack)
    start = time.perf_counter()
    bar = tqdm(total=count * len(positions), desc=f"lens route ({eval_set})", unit="run", disable=not progress)
    for i in range(count):
        item = data[i]
        gt, true_depth = item["frames"], item["depth"].numpy()
        gt_pm1 = gt * 2 - 1
        for r, k in enumerate(positions):
            photo = gt[k:k + 1] * 2 - 1
            offsets = (torch.arange(n, dtype=photo.dtype) - k) / (n - 1)
            step = stack_maker.step(photo)
            probs = stack_maker.probs(photo, offsets, step)
            expected = (probs * torch.arange(n, dtype=probs.dtype)[:, None, None]).sum(0)
            rank_head[i, r] = _depth_rank(expected.numpy(), true_depth)
            stack = (stack_maker.draw(photo, probs, offsets, step) + 1) / 2
            model_d[i, r] = lpips(stack * 2 - 1, gt_pm1).numpy()
            base_d[i, r] = lpips(gt_pm1[k:k + 1].expand_as(gt_pm1), gt_pm1).numpy()
            rank_stack[i, r] = _depth_rank(_depth_from_focus(stack), true_depth)
            bar.update()
    bar.close()
    model_t, base_t = model_d.mean(0), base_d.mean(0)
    cols = np.arange(n)[None, :]
    jump = np.abs(cols - np.array(positions)[:, None]) >= LARGE_JUMP
    own = cols == np.array(positions)[:, None]
    return {
        "benchmark": "lens_route", "set": eval_set, "count": count, "positions": positions, "stacks": names,
        "size": [size_hw[1], size_hw[0]], "amount": amount, "sharpen_sigma": sharpen_sigma,
        "step_px": stack_maker.step_fraction * size_hw[1],
        "lpips_net": LPIPS_NET, "wall_time_s": time.perf_counter() - start,
        "large_jump": {"model": float(model_t[jump].mean()), "baseline": float(base_t[jump].mean())},
        "own_frame": {"model": float(model_t[own].mean()), "baseline": float(base_t[own].mean())},
        "all_cells": {"model": float(model_t.mean()), "baseline": float(base_t.mean())},
        "depth_rank_stack": float(rank_stack.mean()), "depth_rank_stack_per_position": rank_stack.mean(0).tolist(),
        "depth_rank_head": float(rank_head.mean()), "depth_rank_head_per_position": rank_head.mean(0).tolist(),
        "model_table": model_t.tolist(), "baseline_table": base_t.tolist(),
        "per_stack": {"lpips": model_d.tolist(), "depth_rank_stack": rank_stack.tolist(),
                      "depth_rank_head": rank_head.tolist()},
    }


def markdown(res: dict, head_path: str) -> str:
    lj, own, allc = res["large_jump"], res["own_frame"], res["all_cells"]
    per = lambda key: " / ".join(f"{v:.3f}" for v in res[key])
    return "\n".join([
        f"# Lens route ({res['set']}, {res['size'][0]}x{res['size'][1]})", "",
        f"- command: `{res['command']}`",
        f"- head: `{head_path}`; synthesis: runtime/lens_stack.LensStack (as in the guided decoder), unsharp amount {res['amount']:g} per "
        f"frame of focus gained at sigma {res['sharpen_sigma']:g} px, blur step {res['step_px']:.2f} px per frame",
        f"- {res['count']} stacks, input positions {res['positions']}; wall time {res['wall_time_s']:.1f} s", "",
        "| | lens route | identity baseline |", "|---|---|---|",
        f"| large jumps LPIPS | {lj['model']:.3f} | {lj['baseline']:.3f} |",
        f"| own frame LPIPS | {own['model']:.3f} | {own['baseline']:.3f} |",
        f"| all cells LPIPS | {allc['model']:.3f} | {allc['baseline']:.3f} |",
        f"| depth from focus on the stacks, Spearman vs true depth | {res['depth_rank_stack']:.3f} "
        f"({per('depth_rank_stack_per_position')}) | 0 |",
        f"| the head's expected focus index, Spearman vs true depth | {res['depth_rank_head']:.3f} "
        f"({per('depth_rank_head_per_position')}) | |", ""])


def main(argv=None) -> int:
    from refocus_edge.cli.arg_types import size_wxh

    p = argparse.ArgumentParser(prog="python -m benchmarks.lens_route", description=__doc__.split("\n\n")[0])
    p.add_argument("--head", type=Path, required=True, help="weights written by `python -m training.depth_head`")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--positions", type=int, nargs="+", default=[0, 4, 8])
    p.add_argument("--set", dest="eval_set", choices=("synthetic", "photos"), default="synthetic")
    p.add_argument("--size", type=size_wxh, default=(128, 128), metavar="WxH")
    p.add_argument("--amount", type=float, default=1.0, help="unsharp amount per frame of focus gained")
    p.add_argument("--sharpen-sigma", type=float, default=2.0)
    p.add_argument("--start", type=int, default=0, help="synthetic set: first held-out stack (validation: 64)")
    p.add_argument("--out", type=Path, default=Path("out/lens-route"))
    a = p.parse_args(argv)
    if not a.head.is_file() or not a.head.with_suffix(".json").is_file():
        p.error(f"--head {a.head}: needs the weights and their {a.head.with_suffix('.json').name} "
                "(written by `python -m training.depth_head`)")
    if any(not 0 <= k < 9 for k in a.positions):
        p.error(f"--positions must be in 0..8, got {a.positions}")
    from training.depth_head import load_head

    res = evaluate(load_head(a.head), a.count, a.positions, a.eval_set, (a.size[1], a.size[0]), a.amount,
                   a.sharpen_sigma, start=a.start)
    res["command"] = "python -m benchmarks.lens_route " + shlex.join(sys.argv[1:] if argv is None else argv)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=1))
    (a.out / "lens_route.md").write_text(markdown(res, str(a.head)))
    print(markdown(res, str(a.head)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
