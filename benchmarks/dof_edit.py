"""Depth-of-field editing benchmark: fidelity to the project's stack renderer, and latency.

For each of the first N held-out synthetic scenes (never used for training) and each focus plane k of
the stack, an edit focused at k with strength 1 and a circular aperture is compared with the
renderer's own frame k (LPIPS alex, inputs in [-1, 1]):

* **from the true AIF + depth**: the scene's sharp composite and its true depth (index units,
  (20 D - depth) / 2.5 D): what the renderer alone can reach;
* the same with ``linear_light=False`` (**renderer convention**): the synthetic renderer blurs the
  stored values, while edits blur in linear light by default, so this isolates that choice;
* **from the estimated AIF + depth** (refocus_edge.dof.all_in_focus / depth_from_focus on the 8-bit frames,
  as `refocus edit` reads them), when those modules are importable, also in both conventions;
* **no blur**: the all-in-focus image itself, the number to beat.

Latency: one edit (focus 0, strength 1, circle) of held-out scene 0 at 512x512 and at 128x128, with
its true depth and with a depth ramp that occupies every slice (worst case), median of 5 timed runs
after a warm-up, torch on this CPU; and the stage times of `refocus edit` on a 512x512 stack.

    python -m benchmarks.dof_edit --count 8 --out benchmarks/results/dof-edit
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

LPIPS_NET = "alex"
N_POS = 9


def _chw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc, dtype=np.float32)).permute(2, 0, 1)


def _estimator():
    """(all_in_focus, depth_from_focus) if the analysis modules are importable, else None."""
    try:
        from refocus_edge.dof.all_in_focus import all_in_focus
        from refocus_edge.dof.depth import depth_from_focus
    except ImportError:
        return None
    return all_in_focus, depth_from_focus


def _estimate(est, frames_u8: np.ndarray):
    """Estimated (AIF [3, H, W], depth index [H, W]) from 8-bit frames [9, H, W, 3], as `refocus edit`."""
    from refocus_edge.dof.analysis import analyse_stack

    frames = torch.from_numpy(frames_u8).permute(0, 3, 1, 2).float() / 255.0
    res = analyse_stack(frames)
    return res.aif, res.depth


@torch.no_grad()
def evaluate(count: int, size: int, progress: bool = True) -> dict:
    from refocus_edge.focalstacks.render import composite_sharp, render_layers
    from refocus_edge.focalstacks.scenes import make_scene
    from refocus_edge.focalstacks.synthetic import SYNTHETIC_SPLITS, split_seed
    from refocus_edge.dof.bokeh import DofConfig, render_dof
    from refocus_edge.runtime.metrics.lpips import LPIPS

    heldout = SYNTHETIC_SPLITS["heldout"]
    if not 1 <= count <= heldout.count:
        raise SystemExit(f"--count must be in 1..{heldout.count}, got {count}")
    lpips = LPIPS(LPIPS_NET)

    def dist(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(lpips(a[None] * 2 - 1, b[None] * 2 - 1)[0])

    est = _estimator()
    rows = ["no_blur", "true", "true_renderer_convention"]
    rows += ["estimated", "estimated_renderer_convention"] if est else []
    table = {r: np.zeros((count, N_POS)) for r in rows}
    est_context = {"aif_lpips": [], "depth_mae_index": []}
    examples = None
    plain = DofConfig(linear_light=False)
    for i in range(count):
        t0 = time.perf_counter()
        scene = make_scene(split_seed("heldout", i), (size, size))
        frames = render_layers(scene.layers)  # [9, H, W, 3] in [0, 1]
        aif = _chw(composite_sharp(scene.layers))
        index = torch.from_numpy((20.0 - scene.depth_diopters) / 2.5).float()
        if est:
            u8 = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
            aif_e, index_e = _estimate(est, u8)
            est_context["aif_lpips"].append(dist(aif_e, aif))
            est_context["depth_mae_index"].append(float((index_e - index).abs().mean()))
        ex = []
        for k in range(N_POS):
            gt = _chw(frames[k])
            edit = render_dof(aif, index, k, 1.0, "circle")
            table["no_blur"][i, k] = dist(aif, gt)
            table["true"][i, k] = dist(edit, gt)
            table["true_renderer_convention"][i, k] = dist(render_dof(aif, index, k, 1.0, "circle", plain), gt)
            edit_e = None
            if est:
                edit_e = render_dof(aif_e, index_e, k, 1.0, "circle")
                table["estimated"][i, k] = dist(edit_e, gt)
                plain_e = render_dof(aif_e, index_e, k, 1.0, "circle", plain)
                table["estimated_renderer_convention"][i, k] = dist(plain_e, gt)
            if i == 0 and k in (0, 4, 8):
                ex.append((k, gt, edit, edit_e))
        if i == 0:
            examples = ex
        if progress:
            print(f"stack {i + 1}/{count} (seed {split_seed('heldout', i)}): "
                  + ", ".join(f"{r} {table[r][i].mean():.3f}" for r in rows)
                  + f"  [{time.perf_counter() - t0:.1f}s]", file=sys.stderr)
    res = {
        "count": count, "size": [size, size], "lpips_net": LPIPS_NET,
        "estimated_available": bool(est),
        "per_position": {r: table[r].mean(0).round(5).tolist() for r in rows},
        "mean": {r: round(float(table[r].mean()), 5) for r in rows},
        "per_stack": {r: table[r].mean(1).round(5).tolist() for r in rows},
    }
    if est:
        res["estimate_context"] = {k: round(float(np.mean(v)), 5) for k, v in est_context.items()}
    res["_examples"] = examples
    return res


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up: kernel spectra are cached after it, as in an interactive session
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "runs": repeats}


def latency(sizes=(512, 128), repeats: int = 5) -> dict:
    """render_dof on held-out scene 0 (true depth: a few flat layers) and on a depth ramp across the
    width (every depth slice occupied: the worst case for the slice count)."""
    from refocus_edge.focalstacks.scenes import make_scene
    from refocus_edge.focalstacks.synthetic import split_seed
    from refocus_edge.dof.bokeh import render_dof

    out = {}
    for s in sizes:
        scene = make_scene(split_seed("heldout", 0), (s, s))
        aif = _chw(scene.aif)
        depths = {"scene depth": torch.from_numpy((20.0 - scene.depth_diopters) / 2.5).float(),
                  "depth ramp 0..8": torch.linspace(0, 8, s)[None].repeat(s, 1)}
        for name, index in depths.items():
            stats: dict = {}
            render_dof(aif, index, 0.0, 1.0, "circle", stats=stats)
            row = _time(lambda: render_dof(aif, index, 0.0, 1.0, "circle"), repeats)
            row.update(slices=stats["slices"], blurred_slices=stats["blurred_slices"],
                       lowres_slices=stats["lowres_slices"], max_radius_px=round(stats["max_radius_px"], 2))
            out[f"{s}x{s}, {name}"] = row
    return out


def end_to_end(size: int = 512) -> dict | None:
    """Stage times of `refocus edit` (edit_stack) on a 512x512 stack written like `refocus run` does."""
    import shutil
    import tempfile

    if _estimator() is None:
        return None
    from refocus_edge.focalstacks.render import render_layers
    from refocus_edge.focalstacks.scenes import make_scene
    from refocus_edge.focalstacks.synthetic import split_seed
    from refocus_edge.dof.edit import EditConfig, edit_stack
    from refocus_edge.app.outputs import write_stack

    scratch = Path(tempfile.mkdtemp(prefix="dof-edit-bench-"))
    try:
        frames = render_layers(make_scene(split_seed("heldout", 0), (size, size)).layers)
        u8 = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
        write_stack(scratch / "stack", u8, icc_profile=None, input_position=4, metadata={}, force=False)
        res = edit_stack(scratch / "stack", EditConfig(focus=0.0, strength=1.0, shape="heart", out=scratch / "edit"))
        return {"size": [size, size], "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
                "viewer_mb": round(res.viewer_bytes / 1e6, 2)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _shape_scene(n: int = 192):
    """A dark photo at the far plane with point lights, and a sharp object at plane 2 (focus there)."""
    from refocus_edge.focalstacks.scenes import texture_photos

    photo = texture_photos()[0]
    step = photo.shape[0] // n
    bg = torch.from_numpy(np.ascontiguousarray(photo[: n * step : step, : n * step : step][:n, :n])).permute(2, 0, 1)
    img = bg * 0.18
    index = torch.full((n, n), 8.0)
    rng = np.random.default_rng(3)
    for _ in range(7):
        y, x = rng.integers(n // 10, n - n // 10, 2)
        img[:, y - 1 : y + 1, x - 1 : x + 1] = 1.0
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    obj = (yy - n * 0.7) ** 2 + (xx - n * 0.3) ** 2 < (n * 0.16) ** 2
    img[:, obj] = torch.tensor([0.85, 0.45, 0.2])[:, None] * (0.7 + 0.3 * bg.mean(0)[obj])
    index[obj] = 2.0
    return img, index


def _figure(res: dict):
    from PIL import Image, ImageDraw

    from refocus_edge.dof.bokeh import render_dof

    th, pad, label_h = 160, 6, 16
    ex = res["_examples"]
    cols = 3 if res["estimated_available"] else 2
    shapes = ["circle", "blades:6", "heart", "star"]
    width = max(cols, len(shapes)) * (th + pad) + pad
    height = label_h + len(ex) * (th + label_h) + 2 * label_h + th + 2 * pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)

    def paste(t: torch.Tensor, x: int, y: int):
        a = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        img.paste(Image.fromarray(a).resize((th, th), Image.BILINEAR), (x, y))

    draw.text((pad, 2), "held-out stack 0: renderer frame k | edit from true AIF+depth | edit from estimated",
              fill="black")
    y = label_h
    for k, gt, edit, edit_e in ex:
        for c, (t, name) in enumerate([(gt, f"renderer frame {k}"), (edit, f"edit, focus {k}, true"),
                                       (edit_e, f"edit, focus {k}, estimated")][:cols]):
            draw.text((pad + c * (th + pad), y), name, fill="black")
            paste(t, pad + c * (th + pad), y + label_h)
        y += th + label_h
    draw.text((pad, y + 4), "shapes: point lights at the far plane, focus 2, strength 1.5", fill="black")
    y += label_h
    simg, sidx = _shape_scene()
    for c, shape in enumerate(shapes):
        draw.text((pad + c * (th + pad), y + 2), shape, fill="black")
        paste(render_dof(simg, sidx, 2.0, 1.5, shape), pad + c * (th + pad), y + label_h)
    return img


def _markdown(res: dict) -> str:
    names = {"no_blur": "no blur (the all-in-focus image)", "true": "edit from true AIF + depth",
             "true_renderer_convention": "same, renderer convention (linear_light=False)",
             "estimated": "edit from estimated AIF + depth",
             "estimated_renderer_convention": "same, renderer convention (linear_light=False)"}
    rows = list(res["per_position"])
    lines = [
        "# Depth-of-field editing: fidelity to the stack renderer, latency", "",
        f"- command: `{res['command']}`",
        f"- {res['count']} held-out synthetic scenes at {res['size'][0]}x{res['size'][1]}; edit focused at "
        "each focus plane k, strength 1, circle; compared with the renderer's frame k (LPIPS "
        f"{res['lpips_net']}, lower is better); torch {res['torch']} on this CPU, {res['threads']} thread(s)",
        "",
        "| | " + " | ".join(f"F{k}" for k in range(N_POS)) + " | mean |",
        "|---|" + "---|" * (N_POS + 1),
    ]
    for r in rows:
        lines.append(f"| {names[r]} | " + " | ".join(f"{v:.3f}" for v in res["per_position"][r])
                     + f" | **{res['mean'][r]:.3f}** |")
    lines.append("")
    if res["estimated_available"]:
        ctx = res["estimate_context"]
        lines += [f"Estimated inputs (from the 8-bit frames): all-in-focus vs true LPIPS {ctx['aif_lpips']:.3f}, "
                  f"depth mean absolute error {ctx['depth_mae_index']:.2f} focus steps.", ""]
    else:
        lines += ["Estimated inputs: refocus_edge.dof.all_in_focus / refocus_edge.dof.depth not importable; not measured.", ""]
    lines += [
        "The renderer blurs the stored (sRGB-encoded) values; edits blur in linear light by default "
        "(physically right, and what makes highlights bloom), which brightens blurred regions relative to "
        "the renderer: compare the two 'true' rows.", "",
        "## Latency of one edit (render_dof: focus 0, strength 1, circle, held-out scene 0)", "",
        "| size, depth | median | min | max | depth slices (blurred, low-res) | largest blur radius |",
        "|---|---|---|---|---|---|",
    ]
    for size, t in res["latency"].items():
        lines.append(f"| {size} | {t['median_s'] * 1000:.0f} ms | {t['min_s'] * 1000:.0f} ms | "
                     f"{t['max_s'] * 1000:.0f} ms | {t['slices']} ({t['blurred_slices']}, {t['lowres_slices']}) | "
                     f"{t['max_radius_px']:.1f} px |")
    lines += ["", f"Median of {res['latency'][next(iter(res['latency']))]['runs']} timed runs after one warm-up. "
              "The scene's true depth has a few flat layers (few slices); the ramp occupies every slice.", ""]
    e2e = res.get("end_to_end")
    if e2e:
        lines += [f"`refocus edit` end to end on a {e2e['size'][0]}x{e2e['size'][1]} stack (heart, focus 0): "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in e2e["timings_s"].items())
                  + f"; viewer.html {e2e['viewer_mb']:.2f} MB.", ""]
    lines += [f"Wall time of the whole benchmark: {res['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from refocus_edge.bench.report import write_report

    p = argparse.ArgumentParser(prog="python -m benchmarks.dof_edit", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=8, help="held-out scenes (default 8)")
    p.add_argument("--size", type=int, default=128, help="scene size for the fidelity table (default 128)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per latency size (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--out", type=Path, default=Path("out/dof-edit"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = {"command": "python -m benchmarks.dof_edit " + " ".join(argv if argv is not None else sys.argv[1:]),
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    res.update(evaluate(args.count, args.size))
    res["latency"] = latency(repeats=args.repeats)
    res["end_to_end"] = end_to_end()
    figure = _figure(res)
    res.pop("_examples")
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    md = _markdown(res)
    write_report(args.out, "dof_edit", res, md, figure)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
