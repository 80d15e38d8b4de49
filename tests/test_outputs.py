"""Writing a finished focal stack (runtime.outputs): files, viewer, --force, atomicity."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from runtime import outputs
from runtime.errors import InvalidArgumentError, OutputExistsError
from runtime.image_io import load_photo
from runtime.outputs import RESULT_NAMES, check_output_dir, write_stack

H, W = 24, 32


def _frames(seed=0) -> np.ndarray:
    """Nine distinct frames, so a replaced frame is visibly different."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (9, H, W, 3), dtype=np.uint8)


def _write(out, frames=None, *, force=False, icc=None, pos=4, meta=None):
    return write_stack(
        out, _frames() if frames is None else frames,
        icc_profile=icc, input_position=pos, metadata=meta or {"seed": 1}, force=force,
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
