"""The depth-of-field part of the self-contained viewer pages: a preview grid in, HTML out.

Two pages embed it: `refocus edit`'s viewer.html (the panel alone, :func:`edit_page`) and
`refocus run`'s viewer.html (the 9-frame stack slider first, then this panel; built by
:mod:`runtime.outputs`). One builder, so the two pages look and behave alike: an image view, focus
and strength sliders snapping to the nearest precomputed preview, tabs to show the edit, the
all-in-focus image or the depth map, thumbnails of the latter two, a near/far legend for the depth
colours, and click-to-focus on a coarse depth grid.

Everything here is plain data and strings (no torch): :mod:`runtime.dof.preview` computes the
:class:`PreviewGrid`, and :mod:`runtime.outputs` can build pages without importing the renderer.
Every element id carries a prefix, so the panel can share a page with other controls.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass

from .colormap import legend_gradient

__all__ = ["PreviewGrid", "PanelHtml", "dof_panel", "edit_page", "DATA_ID"]

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


def _json_for_script(data) -> str:
    # "</" would end the <script> element early; JSON allows "\/" for "/".
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def dof_panel(previews: PreviewGrid, *, focus: float, strength: float, prefix: str = "",
              note: str = "") -> PanelHtml:
    """The depth-of-field panel of a viewer page.

    Args:
        previews: the precomputed grid.
        focus, strength: initial slider values (snapped to the nearest preview when shown).
        prefix: prepended to every element id and the radio group's name.
        note: extra text for the caption under the panel (already plain text; escaped here).
    """
    p = html.escape(prefix, quote=True)
    last = max(previews.focus) if previews.focus else 0
    max_s = max(previews.strengths)
    w, h = previews.size
    data = {
        "grid": previews.grid, "focus": list(previews.focus), "strengths": [0.0, *previews.strengths],
        "click": [[round(float(v), 2) for v in row] for row in previews.click],
    }
    strengths = ", ".join(f"{s:g}" for s in previews.strengths)
    shape = html.escape(previews.shape)
    width = f"min({max(w, 480)}px, 95vw)"
    css = f"""
.dof-view {{ display: block; width: {width}; height: auto; cursor: crosshair; aspect-ratio: {w} / {h}; }}
.dof-controls {{ width: {width}; display: grid; grid-template-columns: 6em 1fr 9em; gap: 6px 10px;
                align-items: center; }}
.dof-controls input[type=range] {{ width: 100%; margin: 0; }}
.dof-tabs {{ display: flex; gap: 14px; flex-wrap: wrap; }}
.dof-thumbs {{ display: flex; gap: 10px; flex-wrap: wrap; justify-content: center; }}
.dof-thumbs figure {{ margin: 0; text-align: center; }}
.dof-thumbs img {{ width: min(200px, 44vw); height: auto; display: block; }}
.dof-legend {{ display: flex; align-items: center; gap: 6px; justify-content: center; }}
.dof-ramp {{ display: inline-block; width: 120px; height: 10px; background: {legend_gradient()}; }}
.dof-note {{ color: #999; max-width: {width}; }}
"""
    body = f"""<img id="{p}view" class="dof-view" alt="depth-of-field preview">
<div class="dof-controls">
<label for="{p}focus">focus</label>
<input id="{p}focus" type="range" min="0" max="{last:g}" step="0.01" value="{focus:g}"
       aria-label="focus position, 0 is near, {last:g} is far">
<span id="{p}focusLabel"></span>
<label for="{p}strength">strength</label>
<input id="{p}strength" type="range" min="0" max="{max_s:g}" step="0.01" value="{min(strength, max_s):g}"
       aria-label="blur strength, 1 is the stack's own lens">
<span id="{p}strengthLabel"></span>
</div>
<div class="dof-tabs" role="radiogroup" aria-label="what to show">
<label><input type="radio" name="{p}show" value="edit" checked> refocused</label>
<label><input type="radio" name="{p}show" value="aif"> all in focus</label>
<label><input type="radio" name="{p}show" value="depth"> depth (near = warm)</label>
</div>
<div class="dof-thumbs">
<figure><img id="{p}aifThumb" src="{previews.aif}" alt="all-in-focus image">
<figcaption>all in focus</figcaption></figure>
<figure><img id="{p}depthThumb" src="{previews.depth}" alt="depth map, near warm, far cool"><figcaption>depth
<span class="dof-legend" id="{p}legend"><span>near</span><span class="dof-ramp"></span><span>far</span></span>
</figcaption></figure>
</div>
<small class="dof-note">Previews ({w}x{h}) are precomputed for focus {previews.focus[0]:g}..{last:g} and strengths
{strengths}; the sliders show the nearest one. Click the image to focus there. Shape: {shape}.{
(" " + html.escape(note)) if note else ""}</small>
<script type="application/json" id="{p}{DATA_ID}">{_json_for_script(data)}</script>"""
    script = f"""(function () {{
  var P = {json.dumps(prefix)};
  function el(id) {{ return document.getElementById(P + id); }}
  var D = JSON.parse(el("{DATA_ID}").textContent);
  var view = el("view"), fs = el("focus"), ss = el("strength");
  var fl = el("focusLabel"), sl = el("strengthLabel");
  var aif = el("aifThumb").src, depth = el("depthThumb").src;
  var radios = document.querySelectorAll('input[name="' + P + 'show"]');
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
    var fi = nearest(D.focus, parseFloat(fs.value)), si = nearest(D.strengths, parseFloat(ss.value));
    fl.textContent = "position " + D.focus[fi] + (fi === 0 ? " (near)" : fi === D.focus.length - 1 ? " (far)" : "");
    sl.textContent = si === 0 ? "0 (all in focus)" : D.strengths[si] + "x";
    var src = m === "aif" ? aif : m === "depth" ? depth : (si === 0 ? aif : D.grid[fi][si - 1]);
    if (view.src !== src) view.src = src;
  }}
  fs.addEventListener("input", show);
  ss.addEventListener("input", show);
  for (var i = 0; i < radios.length; i++) radios[i].addEventListener("change", show);
  view.addEventListener("click", function (e) {{
    var r = view.getBoundingClientRect();
    var gy = Math.min(D.click.length - 1, Math.floor((e.clientY - r.top) / r.height * D.click.length));
    var gx = Math.min(D.click[0].length - 1, Math.floor((e.clientX - r.left) / r.width * D.click[0].length));
    fs.value = D.click[Math.max(0, gy)][Math.max(0, gx)];
    radios[0].checked = true;
    show();
  }});
  show();
}})();"""
    return PanelHtml(css=css, body=body, script=script)


def edit_page(previews: PreviewGrid, focus: float, strength: float) -> str:
    """`refocus edit`'s self-contained viewer: the panel alone, on a page of its own."""
    panel = dof_panel(previews, focus=focus, strength=strength)
    from runtime.html_page import html_page

    return html_page(f"Refocus Edge - depth of field ({previews.shape})", panel.css,
                     f"{panel.body}\n<script>\n{panel.script}\n</script>\n", gap_px=10)
