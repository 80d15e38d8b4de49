"""`refocus edit`: new focus, blur strength and aperture shape for a focal stack written by `refocus run`.

Pipeline: read frame_0.png .. frame_8.png -> all-in-focus fusion and depth from focus
(:func:`refocus_edge.dof.analysis.analyse_stack`) -> layered bokeh rendering
(:func:`refocus_edge.dof.bokeh.render_dof`) -> an output folder with

* ``edited.png``: the edit at the stack's resolution;
* ``all_in_focus.png``: the fused all-in-focus image the edit starts from;
* ``depth.png``: depth (focus index, hole-filled) colour-mapped, near = warm yellow, far = cool blue;
* ``confidence.png``: depth confidence, white = reliable;
* ``viewer.html``: self-contained page with focus and strength sliders over a precomputed grid of
  edits (9 focus positions x 4 strengths at preview size, JPEG data URIs), the all-in-focus image
  and the depth map; clicking the image focuses there (grid: :mod:`refocus_edge.dof.preview`, page:
  :mod:`refocus_edge.dof.viewer_page`, both shared with `refocus run`'s viewer);
* ``edit.json``: parameters, sizes, what the renderer did and the time per stage.

Atomicity as in :mod:`refocus_edge.app.outputs`: everything is written into a hidden staging folder next to
the output folder and only then published, so a failure or Ctrl-C never leaves half an edit, and an
existing non-empty output folder is refused up front unless ``force``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from refocus_edge.runtime.errors import InputImageError, InvalidArgumentError, OutputExistsError
from refocus_edge.runtime.publish import check_writable, output_lock, publishing, recover

from .aperture import Aperture, parse_shape
from .bokeh import NUM_POSITIONS, DofConfig, render_dof
from .colormap import colorize_depth
from .preview import VIEWER_FOCUS, VIEWER_STRENGTHS, check_viewer_params, precompute_previews, to_u8
from .viewer_page import edit_page

__all__ = [
    "EditConfig", "EditResult", "edit_stack", "load_stack", "colorize_depth",
    "EDIT_NAMES", "VIEWER_STRENGTHS", "VIEWER_FOCUS", "FRAME_NAMES",
]

FRAME_NAMES = [f"frame_{i}.png" for i in range(NUM_POSITIONS)]
EDITED_NAME, AIF_NAME, DEPTH_NAME, CONF_NAME = "edited.png", "all_in_focus.png", "depth.png", "confidence.png"
VIEWER_NAME, JSON_NAME = "viewer.html", "edit.json"
# edit.json last: its presence marks a complete set when files are replaced one by one.
EDIT_NAMES = [EDITED_NAME, AIF_NAME, DEPTH_NAME, CONF_NAME, VIEWER_NAME, JSON_NAME]


@dataclass(frozen=True)
class EditConfig:
    """What to edit and where to write it.

    Attributes:
        focus: focus position in stack units, 0 (nearest plane, 20 D) .. 8 (farthest, 0 D).
        strength: blur scale >= 0; 1 = the stack's own lens, 2 = twice the blur, 0 = all in focus.
        shape: aperture: circle, blades:N[:DEG], heart, star, or a path to a PNG mask.
        out: output folder; None = ``<stack_dir>/edit``.
        force: replace the edit files in a non-empty output folder (other files are kept).
        wait: if another process is writing the output folder, wait for it instead of failing.
        dof: renderer parameters.
        viewer_max_side: longest side of the viewer's precomputed previews (px).
        viewer_quality: JPEG quality of the previews.
    """

    focus: float
    strength: float = 1.0
    shape: "str | Path | Aperture" = "circle"
    out: Path | None = None
    force: bool = False
    wait: bool = False
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
    check_viewer_params(cfg.viewer_max_side, cfg.viewer_quality)
    return focus, strength, parse_shape(cfg.shape)


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a non-folder, or a non-empty folder without force (as refocus_edge.app.outputs.check_output_dir)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidArgumentError("exists and is not a folder; pick another --out", out_dir)
    check_writable(out_dir)
    if not force and out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutputExistsError("is not empty; pass --force to replace the edit files in it or pick another --out",
                                out_dir)


def load_stack(stack_dir: str | Path) -> tuple[torch.Tensor, bytes | None]:
    """Read frame_0.png .. frame_8.png -> ([9, 3, H, W] float32 in [0, 1], frame 0's ICC profile).

    Errors (InputImageError) name the folder or the frame: missing folder, missing or unreadable
    frame, frames of different sizes.
    """
    from refocus_edge.runtime.image_io import load_photo

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


# --------------------------------------------------------------------------- main entry


def edit_stack(stack_dir: str | Path, config: EditConfig, log: Callable[[str], None] | None = None) -> EditResult:
    """Edit the focal stack in `stack_dir` as `config` says and write the results (see module doc)."""
    log = log or (lambda _msg: None)
    focus, strength, aperture = _check_params(config)
    stack_dir = Path(stack_dir)
    out_dir = Path(config.out if config.out is not None else stack_dir / "edit").absolute()
    check_writable(out_dir)
    with output_lock(out_dir, wait=config.wait):  # one writer per output folder (runtime/publish.py)
        for done in recover(out_dir):
            log(f"recovered {out_dir}: {done}")
        _check_out_dir(out_dir, config.force)
        return _edit_locked(stack_dir, out_dir, config, focus, strength, aperture, log)


def _edit_locked(stack_dir: Path, out_dir: Path, config: EditConfig, focus, strength, aperture,
                 log: Callable[[str], None]) -> EditResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    frames, icc = load_stack(stack_dir)
    timings["load"] = time.perf_counter() - t0
    H, W = frames.shape[-2:]
    log(f"stack     {stack_dir} ({NUM_POSITIONS} frames, {W}x{H})")

    # Imported here, not at module import: `refocus --help` stays light.
    from .analysis import analyse_stack

    analysis = analyse_stack(frames)
    timings.update(analysis.timings)
    aif, depth, confidence = analysis.aif, analysis.depth, analysis.confidence
    depth_source = analysis.depth_source
    log(f"depth     from focus ({depth_source}): index {float(depth.min()):.2f}..{float(depth.max()):.2f}, "
        f"mean confidence {float(confidence.mean()):.2f}")

    t0 = time.perf_counter()
    stats: dict = {}
    edited = render_dof(aif, depth, focus, strength, aperture, config.dof, stats=stats)
    timings["render"] = time.perf_counter() - t0
    blend = "linear light" if config.dof.linear_light else "sRGB values"
    log(f"edit      focus {focus:g}, strength {strength:g}, shape {aperture.name}, blend in {blend}: "
        f"{stats['slices']} depth slices ({stats['blurred_slices']} blurred), blur up to "
        f"{stats['max_radius_px']:.1f} px")

    t0 = time.perf_counter()
    previews = precompute_previews(aif, depth, aperture, config.dof, config.viewer_max_side, config.viewer_quality)
    page = edit_page(previews, focus, strength)
    timings["viewer"] = time.perf_counter() - t0
    log(f"viewer    {len(previews.focus)} focus x {len(previews.strengths)} strengths at "
        f"{previews.size[0]}x{previews.size[1]}, {len(page) / 1e6:.2f} MB")

    t0 = time.perf_counter()
    record = {
        "stack_dir": str(stack_dir.absolute()), "size": [W, H], "focus": focus, "strength": strength,
        "shape": aperture.name, "blend": "linear" if config.dof.linear_light else "srgb",
        "depth_source": depth_source, "render": stats, "viewer": previews.info(),
        "dof_config": dataclasses.asdict(config.dof),
        "files": list(EDIT_NAMES),
    }
    images = {
        EDITED_NAME: to_u8(edited),
        AIF_NAME: to_u8(aif),
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


# --------------------------------------------------------------------------- output


def _write(out_dir: Path, images: dict, page: str, record: dict, timings: dict, icc: bytes | None,
           force: bool) -> list[Path]:
    _check_out_dir(out_dir, force)  # again: the folder may have changed while we computed
    # All at once (runtime/publish.py); a user's own files in out_dir are carried over.
    with publishing(out_dir, carry_over=lambda name: name not in EDIT_NAMES) as staging:
        extra = {"icc_profile": bytes(icc)} if icc else {}
        for name, arr in images.items():
            mode = "L" if arr.ndim == 2 else "RGB"
            # ICC only on colour images in the stack's colour space; depth/confidence are data.
            kw = extra if name in (EDITED_NAME, AIF_NAME) else {}
            Image.fromarray(np.ascontiguousarray(arr), mode).save(staging / name, "PNG", **kw)
        (staging / VIEWER_NAME).write_text(page, encoding="utf-8")
        record = {**record, "timings_s": {k: round(v, 4) for k, v in timings.items()}}
        (staging / JSON_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return [out_dir / n for n in EDIT_NAMES]
