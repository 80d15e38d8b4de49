"""What the depth-of-field views add to `refocus run`: time and viewer size, by stack size.

`refocus run` computes, after sampling, the all-in-focus image and depth map of its stack and a grid
of 9 focus x 4 strength re-renders for the viewer (refocus_edge.dof.stack_views), and writes them with
the frames. This measures that extra on held-out synthetic stacks (focalstacks.synthetic, standing in
for the sampler's output: the cost depends on the size and the depth layout, not on where the
frames came from) at the shipped models' 128x128, at 512x512 and at the released model's 1024x576:

* the stages of :func:`refocus_edge.dof.stack_views.stack_views` (all_in_focus, depth, previews);
* the extra time of :func:`refocus_edge.app.outputs.write_stack` with the views (two more PNGs, a larger
  viewer page) over the same call without them;
* viewer.html size with and without.

The first call at each size is reported apart (aperture kernels and FFT plans are made then, as in
a fresh `refocus run` process); then the median of ``--repeats`` calls.

    OMP_NUM_THREADS=1 python -m benchmarks.dof_viewer --out benchmarks/results/dof-viewer
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.recording import command_line, write_results

DEFAULT_SIZES = ("128x128", "512x512", "1024x576")


def _parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def _stack(h: int, w: int) -> np.ndarray:
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

    frames = SyntheticFocalStacks("heldout", (h, w), length=1)[0]["frames"]  # [9, 3, H, W] in [0, 1]
    return (frames.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def _once(u8: np.ndarray, max_side: int, scratch: Path) -> dict:
    from refocus_edge.dof.stack_views import StackViewsConfig, stack_views
    from refocus_edge.app.outputs import write_stack

    t0 = time.perf_counter()
    views = stack_views(u8, StackViewsConfig(viewer_max_side=max_side))
    t_views = time.perf_counter() - t0
    for d in ("plain", "dof"):
        shutil.rmtree(scratch / d, ignore_errors=True)
    t0 = time.perf_counter()
    write_stack(scratch / "plain", u8, icc_profile=None, input_position=4, metadata={}, force=False)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_stack(scratch / "dof", u8, icc_profile=None, input_position=4, metadata={}, force=False,
                dof=views.outputs)
    t_dof = time.perf_counter() - t0
    return {
        **{k: v for k, v in views.timings.items()},
        "stack_views": t_views, "write_extra": t_dof - t_plain, "extra_total": t_views + t_dof - t_plain,
        "viewer_mb_plain": (scratch / "plain" / "viewer.html").stat().st_size / 1e6,
        "viewer_mb_dof": (scratch / "dof" / "viewer.html").stat().st_size / 1e6,
        "preview_size": list(views.outputs.previews.size),
    }


def measure(sizes, max_sides, repeats: int, progress: bool = True) -> list[dict]:
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="dof-viewer-bench-"))
    try:
        for size in sizes:
            h, w = _parse_size(size)
            u8 = _stack(h, w)
            for ms in max_sides:
                first = _once(u8, ms, scratch)
                runs = [_once(u8, ms, scratch) for _ in range(repeats)]
                keys = [k for k in first if isinstance(first[k], float)]
                row = {"size": size, "viewer_max_side": ms, "preview_size": first["preview_size"],
                       "first_s": {k: round(first[k], 3) for k in keys},
                       "median_s": {k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
                       "repeats": repeats}
                rows.append(row)
                if progress:
                    m = row["median_s"]
                    print(f"{size} (previews {row['preview_size'][0]}x{row['preview_size'][1]}): extra "
                          f"{m['extra_total']:.2f}s median, {row['first_s']['extra_total']:.2f}s first "
                          f"(aif {m['all_in_focus']:.2f}, depth {m['depth']:.2f}, previews {m['previews']:.2f}, "
                          f"write {m['write_extra']:.2f}); viewer {m['viewer_mb_plain']:.2f} -> "
                          f"{m['viewer_mb_dof']:.2f} MB", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def _markdown(res: dict) -> str:
    lines = [
        "# What the depth-of-field views add to `refocus run`", "",
        f"- command: `{res['command']}`",
        f"- held-out synthetic stack 0 per size (standing in for the sampler's output); torch {res['torch']} "
        f"on this CPU, {res['threads']} thread(s); seconds, median of {res['rows'][0]['repeats']} calls after "
        "a first one (the first call in brackets: kernels and FFT plans are made then, as in a fresh run)",
        "",
        "| stack | previews | all_in_focus | depth | previews grid | extra write | **extra total** | viewer.html |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        m, f = r["median_s"], r["first_s"]
        lines.append(
            f"| {r['size']} | {r['preview_size'][0]}x{r['preview_size'][1]} (max side {r['viewer_max_side']}) "
            f"| {m['all_in_focus']:.2f} | {m['depth']:.2f} | {m['previews']:.2f} | {m['write_extra']:.2f} "
            f"| **{m['extra_total']:.2f}** ({f['extra_total']:.2f}) "
            f"| {m['viewer_mb_plain']:.2f} -> {m['viewer_mb_dof']:.2f} MB |")
    lines += [
        "",
        "The analysis (all_in_focus, depth) runs at the stack's full size and grows with its pixel count; "
        "the preview grid (9 focus x 4 strengths, 36 re-renders) runs at the preview size, at most "
        "`viewer_max_side` px on the longer side, so it stops growing once the stack is larger than that. "
        "`refocus run --no-dof` skips all of it.",
        "",
        "Rows with the same preview size do the same work (128x128 at max side 320 and 256): their "
        "difference is the measurement noise of the machine, which may be shared with other jobs.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="WxH")
    ap.add_argument("--max-sides", nargs="+", type=int, default=[320], metavar="PX",
                    help="viewer_max_side values to measure (default: the run's 320)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="folder for dof_viewer.json and dof_viewer.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = measure(args.sizes, args.max_sides, args.repeats)
    res = {"command": command_line("dof_viewer", argv),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows,
           "wall_s": round(time.perf_counter() - t0, 1)}
    write_results(args.out, "dof_viewer", res, _markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
