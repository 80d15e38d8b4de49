"""Precompute a viewer's depth-of-field previews: a focus x strength grid of small re-renders.

A static page cannot run the renderer, so viewers (`refocus edit`, `refocus run`) embed a grid of
re-renders at preview size and their sliders snap to the nearest one. The grid is the expensive part
of a viewer, so it is rendered at ``max_side`` px at most, with one slice step and one canvas margin
per strength shared by all focus positions (their slices, fills and FFTs are then computed once per
strength: see :class:`refocus_edge.dof.bokeh.DofRenderer`).
"""
from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from refocus_edge.runtime.errors import InvalidArgumentError

from .aperture import Aperture
from .bokeh import NUM_POSITIONS, DofConfig, DofRenderer
from .colormap import colorize_depth
from .viewer_page import PreviewGrid, check_grid_axes, check_viewer_params  # noqa: F401 (public here too)

__all__ = [
    "VIEWER_FOCUS", "VIEWER_STRENGTHS", "precompute_previews", "check_viewer_params", "to_u8", "jpeg_uri",
    "preview_inputs", "click_depths",
]

#: Strengths precomputed for the viewer. Strength 0 is not among them: it is the all-in-focus image
#: itself, which the page already holds (no render needed).
VIEWER_STRENGTHS = (0.5, 1.0, 2.0, 3.0)
#: Focus positions precomputed for the viewer: the stack's own planes.
VIEWER_FOCUS = tuple(float(i) for i in range(NUM_POSITIONS))
#: Resolution of the depth grid the viewer uses for click-to-focus (cells along the longer side).
CLICK_GRID = 64
#: Depth samples per cell side of that grid (the cell's value is their median).
CLICK_SAMPLES = 4


def to_u8(chw: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> uint8 [H, W, 3]."""
    return (chw.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def jpeg_uri(rgb_u8: np.ndarray, quality: int) -> str:
    """uint8 [H, W, 3] -> ``data:image/jpeg;base64,...`` (JPEG: previews are photos, PNG is ~5x larger)."""
    buf = io.BytesIO()
    Image.fromarray(rgb_u8, "RGB").save(buf, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def preview_inputs(aif: torch.Tensor, depth: torch.Tensor, max_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Downscale for the viewer: area-averaged colour, nearest-neighbour depth (no invented depths)."""
    h, w = depth.shape
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return aif, depth
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(aif[None], size=size, mode="area")[0]
    d = F.interpolate(depth[None, None], size=size, mode="nearest")[0, 0]
    return small, d


def click_depths(depth: torch.Tensor, preview_hw: tuple[int, int]) -> torch.Tensor:
    """Coarse depth [gh, gw] for click-to-focus: CLICK_GRID cells along the preview's longer side.

    Each cell holds the median of CLICK_SAMPLES x CLICK_SAMPLES depth samples inside it: a median,
    not a mean, so a cell on an occluding edge takes the depth of one of its surfaces. A mean would
    invent a depth between the two (an object at 1 before a wall at 7 gives 4), and a click there
    would focus on neither.
    """
    ph, pw = preview_hw
    h, w = depth.shape
    if ph >= pw:
        gh, gw = CLICK_GRID, max(1, round(CLICK_GRID * pw / ph))
    else:
        gh, gw = max(1, round(CLICK_GRID * ph / pw)), CLICK_GRID
    gh, gw, k = min(gh, h), min(gw, w), CLICK_SAMPLES
    # Nearest sampling at k samples per cell side puts sample (i, j) of cell (r, c) inside that
    # cell's span of the full map, which is what the page's click maps to.
    samples = F.interpolate(depth[None, None].float(), size=(gh * k, gw * k), mode="nearest")[0, 0]
    cells = samples.reshape(gh, k, gw, k).permute(0, 2, 1, 3).reshape(gh, gw, k * k)
    return cells.median(dim=-1).values  # torch's median is one of the samples (the lower middle)


@torch.no_grad()
def precompute_previews(aif: torch.Tensor, depth: torch.Tensor, aperture: Aperture, dof: DofConfig,
                        max_side: int = 320, quality: int = 82, focus=VIEWER_FOCUS,
                        strengths=VIEWER_STRENGTHS) -> PreviewGrid:
    """Render the grid of previews of `aif` ([3, H, W] in [0, 1]) with `depth` ([H, W], index units).

    Each preview looks like a full-size edit scaled down: the blur radius per focus step is scaled by
    the preview's width like the lens's own (``dof.step_radius`` of the full width).
    """
    check_viewer_params(max_side, quality)
    check_grid_axes(focus, strengths)
    small, d_small = preview_inputs(aif, depth, max_side)
    ph, pw = d_small.shape
    rps = dof.step_radius(depth.shape[1]) * pw / depth.shape[1]
    renderer = DofRenderer(small, d_small, dataclasses.replace(dof, radius_per_step=rps))
    # Per strength, one slice step and one canvas margin for all focus positions: with step = 1 / m
    # every integer focus sees the same slices, so their hidden-colour fills and FFTs are computed
    # once per strength instead of once per preview.
    columns, steps = [], []
    for s in strengths:
        step = 1.0 / max(1, round(1.0 / renderer.slice_step(s)))
        pad = renderer.pad_for(max(renderer.max_radius(f, s) for f in focus))
        columns.append([jpeg_uri(to_u8(renderer.render(f, s, aperture, step=step, pad=pad)), quality)
                        for f in focus])
        steps.append(step)
    grid = [list(row) for row in zip(*columns)]  # [focus][strength]
    click = click_depths(depth, (ph, pw))
    return PreviewGrid(
        grid=grid, aif=jpeg_uri(to_u8(small), quality), depth=jpeg_uri(colorize_depth(d_small.cpu().numpy()), quality),
        click=click.cpu().numpy().tolist(), focus=tuple(float(f) for f in focus),
        strengths=tuple(float(s) for s in strengths), size=(pw, ph), jpeg_quality=quality, slice_steps=steps,
        shape=aperture.name)
