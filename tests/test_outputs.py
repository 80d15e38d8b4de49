"""Writing a finished focal stack (refocus_edge.app.outputs): files, viewer, --force, atomicity, and the
depth-of-field views (all_in_focus.png, depth.png, the viewer's panel) when a run has them."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from refocus_edge.app import outputs
from refocus_edge.runtime.errors import InvalidArgumentError, OutputExistsError
from refocus_edge.runtime.image_io import load_photo
from refocus_edge.app.outputs import RESULT_NAMES, check_output_dir, write_stack

H, W = 24, 32


def _frames(seed=0) -> np.ndarray:
    """Nine distinct frames, so a replaced frame is visibly different."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (9, H, W, 3), dtype=np.uint8)


def _write(out, frames=None, *, force=False, icc=None, pos=4, meta=None, dof=None):
    return write_stack(
        out, _frames() if frames is None else frames,
        icc_profile=icc, input_position=pos, metadata=meta or {"seed": 1}, force=force, dof=dof,
    )


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _no_staging_left(parent):
    return not [p.name for p in parent.iterdir() if ".staging-" in p.name]


def test_writes_all_results(tmp_path):
    out = tmp_path / "run1"
    frames = _frames()
    paths = _write(out, frames, meta={"model": "tiny", "steps": 4})
    assert [p.name for p in paths] == RESULT_NAMES and all(p.parent == out.absolute() for p in paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_NAMES)
    for i in range(9):
        with Image.open(out / f"frame_{i}.png") as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), frames[i])
    with Image.open(out / "focus_sweep.gif") as gif:
        assert gif.n_frames == 16  # 0..8 then 7..1: near -> far -> near
        assert gif.info["loop"] == 0 and gif.info["duration"] == outputs.GIF_FRAME_MS == 120
    record = json.loads((out / "run.json").read_text())
    assert record == {"model": "tiny", "steps": 4, "files": RESULT_NAMES}
    assert _no_staging_left(tmp_path)


def test_viewer_is_self_contained(tmp_path):
    out = tmp_path / "v"
    _write(out, pos=3)
    page = (out / "viewer.html").read_text()
    assert page.count("data:image/png;base64,") == 9
    assert re.search(r'<input[^>]*type="range"[^>]*min="0"[^>]*max="8"[^>]*value="3"', page)
    assert ">near<" in page and ">far<" in page and "input" in page
    assert "ArrowLeft" in page and "ArrowRight" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "<script src" not in page
    # Exactly the input frame is shown initially.
    assert re.search(r'<img id="f3"[^>]*alt="focus position 3">', page)
    assert page.count(" hidden>") == 8


def test_icc_profile_carried_from_input_to_frames(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(tmp_path / "in.png", icc_profile=srgb)
    photo = load_photo(tmp_path / "in.png")
    _write(tmp_path / "out", icc=photo.icc_profile)
    for name in ("frame_0.png", "frame_8.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.info.get("icc_profile") == srgb


def test_check_output_dir_refuses_existing_frames(tmp_path):
    out = tmp_path / "out"
    check_output_dir(out, force=False)  # missing folder: fine
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    check_output_dir(out, force=False)  # folder without frames: fine
    (out / "frame_0.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError) as info:
        check_output_dir(out, force=False)
    msg = str(info.value)
    assert str(out) in msg and "--force" in msg and "--out" in msg and "\n" not in msg
    check_output_dir(out, force=True)


def test_check_output_dir_rejects_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidArgumentError):
        check_output_dir(tmp_path / "f", force=True)


def test_write_without_force_leaves_existing_run_alone(tmp_path):
    out = tmp_path / "out"
    _write(out, _frames(0))
    before = _snapshot(out)
    with pytest.raises(OutputExistsError):
        _write(out, _frames(1))
    assert _snapshot(out) == before and _no_staging_left(tmp_path)


def test_force_replaces_results_and_keeps_user_files(tmp_path):
    out = tmp_path / "out"
    _write(out, _frames(0))
    (out / "notes.txt").write_text("keep me")
    (out / "frame_9.png").write_bytes(b"stale")  # from some older, longer run
    (out / "frame_backup.png").write_bytes(b"user")  # not ours: must stay
    new = _frames(1)
    _write(out, new, force=True, meta={"run": 2})
    with Image.open(out / "frame_5.png") as im:
        assert np.array_equal(np.asarray(im), new[5])
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "frame_backup.png").read_bytes() == b"user"
    assert not (out / "frame_9.png").exists()
    assert json.loads((out / "run.json").read_text())["run"] == 2
    assert _no_staging_left(tmp_path)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interruption_before_publishing_leaves_old_run_untouched(tmp_path, monkeypatch, exc):
    out = tmp_path / "out"
    _write(out, _frames(0))
    (out / "notes.txt").write_text("keep me")
    before = _snapshot(out)
    staged = []

    def boom(*args, **kwargs):
        # By now the frames and the GIF are already staged.
        staged.extend(p for p in tmp_path.iterdir() if ".staging-" in p.name and (p / "frame_8.png").exists())
        raise exc("interrupted")

    monkeypatch.setattr(outputs, "_viewer_html", boom)
    with pytest.raises(exc):
        _write(out, _frames(1), force=True)
    assert len(staged) == 1  # staging really had started, with every frame in it
    assert _snapshot(out) == before
    assert _no_staging_left(tmp_path)


def test_interruption_on_fresh_folder_creates_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "_viewer_html", boom)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "frames, pos",
    [
        (np.zeros((8, H, W, 3), np.uint8), 0),  # wrong count
        (np.zeros((9, H, W, 3), np.float32), 0),  # wrong dtype
        (np.zeros((9, H, W), np.uint8), 0),  # no channel axis
        (np.zeros((9, H, W, 4), np.uint8), 0),  # RGBA
        (np.zeros((9, H, W, 3), np.uint8), 9),  # position out of range
    ],
)
def test_invalid_inputs_rejected_before_touching_disk(tmp_path, frames, pos):
    with pytest.raises(InvalidArgumentError):
        _write(tmp_path / "out", frames, pos=pos)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- depth-of-field views


class _Page(HTMLParser):
    """Elements of a viewer page by id, and the text of each <script>, in document order."""

    def __init__(self):
        super().__init__()
        self.by_id, self.order, self.scripts, self._in = {}, [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        a["_tag"] = tag
        if "id" in a:
            self.by_id[a["id"]] = a
            self.order.append(a["id"])
        if tag == "section" and "class" in a:
            self.order.append("section." + a["class"])
        if tag == "script":
            self._in = a.get("id", "")
            self.scripts.append([self._in, ""])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self.scripts[-1][1] += data


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    return p


def _decode(uri: str, kind: str) -> Image.Image:
    head, _, payload = uri.partition(",")
    assert head == f"data:image/{kind};base64", head
    im = Image.open(io.BytesIO(base64.b64decode(payload)))
    im.load()
    assert im.format == kind.upper()
    return im


@pytest.fixture(scope="module")
def dof_views():
    """Depth-of-field views of the test frames (tiny: previews at the frames' own 32x24)."""
    from refocus_edge.dof.stack_views import StackViewsConfig, stack_views

    return stack_views(_frames(), StackViewsConfig(viewer_max_side=32))


def test_dof_views_written_recorded_and_in_the_viewer(tmp_path, dof_views):
    from PIL import ImageCms

    from refocus_edge.dof.preview import VIEWER_FOCUS, VIEWER_STRENGTHS

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = tmp_path / "run"
    paths = _write(out, icc=srgb, pos=2, meta={"dof": dof_views.record}, dof=dof_views.outputs)
    assert [p.name for p in paths] == outputs.RESULT_NAMES_WITH_DOF
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs.RESULT_NAMES_WITH_DOF)
    record = json.loads((out / "run.json").read_text())
    assert record["files"] == outputs.RESULT_NAMES_WITH_DOF and record["files"][-1] == "run.json"
    assert {"all_in_focus.png", "depth.png"} <= set(record["files"])
    assert record["dof"]["viewer"]["preview_size"] == [W, H]
    with Image.open(out / "all_in_focus.png") as im:
        assert im.size == (W, H) and im.mode == "RGB" and im.info.get("icc_profile") == srgb
        assert np.array_equal(np.asarray(im), dof_views.outputs.all_in_focus)
    with Image.open(out / "depth.png") as im:  # data, not a photo: no ICC profile
        assert im.size == (W, H) and im.mode == "RGB" and "icc_profile" not in im.info
        assert np.array_equal(np.asarray(im), dof_views.outputs.depth_rgb)

    page = (out / "viewer.html").read_text()
    doc = _parse(page)
    # the stack slider stays the first view; the depth-of-field section follows it
    assert doc.order.index("stack") < doc.order.index("focus") < doc.order.index("section.dof")
    assert doc.order.index("section.dof") < doc.order.index("dof-view")
    assert page.count(" hidden>") == 8 and page.count("data:image/png;base64,") == 9
    # all-in-focus image and depth map, at the preview size
    for thumb in ("dof-aifThumb", "dof-depthThumb"):
        assert _decode(doc.by_id[thumb]["src"], "jpeg").size == (W, H)
    assert "near" in page[page.index('id="dof-legend"'):][:200] and "linear-gradient" in page
    # live controls: focus 0..8 starting at the input position, strength starting at 1
    f, s = doc.by_id["dof-focus"], doc.by_id["dof-strength"]
    assert f["type"] == s["type"] == "range"
    assert (f["min"], f["max"], f["value"]) == ("0", "8", "2")
    assert float(s["max"]) == max(VIEWER_STRENGTHS) and float(s["value"]) == 1.0
    # the precomputed grid: one JPEG per focus x strength, each at the preview size
    data = json.loads(dict(doc.scripts)["dof-dofData"])
    assert data["focus"] == list(VIEWER_FOCUS) and data["strengths"] == [0.0, *VIEWER_STRENGTHS]
    assert len(data["grid"]) == 9 and all(len(row) == len(VIEWER_STRENGTHS) for row in data["grid"])
    assert {_decode(u, "jpeg").size for row in data["grid"] for u in row} == {(W, H)}
    assert page.count("data:image/jpeg;base64,") == 9 * len(VIEWER_STRENGTHS) + 2
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    # the stack's arrow keys leave the other sliders alone
    assert 't !== slider && (t.tagName === "INPUT"' in page


def test_force_without_dof_views_removes_the_old_ones(tmp_path, dof_views):
    out = tmp_path / "out"
    _write(out, dof=dof_views.outputs)
    (out / "notes.txt").write_text("keep me")
    paths = _write(out, _frames(1), force=True)
    assert [p.name for p in paths] == RESULT_NAMES
    assert not (out / "all_in_focus.png").exists() and not (out / "depth.png").exists()
    assert (out / "notes.txt").read_text() == "keep me"
    page = (out / "viewer.html").read_text()
    assert "dof-" not in page and "data:image/jpeg" not in page
    # and back: a forced run with views brings them back
    _write(out, _frames(2), force=True, dof=dof_views.outputs)
    assert (out / "all_in_focus.png").is_file() and (out / "depth.png").is_file()
    assert _no_staging_left(tmp_path)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interruption_while_writing_dof_views_leaves_old_run_untouched(tmp_path, monkeypatch, exc, dof_views):
    out = tmp_path / "out"
    _write(out, dof=dof_views.outputs)
    before = _snapshot(out)
    staged = []

    def boom(*args, **kwargs):
        # By now the frames, all_in_focus.png and depth.png are staged.
        staged.extend(p for p in tmp_path.iterdir() if ".staging-" in p.name and (p / "depth.png").exists())
        raise exc("interrupted")

    monkeypatch.setattr(outputs, "dof_panel", boom)
    with pytest.raises(exc):
        _write(out, _frames(1), force=True, dof=dof_views.outputs)
    assert len(staged) == 1
    assert _snapshot(out) == before and _no_staging_left(tmp_path)
    with pytest.raises(exc):
        _write(tmp_path / "new", dof=dof_views.outputs)
    assert not (tmp_path / "new").exists() and _no_staging_left(tmp_path)


def test_dof_views_of_another_size_rejected_before_touching_disk(tmp_path, dof_views):
    import dataclasses

    small = dataclasses.replace(dof_views.outputs, depth_rgb=dof_views.outputs.depth_rgb[:10])
    with pytest.raises(InvalidArgumentError, match="depth_rgb must be uint8"):
        _write(tmp_path / "out", dof=small)
    with pytest.raises(InvalidArgumentError, match="DofOutputs"):
        _write(tmp_path / "out", dof={"all_in_focus": None})
    assert list(tmp_path.iterdir()) == []


_DOM_STUB = r"""
const fs = require("fs");
const [page, data] = [fs.readFileSync(process.argv[2], "utf8"), fs.readFileSync(process.argv[3], "utf8")];
const els = {}, docKeys = [];
function mk(id, props) {
  const e = Object.assign({id, tagName: "INPUT", hidden: false, on: {},
    addEventListener(t, f) { (this.on[t] = this.on[t] || []).push(f); },
    fire(t, ev) { (this.on[t] || []).forEach(f => f(ev || {target: this})); },
    getBoundingClientRect() { return {top: 0, left: 0, width: 100, height: 100}; }}, props);
  return (els[id] = e);
}
for (let i = 0; i < 9; i++) mk("f" + i, {tagName: "IMG", hidden: i !== 2});
mk("focus", {value: "2"}); mk("label", {}); mk("dof-dofData", {textContent: data});
mk("dof-view", {tagName: "IMG", src: ""}); mk("dof-focus", {value: "2"}); mk("dof-strength", {value: "1"});
mk("dof-focusLabel", {}); mk("dof-strengthLabel", {});
mk("dof-aifThumb", {src: "AIF"}); mk("dof-depthThumb", {src: "DEPTH"});
const radios = ["edit", "aif", "depth"].map((v, i) => mk("r" + v, {value: v, checked: i === 0}));
global.document = {getElementById: id => els[id], querySelectorAll: () => radios,
                   addEventListener: (t, f) => docKeys.push(f)};
for (const m of page.matchAll(/<script>\n([\s\S]*?)<\/script>/g)) eval(m[1]);
const D = JSON.parse(data), view = els["dof-view"], out = {};
out.initial = view.src === D.grid[2][1];
els["dof-focus"].value = "6.4"; els["dof-focus"].fire("input");
els["dof-strength"].value = "2.7"; els["dof-strength"].fire("input");
out.slid = view.src === D.grid[6][3];
els["dof-strength"].value = "0.1"; els["dof-strength"].fire("input");
out.strength0 = view.src === "AIF";
radios[0].checked = false; radios[2].checked = true; radios[2].fire("change");
out.depthTab = view.src === "DEPTH";
docKeys.forEach(f => f({key: "ArrowRight", target: els["dof-focus"], preventDefault() {}}));
out.stackKeptOnDofKeys = els.focus.value == 2 && !els.f2.hidden;
docKeys.forEach(f => f({key: "ArrowRight", target: {tagName: "BODY"}, preventDefault() {}}));
out.stackMovesOtherwise = els.focus.value == 3 && !els.f3.hidden && els.f2.hidden;
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's scripts")
def test_viewer_scripts_drive_both_views(tmp_path, dof_views):
    """The page's own scripts, run by node against a minimal DOM stand-in: the sliders pick the
    nearest preview, strength 0 and the tabs show the all-in-focus image and the depth map, and the
    stack's arrow keys leave the depth-of-field sliders alone."""
    import subprocess

    out = tmp_path / "run"
    _write(out, pos=2, dof=dof_views.outputs)
    page = (out / "viewer.html").read_text()
    (tmp_path / "data.json").write_text(dict(_parse(page).scripts)["dof-dofData"])
    (tmp_path / "stub.js").write_text(_DOM_STUB)
    proc = subprocess.run(["node", str(tmp_path / "stub.js"), str(out / "viewer.html"), str(tmp_path / "data.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result and all(result.values()), result
