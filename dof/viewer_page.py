"""The depth-of-field part of the self-contained viewer pages: a preview grid in, HTML out.

Two pages embed it: `refocus edit`'s viewer.html (the panel alone, :func:`edit_page`) and
`refocus run`'s viewer.html (the 9-frame stack slider first, then this panel; built by
:mod:`refocus_edge.app.outputs`). One builder, so the two pages look and behave alike: an image view, focus
and strength sliders snapping to the nearest precomputed preview, tabs to show the edit, the
all-in-focus image or the depth map, thumbnails of the latter two, a near/far legend for the depth
colours, and click-to-focus on a coarse depth grid.

Everything here is plain data and strings (no torch): :mod:`refocus_edge.dof.preview` computes the
:class:`PreviewGrid`, and :mod:`refocus_edge.app.outputs` can build pages without importing the renderer.
Every element id carries a prefix, so the panel can share a page with other controls.
"""
from __future__ import annotations

import html
import json
import math
import numbers
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from refocus_edge.dof.html_page import html_page
from refocus_edge.runtime.errors import InvalidArgumentError

from .colormap import legend_gradient

if TYPE_CHECKING:  # annotations only: this module builds pages without numpy work
    import numpy as np

__all__ = ["DofOutputs", "PreviewGrid", "PanelHtml", "dof_panel", "edit_page", "check_grid_axes", "DATA_ID"]

#: id (after the prefix) of the JSON block holding the grid; tests and tools read it from there.
DATA_ID = "dofData"


@dataclass(frozen=True)
class PreviewGrid:
    """Precomputed depth-of-field previews of one image, as a viewer embeds them.

    Attributes:
        grid: JPEG data URIs, ``grid[i][j]`` = focus ``focus[i]`` at strength ``strengths[j]``.
        aif: JPEG data URI of the all-in-focus image (strength 0) at preview size.
        depth: JPEG data URI of the colour-mapped depth at preview size.
        click: coarse depth (focus-index units) for click-to-focus, rows of floats.
        focus: the precomputed focus positions.
        strengths: the precomputed strengths (all > 0; strength 0 is the all-in-focus image).
        size: preview (W, H) in px.
        jpeg_quality: JPEG quality of the previews.
        slice_steps: depth-slice thickness used per strength (what the renderer shared).
        shape: aperture name.
    """

    grid: list
    aif: str
    depth: str
    click: list
    focus: tuple
    strengths: tuple
    size: tuple
    jpeg_quality: int
    slice_steps: list
    shape: str

    def __post_init__(self) -> None:
        # The page's script indexes grid[focus][strength] and click[row][col] without checks, so a
        # grid of the wrong shape would show the wrong preview (or none), not fail.
        check_grid_axes(self.focus, self.strengths)
        nf, ns = len(self.focus), len(self.strengths)
        if len(self.grid) != nf or any(len(row) != ns for row in self.grid):
            got = f"{len(self.grid)} x {sorted({len(row) for row in self.grid})}"
            raise InvalidArgumentError(f"grid must be len(focus) x len(strengths) = {nf} x {ns}, got {got}")
        uris = [u for row in self.grid for u in row] + [self.aif, self.depth]
        if not all(isinstance(u, str) and u.startswith("data:image/") for u in uris):
            raise InvalidArgumentError("grid, aif and depth must be image data URIs (data:image/...); "
                                       "the page embeds every image")
        if not self.click or not self.click[0] or any(len(row) != len(self.click[0]) for row in self.click):
            raise InvalidArgumentError("click must be a non-empty rectangular grid of depths (rows of floats)")
        if not all(_finite(v) for row in self.click for v in row):
            raise InvalidArgumentError("click holds NaN or infinite depths; build it from a finite depth map")
        if len(self.size) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                                          for v in self.size):
            raise InvalidArgumentError(f"size must be (W, H) in px, positive integers, got {self.size!r}")

    def info(self) -> dict:
        """What a record file (edit.json, run.json) keeps about the viewer."""
        return {"focus": list(self.focus), "strengths": list(self.strengths), "preview_size": list(self.size),
                "jpeg_quality": self.jpeg_quality, "slice_steps": list(self.slice_steps)}


@dataclass(frozen=True)
class PanelHtml:
    """The panel's three parts, for a page to place: style rules, body markup, script."""

    css: str
    body: str
    script: str


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def check_grid_axes(focus, strengths) -> None:
    """One-line errors for a grid's focus positions and strengths (checked before any rendering)."""
    focus, strengths = list(focus), list(strengths)
    if not focus or not all(_finite(f) for f in focus) or focus != sorted(focus):
        raise InvalidArgumentError(f"focus positions must be finite numbers, ascending (near to far), at least "
                                   f"one, got {focus!r}")
    if not strengths or not all(_finite(s) and float(s) > 0 for s in strengths):
        raise InvalidArgumentError(f"strengths must be numbers > 0, at least one, got {strengths!r} "
                                   "(strength 0 is the all-in-focus image; the viewer adds it)")


def _json_for_script(data) -> str:
    # Every "<" escaped: "</script" would end the element early and "<!--" can change how the rest
    # of it is parsed; JSON.parse reads \u003c back as "<". NaN is refused: JSON has no NaN, so
    # JSON.parse would fail and leave the whole panel dead.
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


#: What an element-id prefix may hold: it is pasted into ids, a radio group's name and a CSS selector.
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
#: Longest side of the big preview on screen (px), and the share of the window height it may take.
_VIEW_PX, _VIEW_VH = 480, 78


def dof_panel(previews: PreviewGrid, *, focus: float, strength: float, prefix: str = "",
              note: str = "") -> PanelHtml:
    """The depth-of-field panel of a viewer page.

    Args:
        previews: the precomputed grid.
        focus, strength: initial slider values (snapped to the nearest preview when shown).
        prefix: prepended to every element id and the radio group's name; empty, or a letter then
            letters, digits, "-" and "_".
        note: extra text for the caption under the panel (already plain text; escaped here).
    """
    if not isinstance(previews, PreviewGrid):
        raise InvalidArgumentError(f"previews must be a PreviewGrid, got {type(previews).__name__}")
    if not isinstance(prefix, str) or (prefix and not _PREFIX.fullmatch(prefix)):
        raise InvalidArgumentError(f"prefix must be empty or a letter followed by letters, digits, - or _, "
                                   f"got {prefix!r}")
    if not (_finite(focus) and _finite(strength) and float(strength) >= 0):
        raise InvalidArgumentError(f"focus must be a finite number and strength a number >= 0, "
                                   f"got focus {focus!r}, strength {strength!r}")
    p = prefix  # safe in attributes as it is (checked above)
    first, last = previews.focus[0], previews.focus[-1]
    max_s = max(previews.strengths)
    w, h = previews.size
    data = {
        "grid": previews.grid, "focus": list(previews.focus), "strengths": [0.0, *previews.strengths],
        "click": [[round(float(v), 2) for v in row] for row in previews.click],
    }
    strengths = ", ".join(f"{s:g}" for s in previews.strengths)
    shape = html.escape(previews.shape)
    # As wide as _VIEW_PX (small previews are scaled up), but never wider than the window, nor so
    # wide that a portrait preview runs off the bottom of it. The box keeps the previews' aspect
    # ratio (no letterboxing), which click-to-focus relies on: it maps the click's fraction of the
    # box to the same fraction of the depth grid.
    width = f"min({max(w, _VIEW_PX)}px, 95vw, {_VIEW_VH * w / h:.2f}vh)"
    css = f"""
.dof-view {{ display: block; width: {width}; height: auto; cursor: crosshair; aspect-ratio: {w} / {h}; }}
.dof-controls {{ width: {width}; min-width: min(320px, 95vw); display: grid; grid-template-columns: 6em 1fr 9em;
                gap: 6px 10px; align-items: center; }}
.dof-controls input[type=range] {{ width: 100%; margin: 0; }}
.dof-tabs {{ display: flex; gap: 14px; flex-wrap: wrap; }}
.dof-thumbs {{ display: flex; gap: 10px; flex-wrap: wrap; justify-content: center; }}
.dof-thumbs figure {{ margin: 0; text-align: center; }}
.dof-thumbs img {{ width: min(200px, 44vw); height: auto; display: block; }}
.dof-legend {{ display: flex; align-items: center; gap: 6px; justify-content: center; }}
.dof-ramp {{ display: inline-block; width: 120px; height: 10px; background: {legend_gradient()}; }}
.dof-note {{ color: #999; max-width: {width}; }}
"""
    aif_uri, depth_uri = html.escape(previews.aif, quote=True), html.escape(previews.depth, quote=True)
    # The sliders' accessible names differ from the stack slider's on `refocus run`'s page ("focus
    # position ..."), so a screen reader can tell the two focus controls apart.
    body = f"""<img id="{p}view" class="dof-view" alt="depth-of-field preview">
<div class="dof-controls">
<label for="{p}focus">focus</label>
<input id="{p}focus" type="range" min="{first:g}" max="{last:g}" step="0.01" value="{float(focus):g}"
       aria-label="re-render focus, {first:g} is near, {last:g} is far">
<span id="{p}focusLabel"></span>
<label for="{p}strength">strength</label>
<input id="{p}strength" type="range" min="0" max="{max_s:g}" step="0.01" value="{min(float(strength), max_s):g}"
       aria-label="re-render blur strength, 1 is the stack's own lens, 0 all in focus">
<span id="{p}strengthLabel"></span>
</div>
<div class="dof-tabs" role="radiogroup" aria-label="what to show">
<label><input type="radio" name="{p}show" value="edit" checked> refocused</label>
<label><input type="radio" name="{p}show" value="aif"> all in focus</label>
<label><input type="radio" name="{p}show" value="depth"> depth (near = warm)</label>
</div>
<div class="dof-thumbs">
<figure><img id="{p}aifThumb" src="{aif_uri}" alt="all-in-focus image">
<figcaption>all in focus</figcaption></figure>
<figure><img id="{p}depthThumb" src="{depth_uri}" alt="depth map, near warm, far cool"><figcaption>depth
<span class="dof-legend" id="{p}legend"><span>near</span><span class="dof-ramp"></span><span>far</span></span>
</figcaption></figure>
</div>
<small class="dof-note">Previews ({w}x{h}) are precomputed for focus {first:g}..{last:g} and strengths
{strengths}; the sliders show the nearest one. Click the image to focus there. Shape: {shape}.{
(" " + html.escape(note)) if note else ""}</small>
<script type="application/json" id="{p}{DATA_ID}">{_json_for_script(data)}</script>"""
    script = f"""(function () {{
  var P = {_json_for_script(prefix)};
  function el(id) {{ return document.getElementById(P + id); }}
  var D = JSON.parse(el("{DATA_ID}").textContent);
  var view = el("view"), fs = el("focus"), ss = el("strength");
  var fl = el("focusLabel"), sl = el("strengthLabel");
  var aif = el("aifThumb").src, depth = el("depthThumb").src;
  var radios = document.querySelectorAll('input[name="' + P + 'show"]');
  // Index of the entry of `list` nearest to v (the first of equals).
  function nearest(list, v) {{
    var best = 0;
    for (var i = 1; i < list.length; i++) if (Math.abs(list[i] - v) < Math.abs(list[best] - v)) best = i;
    return best;
  }}
  function mode() {{
    for (var i = 0; i < radios.length; i++) if (radios[i].checked) return radios[i].value;
    return "edit";
  }}
  function show() {{
    var m = mode();
    // D.strengths starts with 0 (the all-in-focus image), so strength index si is grid column si - 1.
    var fi = nearest(D.focus, parseFloat(fs.value)), si = nearest(D.strengths, parseFloat(ss.value));
    fl.textContent = "position " + D.focus[fi] + (fi === 0 ? " (near)" : fi === D.focus.length - 1 ? " (far)" : "");
    sl.textContent = si === 0 ? "0 (all in focus)" : D.strengths[si] + "x";
    // Screen readers announce the preview shown, not the raw slider value between two previews.
    fs.ariaValueText = fl.textContent;
    ss.ariaValueText = sl.textContent;
    var src = m === "aif" ? aif : m === "depth" ? depth : (si === 0 ? aif : D.grid[fi][si - 1]);
    if (view.src !== src) view.src = src;
    view.alt = m === "aif" || (m === "edit" && si === 0) ? "all-in-focus image"
      : m === "depth" ? "depth map, near warm, far cool"
      : "re-rendered with focus at position " + D.focus[fi] + ", strength " + D.strengths[si] + "x";
  }}
  fs.addEventListener("input", show);
  ss.addEventListener("input", show);
  for (var i = 0; i < radios.length; i++) radios[i].addEventListener("change", show);
  // Click to focus: the click's fraction of the displayed box picks the same fraction of the
  // depth grid, whatever size the image is shown at.
  view.addEventListener("click", function (e) {{
    var r = view.getBoundingClientRect();
    if (!(r.width > 0 && r.height > 0)) return;
    var rows = D.click.length, cols = D.click[0].length;
    var gy = Math.max(0, Math.min(rows - 1, Math.floor((e.clientY - r.top) / r.height * rows)));
    var gx = Math.max(0, Math.min(cols - 1, Math.floor((e.clientX - r.left) / r.width * cols)));
    fs.value = D.click[gy][gx];
    // At strength 0 every focus looks the same; take the strength nearest the lens's own so the
    // click shows.
    if (nearest(D.strengths, parseFloat(ss.value)) === 0 && D.strengths.length > 1)
      ss.value = D.strengths[1 + nearest(D.strengths.slice(1), 1)];
    for (var i = 0; i < radios.length; i++) radios[i].checked = radios[i].value === "edit";
    show();
  }});
  show();
}})();"""
    return PanelHtml(css=css, body=body, script=script)


def edit_page(previews: PreviewGrid, focus: float, strength: float) -> str:
    """`refocus edit`'s self-contained viewer: the panel alone, on a page of its own."""
    panel = dof_panel(previews, focus=focus, strength=strength)
    return html_page(f"Refocus Edge - depth of field ({previews.shape})", panel.css,
                     f"{panel.body}\n<script>\n{panel.script}\n</script>\n", gap_px=10)


@dataclass(frozen=True)
class DofOutputs:
    """Depth-of-field views of a stack, to be written next to its frames.

    Attributes:
        all_in_focus: uint8 [H, W, 3], the fused all-in-focus image (saved with the input's ICC profile).
        depth_rgb: uint8 [H, W, 3], depth colour-mapped near = warm .. far = cool
            (:func:`refocus_edge.dof.colormap.colorize_depth`).
        previews: the viewer's precomputed grid (:func:`refocus_edge.dof.preview.precompute_previews`).
        strength: the strength slider's initial value (the focus slider starts at the input position).
    """

    all_in_focus: np.ndarray
    depth_rgb: np.ndarray
    previews: PreviewGrid
    strength: float = 1.0


def check_viewer_params(max_side, quality) -> None:
    """One-line errors for the preview size and JPEG quality (checked before any work)."""
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 32:
        raise InvalidArgumentError(f"viewer_max_side must be an integer >= 32, got {max_side!r}")
    if isinstance(quality, bool) or not (isinstance(quality, int) and 1 <= quality <= 95):
        raise InvalidArgumentError(f"viewer_quality must be an integer 1..95, got {quality!r}")
