"""`refocus edit`: new focus, blur strength and aperture shape for a focal stack written by `refocus run`.

Pipeline: read frame_0.png .. frame_8.png -> all-in-focus fusion and depth from focus
(:mod:`runtime.dof.all_in_focus`, :mod:`runtime.dof.depth`) -> layered bokeh rendering
(:func:`runtime.dof.bokeh.render_dof`) -> an output folder with

* ``edited.png``: the edit at the stack's resolution;
* ``all_in_focus.png``: the fused all-in-focus image the edit starts from;
* ``depth.png``: depth (focus index, hole-filled) colour-mapped, near = warm yellow, far = cool blue;
* ``confidence.png``: depth confidence, white = reliable;
* ``viewer.html``: self-contained page with focus and strength sliders over a precomputed grid of
  edits (9 focus positions x 4 strengths at preview size, JPEG data URIs), the all-in-focus image
  and the depth map; clicking the image focuses there;
* ``edit.json``: parameters, sizes, what the renderer did and the time per stage.

Atomicity as in :mod:`runtime.outputs`: everything is written into a hidden staging folder next to
the output folder and only then published, so a failure or Ctrl-C never leaves half an edit, and an
existing non-empty output folder is refused up front unless ``force``.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from runtime.errors import InputImageError, InvalidArgumentError, OutputExistsError
from runtime.outputs import publish_staged

from .aperture import Aperture, parse_shape
from .bokeh import NUM_POSITIONS, DofConfig, DofRenderer, render_dof

__all__ = [
    "EditConfig", "EditResult", "edit_stack", "load_stack", "colorize_depth",
    "EDIT_NAMES", "VIEWER_STRENGTHS", "FRAME_NAMES",
]

FRAME_NAMES = [f"frame_{i}.png" for i in range(NUM_POSITIONS)]
EDITED_NAME, AIF_NAME, DEPTH_NAME, CONF_NAME = "edited.png", "all_in_focus.png", "depth.png", "confidence.png"
VIEWER_NAME, JSON_NAME = "viewer.html", "edit.json"
# edit.json last: its presence marks a complete set when files are replaced one by one.
EDIT_NAMES = [EDITED_NAME, AIF_NAME, DEPTH_NAME, CONF_NAME, VIEWER_NAME, JSON_NAME]
#: Strengths precomputed for the viewer (0 = the all-in-focus image itself, no render needed).
VIEWER_STRENGTHS = (0.5, 1.0, 2.0, 3.0)
#: Focus positions precomputed for the viewer: the stack's own planes.
VIEWER_FOCUS = tuple(float(i) for i in range(NUM_POSITIONS))
#: Depth colour map anchors, near (index 0) to far (index 8): warm to cool.
_DEPTH_COLOURS = np.array(
    [(252, 232, 100), (250, 145, 45), (214, 56, 64), (124, 40, 140), (40, 62, 170)], dtype=np.float32)
#: Resolution of the depth grid the viewer uses for click-to-focus (cells along the longer side).
_CLICK_GRID = 64


@dataclass(frozen=True)
class EditConfig:
    """What to edit and where to write it.

    Attributes:
        focus: focus position in stack units, 0 (nearest plane, 20 D) .. 8 (farthest, 0 D).
        strength: blur scale >= 0; 1 = the stack's own lens, 2 = twice the blur, 0 = all in focus.
        shape: aperture: circle, blades:N[:DEG], heart, star, or a path to a PNG mask.
        out: output folder; None = ``<stack_dir>/edit``.
        force: replace the edit files in a non-empty output folder (other files are kept).
        dof: renderer parameters.
        viewer_max_side: longest side of the viewer's precomputed previews (px).
        viewer_quality: JPEG quality of the previews.
    """

    focus: float
    strength: float = 1.0
    shape: "str | Path | Aperture" = "circle"
    out: Path | None = None
    force: bool = False
    dof: DofConfig = field(default_factory=DofConfig)
    viewer_max_side: int = 320
    viewer_quality: int = 82


@dataclass
class EditResult:
    """What :func:`edit_stack` did."""

    out_dir: Path
    files: list[Path]
    size: tuple[int, int]  # (W, H)
    focus: float
    strength: float
    shape: str
    depth_source: str  # "filled" or "index"
    render: dict  # render_dof stats of the full-size edit
    timings: dict  # seconds per stage
    viewer_bytes: int


# --------------------------------------------------------------------------- validation & input


def _check_params(cfg: EditConfig) -> tuple[float, float, Aperture]:
    """Validate the cheap arguments before any file is read (one-line errors)."""
    last = NUM_POSITIONS - 1
    try:
        focus = float(cfg.focus)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"--focus must be a number in 0..{last}, got {cfg.focus!r}") from None
    if not (math.isfinite(focus) and 0.0 <= focus <= last):
        raise InvalidArgumentError(f"--focus must be in 0..{last} (0 = near, {last} = far), got {cfg.focus!r}")
    try:
        strength = float(cfg.strength)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"--strength must be a number >= 0, got {cfg.strength!r}") from None
    if not (math.isfinite(strength) and strength >= 0):
        raise InvalidArgumentError(f"--strength must be >= 0 (1 = the stack's own blur), got {cfg.strength!r}")
    if not isinstance(cfg.dof, DofConfig):
        raise InvalidArgumentError(f"dof must be a DofConfig, got {type(cfg.dof).__name__}")
    if isinstance(cfg.viewer_max_side, bool) or not isinstance(cfg.viewer_max_side, int) or cfg.viewer_max_side < 32:
        raise InvalidArgumentError(f"viewer_max_side must be an integer >= 32, got {cfg.viewer_max_side!r}")
    if not (isinstance(cfg.viewer_quality, int) and 1 <= cfg.viewer_quality <= 95):
        raise InvalidArgumentError(f"viewer_quality must be an integer 1..95, got {cfg.viewer_quality!r}")
    return focus, strength, parse_shape(cfg.shape)


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a non-folder, or a non-empty folder without force (as runtime.outputs.check_output_dir)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidArgumentError("exists and is not a folder; pick another --out", out_dir)
    if not force and out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutputExistsError("is not empty; pass --force to replace the edit files in it or pick another --out",
                                out_dir)


def load_stack(stack_dir: str | Path) -> tuple[torch.Tensor, bytes | None]:
    """Read frame_0.png .. frame_8.png -> ([9, 3, H, W] float32 in [0, 1], frame 0's ICC profile).

    Errors (InputImageError) name the folder or the frame: missing folder, missing or unreadable
    frame, frames of different sizes.
    """
    from runtime.image_io import load_photo

    stack_dir = Path(stack_dir)
    if not stack_dir.exists():
        raise InputImageError("stack folder not found; pass a folder written by `refocus run`", stack_dir)
    if not stack_dir.is_dir():
        raise InputImageError("is not a folder; pass the folder `refocus run` wrote (frame_0.png .. frame_8.png)",
                              stack_dir)
    missing = [n for n in FRAME_NAMES if not (stack_dir / n).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputImageError(f"missing{more}; a stack folder holds {FRAME_NAMES[0]} .. {FRAME_NAMES[-1]} "
                              "as written by `refocus run`", stack_dir / missing[0])
    frames, icc, size0 = [], None, None
    for i, name in enumerate(FRAME_NAMES):
        photo = load_photo(stack_dir / name)  # raises InputImageError naming the frame
        h, w = photo.rgb.shape[:2]
        if i == 0:
            size0, icc = (w, h), photo.icc_profile
        elif (w, h) != size0:
            raise InputImageError(f"is {w}x{h} but {FRAME_NAMES[0]} is {size0[0]}x{size0[1]}; "
                                  "all frames of a stack must have one size", stack_dir / name)
        frames.append(torch.from_numpy(photo.rgb).permute(2, 0, 1))
    return torch.stack(frames), icc


# --------------------------------------------------------------------------- images


def _to_u8(chw: torch.Tensor) -> np.ndarray:
    return (chw.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def colorize_depth(index, num_positions: int = NUM_POSITIONS) -> np.ndarray:
    """Focus-index map [H, W] -> uint8 [H, W, 3]: near (0) warm yellow .. far (last) cool blue."""
    t = np.clip(np.asarray(index, dtype=np.float32) / float(num_positions - 1), 0.0, 1.0)
    pos = t * (len(_DEPTH_COLOURS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_DEPTH_COLOURS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _DEPTH_COLOURS[lo] * (1 - frac) + _DEPTH_COLOURS[lo + 1] * frac
    return (rgb + 0.5).astype(np.uint8)


def _jpeg_uri(rgb_u8: np.ndarray, quality: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb_u8, "RGB").save(buf, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _preview_inputs(aif: torch.Tensor, depth: torch.Tensor, max_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Downscale for the viewer: area-averaged colour, nearest-neighbour depth (no invented depths)."""
    h, w = depth.shape
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return aif, depth
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(aif[None], size=size, mode="area")[0]
    d = F.interpolate(depth[None, None], size=size, mode="nearest")[0, 0]
    return small, d


# --------------------------------------------------------------------------- main entry


def edit_stack(stack_dir: str | Path, config: EditConfig, log: Callable[[str], None] | None = None) -> EditResult:
    """Edit the focal stack in `stack_dir` as `config` says and write the results (see module doc)."""
    log = log or (lambda _msg: None)
    focus, strength, aperture = _check_params(config)
    stack_dir = Path(stack_dir)
    out_dir = Path(config.out if config.out is not None else stack_dir / "edit").absolute()
    _check_out_dir(out_dir, config.force)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    frames, icc = load_stack(stack_dir)
    timings["load"] = time.perf_counter() - t0
    H, W = frames.shape[-2:]
    log(f"stack     {stack_dir} ({NUM_POSITIONS} frames, {W}x{H})")

    # The stack-analysis modules are imported here, not at module import: `refocus --help` stays light.
    from runtime.dof.all_in_focus import all_in_focus
    from runtime.dof.depth import depth_from_focus

    t0 = time.perf_counter()
    fused = all_in_focus(frames)
    timings["all_in_focus"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    depth_res = _depth(depth_from_focus, frames, fused)
    timings["depth"] = time.perf_counter() - t0
    aif = torch.as_tensor(fused.image).float().clamp(0, 1)
    filled = getattr(depth_res, "filled", None)
    depth_source = "filled" if filled is not None else "index"
    depth = torch.as_tensor(filled if filled is not None else depth_res.index).float()
    confidence = torch.as_tensor(depth_res.confidence).float().clamp(0, 1)
    log(f"depth     from focus ({depth_source}): index {float(depth.min()):.2f}..{float(depth.max()):.2f}, "
        f"mean confidence {float(confidence.mean()):.2f}")

    t0 = time.perf_counter()
    stats: dict = {}
    edited = render_dof(aif, depth, focus, strength, aperture, config.dof, stats=stats)
    timings["render"] = time.perf_counter() - t0
    log(f"edit      focus {focus:g}, strength {strength:g}, shape {aperture.name}: {stats['slices']} depth "
        f"slices ({stats['blurred_slices']} blurred), blur up to {stats['max_radius_px']:.1f} px")

    t0 = time.perf_counter()
    page, grid_info = _viewer(aif, depth, focus, strength, aperture, config)
    timings["viewer"] = time.perf_counter() - t0
    log(f"viewer    {len(VIEWER_FOCUS)} focus x {len(VIEWER_STRENGTHS)} strengths at "
        f"{grid_info['preview_size'][0]}x{grid_info['preview_size'][1]}, {len(page) / 1e6:.2f} MB")

    t0 = time.perf_counter()
    record = {
        "stack_dir": str(stack_dir.absolute()), "size": [W, H], "focus": focus, "strength": strength,
        "shape": aperture.name, "depth_source": depth_source, "render": stats, "viewer": grid_info,
        "dof_config": dataclasses.asdict(config.dof),
        "files": list(EDIT_NAMES),
    }
    images = {
        EDITED_NAME: _to_u8(edited),
        AIF_NAME: _to_u8(aif),
        DEPTH_NAME: colorize_depth(depth.cpu().numpy()),
        CONF_NAME: (confidence.cpu().numpy() * 255.0 + 0.5).astype(np.uint8),
    }
    files = _write(out_dir, images, page, record, timings, icc, config.force)
    timings["write"] = time.perf_counter() - t0
    log("time      " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    log(f"wrote     {out_dir}/{', '.join(EDIT_NAMES)}")
    return EditResult(out_dir=out_dir, files=files, size=(W, H), focus=focus, strength=strength,
                      shape=aperture.name, depth_source=depth_source, render=stats, timings=timings,
                      viewer_bytes=len(page.encode("utf-8")))


def _depth(depth_from_focus, frames: torch.Tensor, fused):
    """depth_from_focus, handing it the fusion already computed when its signature takes one
    (the focus volume is the expensive part and both stages need it)."""
    import inspect

    try:
        takes_aif = "aif" in inspect.signature(depth_from_focus).parameters
    except (TypeError, ValueError):
        takes_aif = False
    return depth_from_focus(frames, aif=fused) if takes_aif else depth_from_focus(frames)


def _viewer(aif, depth, focus, strength, aperture, config: EditConfig) -> tuple[str, dict]:
    """Precompute the preview grid and build the self-contained page."""
    small, d_small = _preview_inputs(aif, depth, config.viewer_max_side)
    ph, pw = d_small.shape
    # Same look as the full-size edit: the blur scales with the width like the lens's does.
    rps = config.dof.step_radius(depth.shape[1]) * pw / depth.shape[1]
    renderer = DofRenderer(small, d_small, dataclasses.replace(config.dof, radius_per_step=rps))
    # Per strength, one slice step and one canvas margin for all focus positions: with step = 1 / m
    # every integer focus sees the same slices, so their hidden-colour fills and FFTs are computed
    # once per strength instead of once per edit.
    q = config.viewer_quality
    columns, steps = [], []
    for s in VIEWER_STRENGTHS:
        step = 1.0 / max(1, round(1.0 / renderer.slice_step(s)))
        pad = renderer.pad_for(max(renderer.max_radius(f, s) for f in VIEWER_FOCUS))
        columns.append([_jpeg_uri(_to_u8(renderer.render(f, s, aperture, step=step, pad=pad)), q)
                        for f in VIEWER_FOCUS])
        steps.append(step)
    grid = [list(row) for row in zip(*columns)]  # [focus][strength]
    aif_uri = _jpeg_uri(_to_u8(small), q)
    depth_uri = _jpeg_uri(colorize_depth(d_small.cpu().numpy()), q)
    # Coarse depth for click-to-focus: block means are fine here, it only picks a slider value.
    gh, gw = (_CLICK_GRID, max(1, round(_CLICK_GRID * pw / ph))) if ph >= pw else \
        (max(1, round(_CLICK_GRID * ph / pw)), _CLICK_GRID)
    click = F.interpolate(depth[None, None], size=(min(gh, depth.shape[0]), min(gw, depth.shape[1])),
                          mode="area")[0, 0]
    page = _viewer_html(grid, aif_uri, depth_uri, click.cpu().numpy(), focus, strength, aperture.name, (pw, ph))
    info = {"focus": list(VIEWER_FOCUS), "strengths": list(VIEWER_STRENGTHS), "preview_size": [pw, ph],
            "jpeg_quality": q, "slice_steps": steps}
    return page, info


# --------------------------------------------------------------------------- output


def _write(out_dir: Path, images: dict, page: str, record: dict, timings: dict, icc: bytes | None,
           force: bool) -> list[Path]:
    _check_out_dir(out_dir, force)  # again: the folder may have changed while we computed
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir (not mkdtemp): umask permissions, since the folder may be renamed into place.
    staging = out_dir.parent / f".{out_dir.name}.staging-{secrets.token_hex(4)}"
    os.mkdir(staging)
    try:
        extra = {"icc_profile": bytes(icc)} if icc else {}
        for name, arr in images.items():
            mode = "L" if arr.ndim == 2 else "RGB"
            # ICC only on colour images in the stack's colour space; depth/confidence are data.
            kw = extra if name in (EDITED_NAME, AIF_NAME) else {}
            Image.fromarray(np.ascontiguousarray(arr), mode).save(staging / name, "PNG", **kw)
        (staging / VIEWER_NAME).write_text(page, encoding="utf-8")
        record = {**record, "timings_s": {k: round(v, 4) for k, v in timings.items()}}
        (staging / JSON_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        publish_staged(staging, out_dir, EDIT_NAMES)  # edit.json last: a complete set
    except BaseException:  # includes KeyboardInterrupt: never leave a half-written stage behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out_dir / n for n in EDIT_NAMES]


def _viewer_html(grid: list[list[str]], aif_uri: str, depth_uri: str, click_depth: np.ndarray, focus: float,
                 strength: float, shape: str, size: tuple[int, int]) -> str:
    """Self-contained page: the edit grid, all-in-focus and depth views, two sliders, click to focus."""
    last = NUM_POSITIONS - 1
    data = {
        "grid": grid, "aif": aif_uri, "depth": depth_uri,
        "focus": list(VIEWER_FOCUS), "strengths": [0.0, *VIEWER_STRENGTHS],
        "click": [[round(float(v), 2) for v in row] for row in click_depth],
    }
    payload = json.dumps(data, separators=(",", ":"))
    title = html.escape(f"Refocus Edge - depth of field ({shape})")
    w, h = size
    max_s = VIEWER_STRENGTHS[-1]
    strengths = ", ".join(f"{s:g}" for s in VIEWER_STRENGTHS)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 0; padding: 16px; background: #111; color: #eee; font: 14px system-ui, sans-serif;
       display: flex; flex-direction: column; align-items: center; gap: 10px; }}
#view {{ display: block; width: min({max(w, 480)}px, 95vw); height: auto; cursor: crosshair;
        image-rendering: auto; aspect-ratio: {w} / {h}; }}
.controls {{ width: min({max(w, 480)}px, 95vw); display: grid; grid-template-columns: 6em 1fr 9em;
            gap: 6px 10px; align-items: center; }}
input[type=range] {{ width: 100%; margin: 0; }}
.tabs {{ display: flex; gap: 14px; }}
.thumbs {{ display: flex; gap: 10px; }}
.thumbs figure {{ margin: 0; text-align: center; }}
.thumbs img {{ width: min(200px, 44vw); height: auto; display: block; }}
small {{ color: #999; }}
</style>
</head>
<body>
<img id="view" alt="depth-of-field edit">
<div class="controls">
<label for="focus">focus</label>
<input id="focus" type="range" min="0" max="{last}" step="0.01" value="{focus}"
       aria-label="focus position, 0 is near, {last} is far">
<span id="focusLabel"></span>
<label for="strength">strength</label>
<input id="strength" type="range" min="0" max="{max_s}" step="0.01" value="{min(strength, max_s)}"
       aria-label="blur strength, 1 is the stack's own lens">
<span id="strengthLabel"></span>
</div>
<div class="tabs" role="radiogroup" aria-label="what to show">
<label><input type="radio" name="show" value="edit" checked> edit</label>
<label><input type="radio" name="show" value="aif"> all in focus</label>
<label><input type="radio" name="show" value="depth"> depth (near = warm)</label>
</div>
<div class="thumbs">
<figure><img id="aifThumb" alt="all-in-focus image"><figcaption>all in focus</figcaption></figure>
<figure><img id="depthThumb" alt="depth map, near warm, far cool"><figcaption>depth</figcaption></figure>
</div>
<small>Previews ({w}x{h}) are precomputed for focus 0..{last} and strengths {strengths};
the sliders show the nearest one. Click the image to focus there. Shape: {html.escape(shape)}.</small>
<script>
(function () {{
  var D = {payload};
  var view = document.getElementById("view");
  var fs = document.getElementById("focus"), ss = document.getElementById("strength");
  var fl = document.getElementById("focusLabel"), sl = document.getElementById("strengthLabel");
  document.getElementById("aifThumb").src = D.aif;
  document.getElementById("depthThumb").src = D.depth;
  function nearest(list, v) {{
    var best = 0;
    for (var i = 1; i < list.length; i++) if (Math.abs(list[i] - v) < Math.abs(list[best] - v)) best = i;
    return best;
  }}
  function show() {{
    var mode = document.querySelector("input[name=show]:checked").value;
    var fi = nearest(D.focus, parseFloat(fs.value)), si = nearest(D.strengths, parseFloat(ss.value));
    fl.textContent = "position " + D.focus[fi] + (fi === 0 ? " (near)" : fi === D.focus.length - 1 ? " (far)" : "");
    sl.textContent = si === 0 ? "0 (all in focus)" : D.strengths[si] + "x";
    var src = mode === "aif" ? D.aif : mode === "depth" ? D.depth : (si === 0 ? D.aif : D.grid[fi][si - 1]);
    if (view.src !== src) view.src = src;
  }}
  fs.addEventListener("input", show);
  ss.addEventListener("input", show);
  document.querySelectorAll("input[name=show]").forEach(function (r) {{ r.addEventListener("change", show); }});
  view.addEventListener("click", function (e) {{
    var r = view.getBoundingClientRect();
    var gy = Math.min(D.click.length - 1, Math.floor((e.clientY - r.top) / r.height * D.click.length));
    var gx = Math.min(D.click[0].length - 1, Math.floor((e.clientX - r.left) / r.width * D.click[0].length));
    fs.value = D.click[Math.max(0, gy)][Math.max(0, gx)];
    document.querySelector("input[name=show][value=edit]").checked = true;
    show();
  }});
  show();
}})();
</script>
</body>
</html>
"""
