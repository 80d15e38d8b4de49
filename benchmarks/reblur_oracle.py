"""What depth from focus can rank when a refocuser only re-blurs the photo (never sharpens past it).

For input position k and output frame j, the "re-blur oracle" takes, per pixel of true focus index d,
the true frame j where that frame is at least as defocused as the photo (|j - d| >= |k - d|), and the
photo itself elsewhere: every pixel gets the blur max(|j - d|, |k - d|). No detail is invented, only
blur added. Its depth-from-focus rank correlation, next to the true stacks', says how much of the
issue-23 depth bar a decoder can reach by re-blurring the photo correctly, and why the guided
decoder's photo re-blur bank (runtime/tiny_decoder._PhotoBlurs) exists. With `--sharpen SIGMA AMOUNT`
the pixels where frame j should be sharper than the photo get the photo unsharp-masked,
photo + AMOUNT * (photo - G(SIGMA) * photo), instead of the photo: what the bank's unsharp masks
(`photo_sharpen`) could add at most, with the same sharpening for every such frame. With `--graded`
the amount is AMOUNT per frame of focus the output frame is closer to the pixel than the photo,
AMOUNT x (|k - d| - |j - d|): the unsharp mask grows toward the frame focused on the pixel, so each
pixel's focus curve peaks where it should; what a decoder that knows each pixel's depth could reach.

    python -m benchmarks.reblur_oracle --count 8 --positions 0 4 8 --out benchmarks/results/reblur-oracle
    python -m benchmarks.reblur_oracle --count 8 --positions 0 4 8 --sharpen 1.0 2.0 --out benchmarks/results/reblur-oracle-sharpen
    python -m benchmarks.reblur_oracle --count 8 --positions 0 4 8 --sharpen 2.0 1.0 --graded --out benchmarks/results/reblur-oracle-graded
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.quality import _depth_from_focus, _depth_rank, _eval_stacks


def unsharp(image: torch.Tensor, sigma: float, amount: float) -> torch.Tensor:
    """[3, H, W] -> image + amount * (image - its Gaussian blur)."""
    from refocus_edge.dof.focus_measure import gaussian_blur

    return image + amount * (image - gaussian_blur(image, sigma))


def reblur_oracle(frames: torch.Tensor, index: np.ndarray, k: int, sharpen=None, graded: bool = False) -> torch.Tensor:
    """[9, 3, H, W] true stack, [H, W] true focus index, input k -> the oracle's [9, 3, H, W] stack;
    sharpen = (sigma, amount): the photo unsharp-masked where a frame should be sharper than it, by
    `amount`, or with `graded` by amount x (|k - d| - |j - d|) (frames closer to the pixel's focus)."""
    if graded and sharpen is None:
        raise ValueError("graded sharpening needs sharpen = (sigma, amount)")
    d = torch.as_tensor(index, dtype=frames.dtype)
    photo = frames[k]
    out = []
    for j in range(frames.shape[0]):
        more_blur = ((j - d).abs() >= (k - d).abs())[None]  # this frame blurs the pixel at least as much
        if sharpen is None:
            sharper = photo
        elif graded:
            gain = ((k - d).abs() - (j - d).abs()).clamp_min(0)[None]  # frames of focus gained over the photo
            sharper = photo + sharpen[1] * gain * (unsharp(photo, sharpen[0], 1.0) - photo)
        else:
            sharper = unsharp(photo, *sharpen)
        out.append(torch.where(more_blur, frames[j], sharper))
    return torch.stack(out)


def evaluate(count: int, positions, eval_set: str = "synthetic", size_hw=(128, 128), sharpen=None,
             graded: bool = False) -> dict:
    from refocus_edge.dof.depth import diopters_to_index

    data, names = _eval_stacks(eval_set, size_hw, count)
    oracle = np.zeros((count, len(positions)))
    truth = np.zeros(count)
    for i in range(count):
        item = data[i]
        gt, true_depth = item["frames"], item["depth"].numpy()
        truth[i] = _depth_rank(_depth_from_focus(gt), true_depth)
        index = diopters_to_index(true_depth)
        for r, k in enumerate(positions):
            oracle[i, r] = _depth_rank(_depth_from_focus(reblur_oracle(gt, index, k, sharpen, graded)),
                                        true_depth)
    return {"set": eval_set, "size_hw": list(size_hw), "stacks": names, "positions": list(positions),
            "sharpen_sigma_amount": list(sharpen) if sharpen else None, "graded": bool(graded),
            "depth_rank_reblur_oracle": float(oracle.mean()),
            "depth_rank_reblur_oracle_per_position": oracle.mean(0).tolist(),
            "depth_rank_ground_truth": float(truth.mean()),
            "per_stack_oracle": oracle.tolist(), "per_stack_ground_truth": truth.tolist()}


def main(argv=None) -> int:
    from refocus_edge.cli.arg_types import size_wxh

    parser = argparse.ArgumentParser(prog="python -m benchmarks.reblur_oracle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--positions", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--set", dest="eval_set", choices=("synthetic", "photos"), default="synthetic")
    parser.add_argument("--size", type=size_wxh, default=(128, 128), metavar="WxH")
    parser.add_argument("--sharpen", type=float, nargs=2, default=None, metavar=("SIGMA", "AMOUNT"),
                        help="unsharp-mask the photo where a frame should be sharper than it (default: keep the photo)")
    parser.add_argument("--graded", action="store_true",
                        help="with --sharpen: AMOUNT per frame of focus the output frame gains over the photo")
    parser.add_argument("--out", type=Path, default=Path("out/reblur-oracle"))
    args = parser.parse_args(argv)
    if args.sharpen and (args.sharpen[0] <= 0 or args.sharpen[1] < 0):
        parser.error(f"--sharpen needs SIGMA > 0 and AMOUNT >= 0, got {args.sharpen}")
    if args.graded and not args.sharpen:
        parser.error("--graded grades the unsharp mask of --sharpen SIGMA AMOUNT: give --sharpen too")
    res = evaluate(args.count, args.positions, args.eval_set, (args.size[1], args.size[0]), args.sharpen, args.graded)
    res["command"] = "python -m benchmarks.reblur_oracle " + shlex.join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    per_k = ", ".join(f"k={k}: {v:.3f}" for k, v in zip(res["positions"], res["depth_rank_reblur_oracle_per_position"]))
    kind = "re-blur oracle" + (f" ({'graded ' if args.graded else ''}unsharp {args.sharpen[1]:g} at sigma "
                               f"{args.sharpen[0]:g})" if args.sharpen else "")
    print(f"[{res['set']}] depth from focus rank: {kind} {res['depth_rank_reblur_oracle']:.3f} ({per_k}); "
          f"true stacks {res['depth_rank_ground_truth']:.3f}; wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
