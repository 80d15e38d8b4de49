"""The viewers' depth-of-field layers: depth colours and legend, the click-to-focus grid, the preview
grid's checks, the panel's escaping and accessibility, and the panel's script driven by node against a
minimal DOM stand-in (clicks on a box shown at another size and offset than the previews)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from refocus_edge.dof.colormap import DEPTH_COLOURS, colorize_depth, legend_gradient
from refocus_edge.dof.preview import CLICK_GRID, click_depths
from refocus_edge.dof.viewer_page import DATA_ID, PreviewGrid, dof_panel, edit_page
from refocus_edge.runtime.errors import InvalidArgumentError

STRENGTHS = (0.5, 1.0, 2.0, 3.0)


def _grid(click=None, **changes) -> PreviewGrid:
    """A small valid grid whose URIs say which preview they are ("F<focus index>S<strength index>")."""
    fields = dict(
        grid=[[f"data:image/jpeg;base64,F{i}S{j}" for j in range(len(STRENGTHS))] for i in range(9)],
        aif="data:image/jpeg;base64,AIF", depth="data:image/jpeg;base64,DEPTH",
        click=click if click is not None else [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]],
        focus=tuple(float(i) for i in range(9)), strengths=STRENGTHS, size=(8, 4), jpeg_quality=80,
        slice_steps=[1.0] * len(STRENGTHS), shape="circle")
    fields.update(changes)
    return PreviewGrid(**fields)


def _data_block(page: str, prefix: str = "") -> dict:
    m = re.search(rf'<script type="application/json" id="{prefix}{DATA_ID}">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


# ------------------------------------------------------------------------------ depth colours


def test_depth_colours_run_near_warm_to_far_cool_and_the_legend_agrees():
    ramp = colorize_depth(np.linspace(0, 8, 33)[None]).astype(int)[0]
    assert tuple(ramp[0]) == tuple(DEPTH_COLOURS[0]) and tuple(ramp[-1]) == tuple(DEPTH_COLOURS[-1])
    assert ramp[0, 0] - ramp[0, 2] > 100 and ramp[-1, 2] - ramp[-1, 0] > 100  # near warm, far cool
    luma = ramp @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) < 0)  # one direction all the way: brighter is always nearer
    # Outside the stack's range: the end colours, infinities included.
    ends = colorize_depth(np.array([[-3.0, -np.inf, 11.0, np.inf]]))[0]
    assert (ends[:2] == ramp[0]).all() and (ends[2:] == ramp[-1]).all()
    # The legend reads left (near) to right (far) through the same colours.
    stops = re.findall(r"rgb\((\d+), (\d+), (\d+)\) ([\d.]+)%", legend_gradient())
    assert legend_gradient().startswith("linear-gradient(to right,")
    assert [tuple(map(int, s[:3])) for s in stops] == [tuple(map(int, c)) for c in DEPTH_COLOURS]
    assert float(stops[0][3]) == 0 and float(stops[-1][3]) == 100


def test_depth_colours_refuse_nan():
    with pytest.raises(InvalidArgumentError, match="NaN"):
        colorize_depth(np.array([[1.0, np.nan]]))
    with pytest.raises(InvalidArgumentError, match="num_positions"):
        colorize_depth(np.zeros((2, 2)), num_positions=1)


# ------------------------------------------------------------------------------ click grid


def test_click_grid_rows_are_y_and_edges_take_a_real_depth():
    # 60 x 100 map: left of column 37 at 1 (near), right of it at 7 above row 20, 4 below.
    depth = torch.full((60, 100), 1.0)
    depth[:20, 37:] = 7.0
    depth[20:, 37:] = 4.0
    click = click_depths(depth, (30, 50))  # preview 50x30: landscape, CLICK_GRID cells across
    assert tuple(click.shape) == (round(CLICK_GRID * 30 / 50), CLICK_GRID)
    assert click[0, 0] == 1.0 and click[0, -1] == 7.0 and click[-1, -1] == 4.0 and click[-1, 0] == 1.0
    # Cells straddling the edges hold a depth of one of their surfaces, never one in between
    # (block means gave e.g. 3.x on the near/far edge: a click there focused on neither).
    assert set(click.unique().tolist()) <= {1.0, 4.0, 7.0}
    # Portrait previews put CLICK_GRID cells down; maps smaller than the grid keep their own size.
    assert tuple(click_depths(torch.zeros(100, 60), (50, 30)).shape) == (CLICK_GRID, round(CLICK_GRID * 30 / 50))
    assert tuple(click_depths(torch.zeros(24, 32), (24, 32)).shape) == (24, 32)


# ------------------------------------------------------------------------------ grid checks


@pytest.mark.parametrize("changes, fragment", [
    (dict(strengths=(0.0, 1.0, 2.0, 3.0)), "strengths must be numbers > 0"),
    (dict(strengths=()), "strengths must be numbers > 0"),
    (dict(focus=(8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0)), "ascending"),
    (dict(focus=()), "focus positions"),
    (dict(grid=[["data:image/jpeg;base64,x"] * 4] * 8), "9 x 4"),
    (dict(aif="file:///etc/passwd"), "data URIs"),
    (dict(click=[[1.0, float("nan")]]), "NaN"),
    (dict(click=[[1.0, 2.0], [3.0]]), "rectangular"),
    (dict(size=(0, 4)), "size must be"),
])
def test_preview_grid_refuses_what_the_page_cannot_show(changes, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        _grid(**changes)


def test_precompute_previews_checks_its_axes_before_rendering():
    from refocus_edge.dof.aperture import parse_shape
    from refocus_edge.dof.bokeh import DofConfig
    from refocus_edge.dof.preview import precompute_previews

    aif, depth = torch.rand(3, 16, 16), torch.zeros(16, 16)
    with pytest.raises(InvalidArgumentError, match="strength 0 is the all-in-focus image"):
        precompute_previews(aif, depth, parse_shape("circle"), DofConfig(), max_side=32, strengths=(0.0, 1.0))


# ------------------------------------------------------------------------------ panel markup


def test_panel_escapes_names_and_script_data():
    shape = 'masks/a"b<c>&</script>.png'
    page = edit_page(_grid(shape=shape), focus=2, strength=1)
    assert "</script>.png" not in page and "&lt;/script&gt;.png" in page  # the note and the title
    panel = dof_panel(_grid(), focus=0, strength=1, prefix="p-", note='see </script><b>"x"</b>')
    assert "</script><b>" not in panel.body and "&lt;/script&gt;&lt;b&gt;" in panel.body
    # The data block holds no "<" at all, and reads back as strict JSON.
    block = re.search(r'id="p-dofData">(.*?)</script>', panel.body, re.S).group(1)
    assert "<" not in block and json.loads(block)["strengths"] == [0.0, *STRENGTHS]
    for prefix in ('a"b', "x</script>", "1x", "a b"):
        with pytest.raises(InvalidArgumentError, match="prefix"):
            dof_panel(_grid(), focus=0, strength=1, prefix=prefix)
    with pytest.raises(InvalidArgumentError, match="focus must be a finite number"):
        dof_panel(_grid(), focus=float("nan"), strength=1)


def test_panel_controls_are_labelled_and_distinct_from_the_stack_slider():
    page = edit_page(_grid(), focus=3, strength=1.5)
    for control in ("focus", "strength"):
        assert f'<label for="{control}">{control}</label>' in page
        label = re.search(rf'<input id="{control}"[^>]*aria-label="([^"]+)"', page).group(1)
        assert control in label and not label.startswith("focus position")  # the stack slider's name
    assert re.search(r'<img id="aifThumb"[^>]*alt="all-in-focus image"', page)
    assert re.search(r'<img id="depthThumb"[^>]*alt="depth map, near warm, far cool"', page)
    assert re.search(r'<img id="view"[^>]*alt="[^"]+"', page)
    # The slider's range is the grid's; the strength starts where asked (capped at the largest).
    assert 'min="0" max="8" step="0.01" value="3"' in page
    assert 'value="3"' in edit_page(_grid(), focus=0, strength=7).split('id="strength"')[1][:120]


# ------------------------------------------------------------------------------ the script, in node

_STUB = r"""
const fs = require("fs");
const page = fs.readFileSync(process.argv[2], "utf8");
const els = {};
function mk(id, props) {
  const e = Object.assign({id, on: {},
    addEventListener(t, f) { (this.on[t] = this.on[t] || []).push(f); },
    fire(t, ev) { (this.on[t] || []).forEach(f => f(ev || {target: this})); }}, props);
  return (els[id] = e);
}
const data = page.match(/<script type="application\/json" id="dofData">([\s\S]*?)<\/script>/)[1];
mk("dofData", {textContent: data});
// The view is shown at 600 x 300 px, 30 px from the left and 50 px from the top of the window.
mk("view", {src: "", alt: "", getBoundingClientRect() { return {left: 30, top: 50, width: 600, height: 300}; }});
mk("focus", {value: "2"}); mk("strength", {value: "0"});
mk("focusLabel", {}); mk("strengthLabel", {});
mk("aifThumb", {src: "data:image/jpeg;base64,AIF"}); mk("depthThumb", {src: "data:image/jpeg;base64,DEPTH"});
const radios = ["edit", "aif", "depth"].map((v, i) => mk("r" + v, {value: v, checked: v === "depth"}));
global.document = {getElementById: id => els[id], querySelectorAll: () => radios};
eval(page.match(/<script>\n([\s\S]*?)<\/script>/)[1]);
const view = els.view, out = {};
out.initial = view.src.endsWith("DEPTH");
// Click 60% across, 75% down: cell (row 1, column 2) of the 2 x 4 grid, depth 6.
view.fire("click", {clientX: 30 + 0.6 * 600, clientY: 50 + 0.75 * 300});
out.focus = els.focus.value;
out.strength = els.strength.value;  // was 0: raised to the lens's own, or the click would show nothing
out.tab = radios.filter(r => r.checked).map(r => r.value);
out.src = view.src.split(",")[1];
out.alt = view.alt;
out.valuetext = [els.focus.ariaValueText, els.strength.ariaValueText];
// The far bottom-right corner (exactly on the box's edge) stays in the last cell.
view.fire("click", {clientX: 630, clientY: 350});
out.corner = els.focus.value;
// Top-left, then a fractional slider value between two previews.
view.fire("click", {clientX: 31, clientY: 51});
out.topLeft = els.focus.value;
els.focus.value = "4.6"; els.strength.value = "2.4"; els.focus.fire("input");
out.slid = view.src.split(",")[1];
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_click_to_focus_maps_the_displayed_box_to_the_depth_grid(tmp_path):
    page = edit_page(_grid(), focus=2, strength=0)
    (tmp_path / "viewer.html").write_text(page)
    (tmp_path / "stub.js").write_text(_STUB)
    proc = subprocess.run(["node", str(tmp_path / "stub.js"), str(tmp_path / "viewer.html")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["initial"]
    assert out["focus"] == 6 and out["strength"] == 1 and out["tab"] == ["edit"]
    assert out["src"] == "F6S1"  # grid[focus 6][strength 1.0], strength 0 being the all-in-focus image
    assert "position 6" in out["alt"] and "1x" in out["alt"]
    assert out["valuetext"] == ["position 6", "1x"]
    assert out["corner"] == 7 and out["topLeft"] == 0
    assert out["slid"] == "F5S2"  # focus 4.6 -> 5, strength 2.4 -> 2


# ------------------------------------------------------------------------------ no focus cues


def test_stack_without_texture_gives_finite_views_and_strict_json(tmp_path):
    """A flat stack has zero confidence everywhere: the views must still be finite and the page's data
    and run.json's record strict JSON (a NaN would leave the panel dead)."""
    from refocus_edge.dof.stack_views import StackViewsConfig, stack_views

    views = stack_views(np.full((9, 24, 40, 3), 128, np.uint8), StackViewsConfig(viewer_max_side=32))
    assert views.record["mean_confidence"] == 0.0
    json.dumps(views.record, allow_nan=False)
    page = edit_page(views.outputs.previews, focus=4, strength=1)
    assert np.isfinite(np.asarray(_data_block(page)["click"])).all()
