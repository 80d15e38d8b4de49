"""DOF analysis benchmark: depth from focus and all-in-focus fusion on held-out synthetic focal stacks.

For each of the first N stacks of the fixed held-out split (ground-truth renders, no refocuser involved)
at 128x128:

  * depth from focus (refocus_edge.dof.depth) against the rendered scene's true depth, converted to focus-index
    units with the project's lens (frames linear in diopters, 20 D .. 0 D): mean absolute error in index
    units and diopters for the raw index, for the edge-aware filled map, and for the raw index on
    confident pixels only; the fraction of pixels within half a frame;
  * the all-in-focus fusion (refocus_edge.dof.all_in_focus) against the scene's true all-in-focus composite
    (focalstacks.render.composite_sharp of its layers): LPIPS (alex; lower is better), next to the best
    single frame of the stack (oracle pick per stack) as the baseline a fusion has to beat;
  * time per stack (fusion alone; fusion + depth + fill) at 128x128 and at 512x512.

    python -m benchmarks.dof_analysis --count 8 --out benchmarks/results/dof
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

SIZE = 128
TIMING_SIZES = (128, 512)
CONFIDENT = 0.5  # confidence threshold of the "confident pixels" rows
WITHIN = 0.5  # error threshold (focus-index units) of the "fraction within" rows
LPIPS_NET = "alex"


def _stack(split_index: int, size: int):
    """(frames [9,3,H,W] in [0,1], true depth [H,W] diopters, true all-in-focus [3,H,W]) of a held-out item."""
    from refocus_edge.focalstacks.render import composite_sharp
    from refocus_edge.focalstacks.scenes import make_scene
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks, split_seed

    item = SyntheticFocalStacks("heldout", size=(size, size), length=split_index + 1)[split_index]
    scene = make_scene(split_seed("heldout", split_index), (size, size))
    # The dataset item and the scene come from the same seed; the depth check guards against the two
    # drifting apart (then the true all-in-focus would belong to another scene).
    if not np.allclose(item["depth"].numpy(), scene.depth_diopters):
        raise RuntimeError(f"held-out item {split_index}: dataset depth differs from make_scene depth")
    aif = torch.from_numpy(np.ascontiguousarray(composite_sharp(scene.layers).transpose(2, 0, 1)))
    return item["frames"], item["depth"], aif


def _time(fn, repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs after one warm-up run."""
    from refocus_edge.bench.timing import timed

    return timed(fn, repeats, warmup=1)[0]["median_s"]


@torch.no_grad()
def evaluate(count: int = 8, timing_repeats: int = 3, timing_sizes=TIMING_SIZES, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from refocus_edge.focalstacks.lens import LensConfig
    from refocus_edge.focalstacks.synthetic import SYNTHETIC_SPLITS
    from refocus_edge.dof.all_in_focus import AllInFocusConfig, all_in_focus
    from refocus_edge.dof.depth import DepthConfig, depth_from_focus, diopters_to_index
    from refocus_edge.runtime.metrics.lpips import LPIPS

    heldout = SYNTHETIC_SPLITS["heldout"]
    if not 1 <= int(count) <= heldout.count:
        raise ValueError(f"count must be in 1..{heldout.count}, got {count}")
    count = int(count)
    lens = LensConfig()
    diopters_per_index = lens.diopter_range / (lens.num_positions - 1)
    aif_cfg, depth_cfg = AllInFocusConfig(), DepthConfig()
    lpips = LPIPS(LPIPS_NET)

    rows, examples = [], []
    start = time.perf_counter()
    for i in tqdm(range(count), desc="dof", unit="stack", disable=not progress):
        frames, depth_d, true_aif = _stack(i, SIZE)
        res = depth_from_focus(frames, depth_cfg)
        true_idx = diopters_to_index(depth_d, lens.near_diopters, lens.far_diopters, lens.num_positions)
        err = (res.index - true_idx).abs()
        err_fill = (res.filled - true_idx).abs()
        conf = res.confidence >= CONFIDENT
        n_conf = int(conf.sum())
        pm1 = lambda x: x * 2 - 1  # noqa: E731  LPIPS takes [-1, 1]
        ours = float(lpips(pm1(res.aif.image[None]), pm1(true_aif[None]))[0])
        per_frame = lpips(pm1(frames), pm1(true_aif[None].expand_as(frames))).tolist()
        best = int(np.argmin(per_frame))
        rows.append({
            "split_index": i,
            "seed": heldout.seed(i),
            "index_mae": float(err.mean()),
            "index_mae_filled": float(err_fill.mean()),
            "index_mae_confident": float(err[conf].mean()) if n_conf else None,
            "confident_fraction": n_conf / err.numel(),
            "within_half_frame": float((err < WITHIN).float().mean()),
            "within_half_frame_filled": float((err_fill < WITHIN).float().mean()),
            "within_half_frame_confident": float((err[conf] < WITHIN).float().mean()) if n_conf else None,
            "lpips_aif": ours,
            "lpips_best_frame": per_frame[best],
            "best_frame": best,
            "lpips_per_frame": per_frame,
        })
        if i < 3:
            examples.append({"frames": frames, "true_aif": true_aif, "aif": res.aif.image, "true_index": true_idx,
                             "index": res.index, "filled": res.filled, "confidence": res.confidence,
                             "best_frame": best})
    eval_wall = time.perf_counter() - start

    def mean(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    # Confident-pixel errors pooled over all stacks weight every confident pixel equally (a stack with
    # few confident pixels should not count as much as one that is confident almost everywhere).
    with_conf = [r for r in rows if r["index_mae_confident"] is not None]
    pooled_num = sum(r["index_mae_confident"] * r["confident_fraction"] for r in with_conf)
    pooled_den = sum(r["confident_fraction"] for r in with_conf)
    depth = {
        "index_mae": mean("index_mae"),
        "index_mae_filled": mean("index_mae_filled"),
        "index_mae_confident": pooled_num / pooled_den if pooled_den else None,
        "confident_fraction": mean("confident_fraction"),
        "within_half_frame": mean("within_half_frame"),
        "within_half_frame_filled": mean("within_half_frame_filled"),
        "within_half_frame_confident": mean("within_half_frame_confident"),
    }
    for key in ("index_mae", "index_mae_filled", "index_mae_confident"):
        depth[key.replace("index", "diopter")] = None if depth[key] is None else depth[key] * diopters_per_index
    aif = {
        "lpips": mean("lpips_aif"),
        "lpips_best_frame": mean("lpips_best_frame"),
        "stacks_where_fusion_beats_best_frame": sum(r["lpips_aif"] < r["lpips_best_frame"] for r in rows),
    }

    timing = {"threads": torch.get_num_threads(), "repeats": timing_repeats, "sizes": [int(v) for v in timing_sizes]}
    for size in timing_sizes:
        frames, _, _ = _stack(0, size)
        fused = all_in_focus(frames, aif_cfg)
        timing[f"all_in_focus_s_{size}"] = _time(lambda: all_in_focus(frames, aif_cfg), timing_repeats)
        timing[f"depth_only_s_{size}"] = _time(lambda: depth_from_focus(frames, depth_cfg, aif=fused), timing_repeats)
        timing[f"total_s_{size}"] = _time(lambda: depth_from_focus(frames, depth_cfg), timing_repeats)

    return {
        "benchmark": "dof_analysis",
        "count": count,
        "size": [SIZE, SIZE],
        "scene_seeds": [heldout.seed(0), heldout.seed(count - 1)],
        "lens": {"near_diopters": lens.near_diopters, "far_diopters": lens.far_diopters,
                 "num_positions": lens.num_positions, "diopters_per_index": diopters_per_index},
        "confident_threshold": CONFIDENT,
        "within_threshold_index": WITHIN,
        "lpips_net": LPIPS_NET,
        "all_in_focus_config": {k: getattr(aif_cfg, k) for k in aif_cfg.__dataclass_fields__},
        "depth_config": {k: getattr(depth_cfg, k) for k in depth_cfg.__dataclass_fields__ if k != "aif"},
        "depth": depth,
        "all_in_focus": aif,
        "timing": timing,
        "per_stack": rows,
        "eval_wall_s": eval_wall,
        "command": f"python -m benchmarks.dof_analysis --count {count}",
        "_examples": examples,  # tensors for the figure; "_" keys stay out of the JSON
    }


# --------------------------------------------------------------------------- report

def _fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _markdown(res: dict) -> str:
    d, a, t = res["depth"], res["all_in_focus"], res["timing"]
    lines = [
        "# DOF analysis: depth from focus and all-in-focus fusion", "",
        f"- command: `{res['command']}`",
        f"- held-out synthetic stacks: {res['count']} (scene seeds {res['scene_seeds'][0]}..{res['scene_seeds'][1]}),"
        f" {res['size'][0]}x{res['size'][1]}, ground-truth renders (9 frames, 20 D .. 0 D,"
        f" {res['lens']['diopters_per_index']:.2f} D per frame)",
        f"- confident pixels: confidence >= {res['confident_threshold']}; LPIPS {res['lpips_net']} (lower is better)",
        "", "## Depth from focus", "",
        "| map | MAE (frames) | MAE (diopters) | error < 0.5 frame |", "|---|---|---|---|",
        f"| raw index, all pixels | {_fmt(d['index_mae'])} | {_fmt(d['diopter_mae'])} |"
        f" {_fmt(d['within_half_frame'])} |",
        f"| filled, all pixels | {_fmt(d['index_mae_filled'])} | {_fmt(d['diopter_mae_filled'])} |"
        f" {_fmt(d['within_half_frame_filled'])} |",
        f"| raw index, confident pixels ({100 * d['confident_fraction']:.1f}% of pixels) |"
        f" {_fmt(d['index_mae_confident'])} | {_fmt(d['diopter_mae_confident'])} |"
        f" {_fmt(d['within_half_frame_confident'])} |",
        "", "## All-in-focus", "",
        "| image | LPIPS vs true all-in-focus |", "|---|---|",
        f"| our fusion | {_fmt(a['lpips'], 4)} |",
        f"| best single frame (oracle pick per stack) | {_fmt(a['lpips_best_frame'], 4)} |", "",
        f"The fusion beats the best single frame on {a['stacks_where_fusion_beats_best_frame']} of"
        f" {res['count']} stacks.",
        "", f"## Time per stack (CPU, {t['threads']} thread(s), median of {t['repeats']})", "",
        "| size | all-in-focus | depth given the fusion | fusion + depth + fill |", "|---|---|---|---|",
    ]
    for size in t["sizes"]:
        lines.append(f"| {size}x{size} | {t[f'all_in_focus_s_{size}'] * 1e3:.1f} ms |"
                     f" {t[f'depth_only_s_{size}'] * 1e3:.1f} ms | {t[f'total_s_{size}'] * 1e3:.1f} ms |")
    lines += [
        "", "## Per stack", "",
        "| seed | MAE raw | MAE filled | MAE confident | confident | LPIPS fusion | LPIPS best frame (k) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["per_stack"]:
        lines.append(f"| {r['seed']} | {r['index_mae']:.3f} | {r['index_mae_filled']:.3f} |"
                     f" {_fmt(r['index_mae_confident'])} | {100 * r['confident_fraction']:.0f}% |"
                     f" {r['lpips_aif']:.4f} | {r['lpips_best_frame']:.4f} ({r['best_frame']}) |")
    lines += ["", "Figure: `dof_analysis.png` (per example stack: the 9 frames; then true all-in-focus, our fusion,"
              " best single frame, true depth, raw depth, filled depth, confidence, |error| of the filled map;"
              " depth colours: near = bright yellow .. far = dark blue, both maps on the same 0..8 scale).", ""]
    return "\n".join(lines)


def _colormap(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Scalar map -> uint8 RGB, dark blue (lo) .. teal .. yellow (hi), by piecewise-linear anchors."""
    anchors = np.array([[0.18, 0.0, 0.33], [0.13, 0.36, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                        [0.99, 0.91, 0.14]])
    t = np.clip((np.asarray(x, np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * (len(anchors) - 1)
    i = np.minimum(t.astype(int), len(anchors) - 2)
    f = (t - i)[..., None]
    return np.round((anchors[i] * (1 - f) + anchors[i + 1] * f) * 255).astype(np.uint8)


def _rgb(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _figure(res: dict):
    """Per example: a row with the 9 frames, a row with AIF / depth maps / confidence / error."""
    from PIL import Image, ImageDraw

    tile, label_h, pad = 112, 14, 4
    n_cols = 9
    exs = res["_examples"]
    width = n_cols * (tile + pad) + pad
    height = 20 + len(exs) * 2 * (tile + label_h + pad)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    d, a = res["depth"], res["all_in_focus"]
    draw.text((pad, 4), f"dof_analysis: {res['count']} held-out stacks, index MAE {_fmt(d['index_mae'])} (filled "
              f"{_fmt(d['index_mae_filled'])}), AIF LPIPS {_fmt(a['lpips'], 4)} vs best frame "
              f"{_fmt(a['lpips_best_frame'], 4)}", fill="black")
    y = 20
    n_frames = 9
    for ex in exs:
        err = (ex["filled"] - ex["true_index"]).abs().numpy()
        tiles_top = [(f"frame {k}", _rgb(ex["frames"][k])) for k in range(n_frames)]
        tiles_bottom = [
            ("true AIF", _rgb(ex["true_aif"])), ("our AIF", _rgb(ex["aif"])),
            (f"best frame {ex['best_frame']}", _rgb(ex["frames"][ex["best_frame"]])),
            ("true depth", _colormap(8 - ex["true_index"].numpy(), 0, 8)),
            ("our depth (raw)", _colormap(8 - ex["index"].numpy(), 0, 8)),
            ("our depth (filled)", _colormap(8 - ex["filled"].numpy(), 0, 8)),
            ("confidence", _colormap(ex["confidence"].numpy(), 0, 1)),
            ("|err| filled 0..2", _colormap(err, 0, 2)),
        ]
        for row in (tiles_top, tiles_bottom):
            for j, (label, arr) in enumerate(row):
                x = pad + j * (tile + pad)
                draw.text((x, y), label, fill="black")
                img.paste(Image.fromarray(arr).resize((tile, tile), Image.NEAREST), (x, y + label_h))
            y += tile + label_h + pad
    return img


def write_dof_report(result: dict, out_dir) -> dict:
    """Write dof_analysis.json / .md / .png into out_dir; returns their paths."""
    from refocus_edge.bench.report import write_report

    public = {k: v for k, v in result.items() if not k.startswith("_")}
    return write_report(out_dir, "dof_analysis", public, _markdown(result), _figure(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dof_analysis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8, help="held-out stacks to evaluate (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size (median; default 3)")
    parser.add_argument("--timing-sizes", type=int, nargs="+", default=list(TIMING_SIZES),
                        help="square stack sizes to time (default 128 512)")
    parser.add_argument("--out", type=Path, default=Path("out/dof"))
    args = parser.parse_args(argv)
    from refocus_edge.runtime.errors import RefocusError

    try:
        result = evaluate(args.count, args.repeats, args.timing_sizes)
    except (ValueError, RefocusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else list(argv)
    result["command"] = "python -m benchmarks.dof_analysis " + shlex.join(argv)  # what was actually run
    paths = write_dof_report(result, args.out)
    d, a, t = result["depth"], result["all_in_focus"], result["timing"]
    print(f"depth MAE {d['index_mae']:.3f} frames ({d['diopter_mae']:.2f} D), filled {d['index_mae_filled']:.3f}, "
          f"confident {_fmt(d['index_mae_confident'])} on {100 * d['confident_fraction']:.0f}% of pixels; "
          f"AIF LPIPS {a['lpips']:.4f} vs best frame {a['lpips_best_frame']:.4f}; "
          + ", ".join(f"{t[f'total_s_{n}'] * 1e3:.0f} ms @{n}" for n in t["sizes"]))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
