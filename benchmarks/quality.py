"""Quality benchmark: LPIPS and depth from focus of generated focal stacks on held-out stacks.

For each of the first N stacks of an evaluation set and each input position k, the refocuser is run
on ground-truth frame k and every output frame j is compared with ground-truth frame j (LPIPS alex,
inputs in [-1, 1]). Rows = input position, columns = F1..F9, mean over stacks: the paper's 9x9
evaluation grid, restricted to the positions asked for. Two sets (``--set``):

  * synthetic (default): the fixed held-out split of the procedural scenes (focalstacks.synthetic),
    the training distribution with scene seeds never trained on;
  * photos: whole photographs that no training scene uses, with measured or plausible depth, rendered
    by the same lens model and renderer (focalstacks.photo_stacks).

Summaries beside the grid:

  * large jumps (|j - k| >= 4): where generative refocusing is meant to win; the project's quality
    bar is that the model beats the identity baseline there;
  * own frame (j = k): how well the model reproduces the frame it was given;
  * identity baseline: frame k copied to all 9 outputs, perfect at j = k and degrading with the jump;
  * VAE round trip: encode + decode of the ground truth (decoded 8 + 1 like the sampler), the floor
    any output of this autoencoder can reach, averaged over the same cells;
  * depth from focus: refocus_edge.dof's depth from focus (analyse_stack) run on the generated stack,
    Spearman rank correlation of its depth with the set's true depth over the pixels (sign such that a
    correct depth ordering gives +1), mean over stacks and input positions; the same for the ground-truth
    stack is the upper reference (what depth from focus recovers from a perfect stack). A stack that
    does not change focus (the identity baseline) gives a constant depth map: correlation 0.

    python -m benchmarks.quality --model refocus-tiny --count 8 --positions 0 4 8 \
        --seed 0 --mode fast --set synthetic --out out/quality
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from refocus_edge.bench.models import working_size
from refocus_edge.runtime.loading import Refocuser, load_refocuser
from refocus_edge.runtime.run_model import run_decoder

LARGE_JUMP = 4  # |j - k| at or above which a cell counts as a large focal jump
LPIPS_NET = "alex"
EVAL_SETS = ("synthetic", "photos")


def _u8(frames: torch.Tensor) -> np.ndarray:
    """[F, 3, H, W] in [0, 1] -> [F, H, W, 3] uint8 (for the figure only)."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _autoencoder(refocuser):
    """(VAE, decode chunks) of the autoencoder floor: the model's own VAE, encoder and temporal decoder
    in the model's chunks. A photo-guided decoder is not an autoencoder (it needs a photo, which a
    round trip of the true frames has not): its wrapper's full VAE and the model folder's chunks."""
    if getattr(refocuser.vae, "takes_guide", False):
        from refocus_edge.runtime.model_config import load_model_config

        return refocuser.vae.vae, load_model_config(refocuser.source).decode_chunk_sizes
    return refocuser.vae, refocuser.config.decode_chunk_sizes


def _vae_roundtrip(autoencoder, gt_pm1: torch.Tensor) -> torch.Tensor:
    """Encode (.mode()) and decode the 9 GT frames exactly as the sampler decodes: -> [9, 3, H, W] in [0, 1]."""
    from refocus_edge.runtime.conditioning import component_dtype
    from refocus_edge.runtime.sampler import decode_latents

    vae, chunks = autoencoder
    dtype = component_dtype(vae)
    latents = vae.encode(gt_pm1.to(dtype)).latent_dist.mode().float()
    # decode_latents divides by the scaling factor (diffusion latents are scaled), so scale here.
    return decode_latents(vae, latents[None] * vae.config.scaling_factor, chunks)


def _ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of a 1-D array, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first index of each tie group
    counts = np.diff(np.r_[starts, values.size])
    group = np.repeat(np.arange(starts.size), counts)
    ranks = np.empty(values.size)
    ranks[order] = (starts + (counts - 1) / 2.0)[group]
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation of two arrays of equal size (flattened; ties take average ranks).

    The Pearson correlation of the ranks, in [-1, 1]. 0.0 when either input is constant (no ordering
    to agree with). Raises ValueError for different sizes, fewer than 2 values or non-finite values.
    """
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise ValueError(f"need two arrays of one size >= 2, got {x.size} and {y.size} values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("spearman needs finite values")
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else 0.0


def _depth_from_focus(frames: torch.Tensor) -> np.ndarray:
    """Depth from focus (refocus_edge.dof.analysis.analyse_stack) of a [9, 3, H, W] stack: [H, W] focus index, 0 = near."""
    from refocus_edge.dof.analysis import analyse_stack

    return analyse_stack(frames.float().clamp(0, 1)).depth.numpy()


def _depth_rank(index: np.ndarray, true_diopters) -> float:
    """Spearman correlation of a focus-index depth map with the true depth in diopters, +1 when ordered alike.

    Index 0 is the near plane and near means many diopters: diopters are a decreasing affine function of
    the index (refocus_edge.dof.depth.index_to_diopters), so they rank exactly as the negated index."""
    return spearman(-index, np.asarray(true_diopters))


class _From(torch.utils.data.Dataset):
    """Items start, start + 1, ... of a dataset."""

    def __init__(self, data, start: int):
        self.data, self.start = data, int(start)

    def __len__(self) -> int:
        return len(self.data) - self.start

    def __getitem__(self, i: int):
        return self.data[self.start + i]


def _eval_stacks(eval_set: str, size_hw: tuple[int, int], count: int, start: int = 0):
    """(dataset, names of its `count` stacks from `start`) of an evaluation set; raises on a bad set,
    count or start. A start past the reported tables' stacks (synthetic: 64; photos: 8) gives stacks
    those tables never use: a validation set to choose settings on."""
    from refocus_edge.focalstacks.photo_stacks import PhotoFocalStacks, photo_stack_specs
    from refocus_edge.focalstacks.synthetic import SYNTHETIC_SPLITS, SyntheticFocalStacks
    from refocus_edge.runtime.errors import InvalidArgumentError

    if eval_set not in EVAL_SETS:
        raise InvalidArgumentError(f"set must be one of {', '.join(EVAL_SETS)}, got {eval_set!r}")
    heldout, specs = SYNTHETIC_SPLITS["heldout"], photo_stack_specs()
    total = heldout.count if eval_set == "synthetic" else len(specs)
    if not 1 <= count <= total:
        raise InvalidArgumentError(f"count must be in 1..{total} for the {eval_set} set, got {count}")
    if not 0 <= start <= total - count:
        raise InvalidArgumentError(f"start must be in 0..{total - count} for {count} stacks of the {eval_set} set, "
                                   f"got {start}")
    if eval_set == "synthetic":
        names = [f"heldout/{heldout.seed(start + i)}" for i in range(count)]
        return _From(SyntheticFocalStacks("heldout", size=size_hw, length=start + count), start), names
    return (_From(PhotoFocalStacks(size=size_hw, length=start + count), start),
            [spec.name for spec in specs[start:start + count]])


@torch.no_grad()
def evaluate_quality(model, count: int = 8, positions=(0, 4, 8), seed: int = 0, mode: str = "fast",
                     progress: bool = True, eval_set: str = "synthetic", size: tuple[int, int] | None = None,
                     decoder: str | None = None, start: int = 0) -> dict:
    """LPIPS tables (model, identity baseline, VAE floor) and depth-from-focus rank correlations
    (model's stacks, ground-truth stacks) over the first `count` stacks of `eval_set`, rendered at
    `size` (W, H; default: the model's working size). The lens blur scales with the width, so a
    larger size is a photo of the same scene with proportionally larger blur in pixels."""
    from tqdm.auto import tqdm

    from refocus_edge.runtime.errors import InvalidArgumentError
    from refocus_edge.runtime.metrics.lpips import LPIPS
    from refocus_edge.runtime.run_model import RunModel
    from refocus_edge.runtime.sampler import SamplerConfig

    if decoder is None and not isinstance(model, Refocuser):
        decoder = run_decoder(mode)  # as `refocus run` decodes in this mode
    refocuser = model if isinstance(model, Refocuser) else load_refocuser(model, decoder=decoder)
    autoencoder = _autoencoder(refocuser)
    frames_n = refocuser.config.num_frames
    positions = [int(k) for k in positions]
    if not positions or any(not 0 <= k < frames_n for k in positions):
        raise InvalidArgumentError(f"positions must be in 0..{frames_n - 1}, got {positions}")
    if mode not in ("fast", "reference"):
        raise InvalidArgumentError(f"mode must be 'fast' or 'reference', got {mode!r}")
    count = int(count)
    w, h = working_size(refocuser) if size is None else (int(size[0]), int(size[1]))
    factor = refocuser.vae_scale_factor
    if w % factor or h % factor or w < factor or h < factor:
        raise InvalidArgumentError(f"size {w}x{h}: sides must be positive multiples of {factor}")
    data, names = _eval_stacks(eval_set, (h, w), count, start)
    lpips = LPIPS(LPIPS_NET)
    runner = RunModel(refocuser, thin=False)
    model_d = np.zeros((count, len(positions), frames_n))
    base_d = np.zeros_like(model_d)
    vae_d = np.zeros((count, frames_n))
    rank_model = np.zeros((count, len(positions)))
    rank_gt = np.zeros(count)
    seeds = []
    # Figure examples: stack 0 at the two ends of the stack (or the ends of what was asked).
    shown = [k for k in (0, frames_n - 1) if k in positions] or [positions[0], positions[-1]]
    examples, depths, sampler_s, last = {}, {}, [], None

    start = time.perf_counter()
    bar = tqdm(total=count * len(positions), desc=f"quality ({eval_set})", unit="run", disable=not progress)
    for i in range(count):
        item = data[i]
        seeds.append(int(item["seed"]))
        gt, true_depth = item["frames"], item["depth"].numpy()  # [9, 3, H, W] in [0, 1]; [H, W] diopters
        gt_pm1 = gt * 2 - 1
        vae_d[i] = lpips(_vae_roundtrip(autoencoder, gt_pm1) * 2 - 1, gt_pm1).numpy()
        gt_index = _depth_from_focus(gt)
        rank_gt[i] = _depth_rank(gt_index, true_depth)
        if i == 0:
            from refocus_edge.dof.depth import diopters_to_index

            depths.update(true=diopters_to_index(true_depth), gt=gt_index)
        for r, k in enumerate(positions):
            cfg = SamplerConfig(position=k, seed=seed + i, mode=mode, progress=False)
            # As `refocus run` samples (RunModel: a model's generate_scale included), frames back as torch.
            last = runner.sample(np.ascontiguousarray(gt[k].permute(1, 2, 0).numpy()), cfg)
            last.frames = torch.from_numpy(last.frames)
            model_d[i, r] = lpips(last.frames * 2 - 1, gt_pm1).numpy()
            # The input frame is bit-identical to GT frame k, so the j = k cell is exactly 0.
            base_d[i, r] = lpips(gt_pm1[k:k + 1].expand_as(gt_pm1), gt_pm1).numpy()
            model_index = _depth_from_focus(last.frames)
            rank_model[i, r] = _depth_rank(model_index, true_depth)
            sampler_s.append(last.timings["total"])
            if i == 0 and k in shown:
                examples[k] = {"gt": _u8(gt), "model": _u8(last.frames)}
                depths[k] = model_index
            bar.set_postfix(stack=i, k=k, lpips=f"{model_d[i, r].mean():.3f}", rho=f"{rank_model[i, r]:.2f}")
            bar.update()
    bar.close()
    wall = time.perf_counter() - start

    # How the model was asked for (a shipped name stays a name); a loaded model by its folder.
    name = str(model) if isinstance(model, (str, Path)) else str(refocuser.source)
    model_t, base_t, vae_t = model_d.mean(0), base_d.mean(0), vae_d.mean(0)
    cols = np.arange(frames_n)[None, :]
    jump = np.abs(cols - np.array(positions)[:, None]) >= LARGE_JUMP
    own = cols == np.array(positions)[:, None]
    vae_cells = np.broadcast_to(vae_t, model_t.shape)  # the floor of cell (k, j) is frame j's round trip

    def cells(mask) -> dict:
        return {"model": float(model_t[mask].mean()), "baseline": float(base_t[mask].mean()),
                "vae_roundtrip": float(vae_cells[mask].mean())}

    large, own_frame = cells(jump), cells(own)
    return {
        "benchmark": "quality",
        "model": name,
        "model_path": str(refocuser.source),
        "decoder": refocuser.config.decoder,
        "set": eval_set,
        "mode": mode,
        "count": count,
        "positions": positions,
        "seed": int(seed),
        "scene_seeds": [seeds[0], seeds[-1]],
        "stacks": names,
        "size": [w, h],
        "num_inference_steps": last.num_inference_steps,
        "guidance_scale": last.guidance_scale,
        "unet_calls_per_stack": last.unet_calls,
        "lpips_net": LPIPS_NET,
        "model_table": model_t.tolist(),
        "baseline_table": base_t.tolist(),
        "vae_roundtrip": vae_t.tolist(),
        "vae_roundtrip_mean": float(vae_d.mean()),
        "large_jump": {"min_jump": LARGE_JUMP, "cells": int(jump.sum()), **large,
                       "model_beats_baseline": large["model"] < large["baseline"]},
        "own_frame": {"cells": int(own.sum()), **own_frame},
        "all_cells": {"model": float(model_t.mean()), "baseline": float(base_t.mean()),
                      "vae_roundtrip": float(vae_cells.mean())},
        "depth_rank": {"metric": "Spearman rank correlation, depth from focus vs true depth (+1 = same order)",
                       "model": float(rank_model.mean()), "ground_truth": float(rank_gt.mean()),
                       "model_per_position": rank_model.mean(0).tolist()},
        "per_stack": {"model": model_d.tolist(), "baseline": base_d.tolist(), "vae_roundtrip": vae_d.tolist(),
                      "depth_rank_model": rank_model.tolist(), "depth_rank_ground_truth": rank_gt.tolist()},
        "sampler_seconds_mean": float(np.mean(sampler_s)),
        "wall_time_s": wall,
        "command": _command(name, count, positions, seed, mode, eval_set),
        "_examples": examples,  # uint8 frames for the figure; "_" keys stay out of results.json
        "_depths": depths,  # stack 0's depth maps in focus-index units: true, from GT, from the model per k
    }


def _command(model, count, positions, seed, mode, eval_set="synthetic") -> str:
    args = ["--model", model, "--count", str(count), "--positions", *map(str, positions),
            "--seed", str(seed), "--mode", mode, "--set", eval_set]
    return "python -m benchmarks.quality " + shlex.join(args)


# --------------------------------------------------------------------------- report

def _md_rows(table, positions) -> list[str]:
    n = len(table[0])
    lines = ["| input | " + " | ".join(f"F{j + 1}" for j in range(n)) + " |", "|---" * (n + 1) + "|"]
    for k, row in zip(positions, table):
        lines.append(f"| F{k + 1} (k={k}) | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return lines


def _stacks_line(res: dict) -> str:
    """Which stacks were evaluated."""
    if res["set"] == "synthetic":
        seeds = res["scene_seeds"]
        return f"held-out synthetic stacks: {res['count']} (scene seeds {seeds[0]}..{seeds[1]})"
    return f"photo stacks (focalstacks.photo_stacks, never trained on): {res['count']} ({', '.join(res['stacks'])})"


def _summary_rows(res: dict) -> list[str]:
    """The summary table: LPIPS over the large-jump, own-frame and all cells, and the depth-from-focus rank."""
    lj, own, allc, dr = res["large_jump"], res["own_frame"], res["all_cells"], res["depth_rank"]
    return [
        "| | model | identity baseline | VAE round trip (floor) | ground-truth stack |", "|---|---|---|---|---|",
        *(f"| {label} LPIPS | {c['model']:.3f} | {c['baseline']:.3f} | {c['vae_roundtrip']:.3f} | |"
          for label, c in ((f"large jumps ({lj['cells']} cells)", lj), (f"own frame j = k ({own['cells']} cells)", own),
                           ("all cells", allc))),
        f"| depth from focus, Spearman vs true depth | {dr['model']:.3f} | 0 (constant depth) | "
        f"| {dr['ground_truth']:.3f} |",
    ]


def _markdown(res: dict) -> str:
    lj = res["large_jump"]
    verdict = "beats" if lj["model_beats_baseline"] else "does NOT beat"
    w, h = res["size"]
    dr = res["depth_rank"]
    lines = [
        f"# Quality: {Path(res['model_path']).name}", "",
        f"- command: `{res['command']}`",
        f"- model: `{res['model_path']}`, {res.get('decoder', 'full')} decoder",
        f"- {_stacks_line(res)}, {w}x{h}, sampler seed {res['seed']} + stack index",
        f"- sampler: mode {res['mode']}, {res['num_inference_steps']} steps, guidance {res['guidance_scale']},"
        f" {res['unet_calls_per_stack']} UNet calls per stack, {res['sampler_seconds_mean']:.2f} s per stack",
        f"- metrics: LPIPS {res['lpips_net']} (lower is better); depth from focus (refocus_edge.dof.analysis) rank"
        f"-correlated with the true depth (higher is better, 1 = same order); wall time {res['wall_time_s']:.1f} s", "",
        f"## Large focal jumps (|j - k| >= {lj['min_jump']}, {lj['cells']} cells)", "",
        *_summary_rows(res), "",
        f"The model **{verdict}** the identity baseline on large jumps (the project's quality bar).",
        f"Depth from focus on the model's stacks orders the scene's depth with rank correlation {dr['model']:.3f}"
        f" (per input position: {', '.join(f'{v:.3f}' for v in dr['model_per_position'])}); on the ground-truth"
        f" stacks {dr['ground_truth']:.3f}, the reference: what depth from focus recovers from a perfect stack.", "",
        "## Model", "", *_md_rows(res["model_table"], res["positions"]), "",
        "## Identity baseline (input frame copied to every output)", "",
        *_md_rows(res["baseline_table"], res["positions"]), "",
        "## VAE round trip (autoencoder floor, encode + decode 8 + 1 of the ground truth)", "",
        "| | " + " | ".join(f"F{j + 1}" for j in range(len(res["vae_roundtrip"]))) + " |",
        "|---" * (len(res["vae_roundtrip"]) + 1) + "|",
        "| GT | " + " | ".join(f"{v:.3f}" for v in res["vae_roundtrip"]) + " |", "",
        f"Mean {res['vae_roundtrip_mean']:.3f}. Figure: `quality.png` (stack 0: ground truth, model, baseline; "
        "its depth maps; then the two tables as heat maps).", "",
    ]
    return "\n".join(lines)


def _figure(res: dict):
    """Example stacks (GT / model / baseline rows), their depth maps, then heat maps of both tables, with Pillow."""
    from PIL import Image, ImageDraw

    from refocus_edge.dof.colormap import colorize_depth

    examples = res.get("_examples") or {}
    depths = res.get("_depths") or {}
    n = len(res["model_table"][0])
    w, h = res["size"]
    th = 96  # tile height; tiny working sizes are scaled up so that they can be seen
    tw = max(1, round(th * w / h))
    label_w, line, cell_h = 170, 16, 20
    rows = []
    for k, ex in examples.items():
        # (label, frames, frame to outline: the input frame in the GT row, tile captions)
        rows += [(f"k={k} ground truth", list(ex["gt"]), k, None), (f"k={k} model", list(ex["model"]), None, None),
                 (f"k={k} identity", [ex["gt"][k]] * n, None, None)]
    if "true" in depths:
        # Depth maps of stack 0 in focus-index units, near (0) yellow .. far (8) blue, as `refocus run` draws them.
        shown = [("true", depths["true"]), ("from GT", depths["gt"])] + \
            [(f"model k={k}", depths[k]) for k in examples if k in depths]
        rows.append(("depth (true, from focus)", [colorize_depth(d, n) for _, d in shown], None,
                     [c for c, _ in shown]))
    tables = [("model LPIPS", res["model_table"]), ("identity baseline LPIPS", res["baseline_table"])]
    table_h = sum(line + cell_h * len(t) for _, t in tables)
    height = 2 * line + th * len(rows) + line + table_h + 8
    img = Image.new("RGB", (label_w + tw * n, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), f"{Path(res['model_path']).name}  set={res['set']}  mode={res['mode']}  stacks={res['count']}",
              fill="black")
    y = 2 * line
    for j in range(n):
        draw.text((label_w + j * tw + tw // 2 - 6, line), f"F{j + 1}", fill="black")
    for label, frames, mark, captions in rows:
        draw.text((4, y + th // 2 - 6), label, fill="black")
        for j, frame in enumerate(frames):
            img.paste(Image.fromarray(frame).resize((tw, th), Image.NEAREST), (label_w + j * tw, y))
            if captions:
                draw.rectangle([label_w + j * tw, y, label_w + j * tw + 6 * len(captions[j]) + 4, y + 12], fill="white")
                draw.text((label_w + j * tw + 2, y), captions[j], fill="black")
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
    from refocus_edge.bench.report import write_report

    public = {k: v for k, v in result.items() if not k.startswith("_")}
    return write_report(out_dir, ("results", "quality", "quality"), public, _markdown(result), _figure(result))


def main(argv=None) -> int:
    from refocus_edge.cli.arg_types import size_wxh

    from refocus_edge.focalstacks.photo_stacks import EVAL_PHOTOS
    from refocus_edge.focalstacks.synthetic import SYNTHETIC_SPLITS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="shipped model name or folder (default: $REFOCUS_MODEL "
                        "or refocus-tiny)")
    parser.add_argument("--count", type=int, default=8, help="stacks of the set to evaluate (default 8; synthetic: "
                        f"up to {SYNTHETIC_SPLITS['heldout'].count}, photos: up to {sum(EVAL_PHOTOS.values())})")
    parser.add_argument("--positions", type=int, nargs="+", default=[0, 4, 8], help="input positions k (0..8)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed; stack i uses seed + i")
    parser.add_argument("--mode", choices=("fast", "reference"), default="fast")
    parser.add_argument("--set", dest="eval_set", choices=EVAL_SETS, default="synthetic",
                        help="synthetic: held-out procedural scenes (default); photos: whole photographs never "
                        "trained on (focalstacks.photo_stacks)")
    parser.add_argument("--size", type=size_wxh, default=None, metavar="WxH",
                        help="evaluation size (default: the model's working size, 128x128 for refocus-tiny*)")
    parser.add_argument("--decoder", choices=("full", "tiny", "guided", "auto"), default=None,
                        help="the model folder's decoder (default: as `refocus run`: its gated photo-guided "
                        "decoder where it has one, else the full one; the full one in reference mode)")
    parser.add_argument("--start", type=int, default=0,
                        help="begin at this stack of the set (default 0); past the reported tables' first 8 "
                        "(synthetic: 64, photos: 8) it gives stacks they never use, to choose settings on")
    parser.add_argument("--out", type=Path, default=Path("out/quality"))
    args = parser.parse_args(argv)
    from refocus_edge.runtime.errors import RefocusError

    try:
        result = evaluate_quality(args.model, args.count, args.positions, args.seed, args.mode,
                                  eval_set=args.eval_set, size=args.size, decoder=args.decoder, start=args.start)
    except RefocusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else list(argv)
    result["command"] = "python -m benchmarks.quality " + shlex.join(argv)  # what was actually run
    paths = write_quality_report(result, args.out)
    lj, own, dr = result["large_jump"], result["own_frame"], result["depth_rank"]
    print(f"[{result['set']}] large jumps: model {lj['model']:.3f} vs identity {lj['baseline']:.3f} "
          f"({'beats' if lj['model_beats_baseline'] else 'does NOT beat'} the baseline, VAE floor "
          f"{lj['vae_roundtrip']:.3f}); own frame: model {own['model']:.3f} (VAE floor {own['vae_roundtrip']:.3f}); "
          f"all cells: model {result['all_cells']['model']:.3f}; VAE floor {result['vae_roundtrip_mean']:.3f}; "
          f"depth-from-focus rank corr.: model {dr['model']:.3f} vs ground truth {dr['ground_truth']:.3f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
