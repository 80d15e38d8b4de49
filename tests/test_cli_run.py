"""`refocus run` end to end through the CLI, on a tiny random refocuser: the happy
path, every bad input the user can hit (one line, exit 2, no traceback, no
partial output), and the awkward-but-valid photos that must simply work."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from refocus_edge.cli.main import main

FRAMES = [f"frame_{i}.png" for i in range(9)]
DOF_FILES = ["all_in_focus.png", "depth.png"]


def _photo(path: Path, mode="RGB", size=(96, 72), **save):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)
    im.save(path, **save)
    return path


def _run(args, capsys, dof=True):
    # dof=False for tests about the input photo: the depth-of-field views cost time and are tested apart.
    code = main(["run", *map(str, args), "--quiet", *([] if dof else ["--no-dof"])])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_clean_failure(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("refocus: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_happy_path_writes_stack_animation_viewer(random_model_dir, tmp_path, capsys):
    photo = _photo(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    code = main(["run", str(photo), "--model", str(random_model_dir), "--out", str(out), "--seed", "3"])
    _, err = capsys.readouterr()
    assert code == 0
    for name in FRAMES + DOF_FILES + ["focus_sweep.gif", "viewer.html", "run.json"]:
        assert (out / name).is_file(), name
    assert Image.open(out / "frame_0.png").size == (64, 64)  # the model's fixed working size
    meta = json.loads((out / "run.json").read_text())
    assert meta["position"] == 4 and meta["unet_calls"] == 4 and meta["guidance"] == 1.5
    # The report names model, resolution, guidance, steps, per-stage time; the default is announced.
    assert "default: --position not given" in err
    for word in ("model", "64x64", "guidance 1.5", "4 Euler steps", "unet_total", "vae_decode", "dof "):
        assert word in err, word
    # Depth-of-field views: written, recorded, in the viewer (tests/test_outputs.py checks the page).
    assert set(DOF_FILES) <= set(meta["files"]) and meta["files"][-1] == "run.json"
    for name in DOF_FILES:
        assert Image.open(out / name).size == (64, 64)
    assert meta["dof"]["viewer"]["preview_size"] == [64, 64] and meta["dof"]["shape"] == "circle"
    assert set(meta["dof"]["timings_s"]) == {"all_in_focus", "depth", "previews"} and "dof" in meta["timings_s"]
    # run.json lists exactly the files on disk, and so does the `wrote` line.
    assert sorted(meta["files"]) == sorted(p.name for p in out.iterdir())
    wrote = next(line for line in err.splitlines() if line.startswith("wrote"))
    assert "frame_0.png .. frame_8.png" in wrote
    assert all(name in wrote for name in meta["files"] if not name.startswith("frame_"))
    page = (out / "viewer.html").read_text()
    assert page.index('id="stack"') < page.index('id="dof-view"')
    assert page.count("data:image/jpeg;base64,") == 9 * 4 + 2
    # The panel's data is strict JSON (a NaN would stop the page's script) and is the grid run.json records.
    block = page.split('<script type="application/json" id="dof-dofData">')[1].split("</script>")[0]
    data = json.loads(block, parse_constant=lambda c: pytest.fail(f"{c} in the viewer's data"))
    viewer = meta["dof"]["viewer"]
    assert data["focus"] == viewer["focus"] and data["strengths"] == [0.0, *viewer["strengths"]]
    assert len(data["grid"]) == len(data["focus"]) and {len(r) for r in data["grid"]} == {len(data["strengths"]) - 1}
    # The page's two focus sliders (stack, re-render) have different accessible names.
    labels = re.findall(r'<input id="(?:dof-)?focus"[^>]*aria-label="([^"]+)"', page)
    assert len(labels) == 2 and labels[0] != labels[1]
    # The same images `refocus edit` computes from the folder: one analysis for both commands.
    assert main(["edit", str(out), "--focus", "4", "--quiet"]) == 0
    capsys.readouterr()
    for name in DOF_FILES:
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(out / "edit" / name))), name


def test_the_models_notes_reach_the_log(random_model_dir, tmp_path, capsys):
    """What the loader says about the model (here: the UNet taken from another folder; for a bundle: why
    it serves its export size) is printed, not only written to run.json."""
    out = tmp_path / "out"
    code = main(["run", str(_photo(tmp_path / "photo.jpg")), "--model", str(random_model_dir), "--unet",
                 str(random_model_dir / "unet"), "--out", str(out), "--no-dof"])
    _, err = capsys.readouterr()
    assert code == 0
    note = f"UNet from {random_model_dir / 'unet'}"
    assert note in json.loads((out / "run.json").read_text())["notes"]
    assert f"note      {note}" in err.splitlines()


def test_no_dof_skips_the_views(random_model_dir, tmp_path, capsys):
    # (a forced --no-dof run over one with views removes the old ones: tests/test_outputs.py)
    photo = _photo(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    code = main(["run", str(photo), "--model", str(random_model_dir), "--out", str(out), "--no-dof"])
    _, err = capsys.readouterr()
    assert code == 0
    assert not any((out / name).exists() for name in DOF_FILES)
    meta = json.loads((out / "run.json").read_text())
    assert "dof" not in meta and not set(DOF_FILES) & set(meta["files"]) and "dof" not in meta["timings_s"]
    page = (out / "viewer.html").read_text()
    assert "dof-" not in page and page.count("data:image/png;base64,") == 9
    assert "dof " not in err and "all_in_focus.png" not in err


def test_a_failure_in_the_dof_views_costs_the_views_not_the_stack(random_model_dir, tmp_path, capsys,
                                                                   monkeypatch):
    import refocus_edge.dof.stack_views as views_mod

    def broken(*_a, **_k):
        raise RuntimeError("simulated failure in the depth-of-field views")

    monkeypatch.setattr(views_mod, "stack_views", broken)
    photo = _photo(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    code = main(["run", str(photo), "--model", str(random_model_dir), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0
    for name in FRAMES + ["focus_sweep.gif", "viewer.html", "run.json"]:
        assert (out / name).is_file(), name
    assert not any((out / name).exists() for name in DOF_FILES)
    meta = json.loads((out / "run.json").read_text())
    assert "dof" not in meta and sorted(meta["files"]) == sorted(p.name for p in out.iterdir())
    assert any("simulated failure" in n and f"refocus edit {out} --focus 4" in n for n in meta["notes"])
    assert "warning   depth-of-field views skipped (RuntimeError: simulated failure" in err
    # The warned-about command really does make the views from the written folder.
    assert main(["edit", str(out), "--focus", str(meta["position"]), "--quiet"]) == 0
    capsys.readouterr()
    assert all((out / "edit" / name).is_file() for name in DOF_FILES)


def test_help_documents_no_dof(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-dof" in text and "all_in_focus.png" in text and "depth.png" in text


def test_icc_profile_is_kept(random_model_dir, tmp_path, capsys):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = _photo(tmp_path / "icc.png", icc_profile=icc)
    out = tmp_path / "out"
    assert _run([photo, "--model", random_model_dir, "--out", out], capsys)[0] == 0
    assert Image.open(out / "frame_3.png").info.get("icc_profile") == icc
    assert Image.open(out / "all_in_focus.png").info.get("icc_profile") == icc
    assert "icc_profile" not in Image.open(out / "depth.png").info


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "directory", "missing"])
def test_unreadable_inputs_fail_cleanly(random_model_dir, tmp_path, capsys, kind):
    path = tmp_path / "input.jpg"
    if kind == "text":
        path.write_text("this is not a picture\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "directory":
        path.mkdir()
    out = tmp_path / "out"
    code, _, err = _run([path, "--model", random_model_dir, "--out", out], capsys)
    _assert_clean_failure(code, err, str(path))
    assert not out.exists()


@pytest.mark.parametrize("kind", ["grayscale", "alpha", "16bit", "cmyk", "exif"])
def test_awkward_but_valid_photos_work(random_model_dir, tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "grayscale":
        _photo(path, "L")
    elif kind == "alpha":
        _photo(path, "RGBA")
    elif kind == "16bit":
        Image.fromarray((np.arange(96 * 72).reshape(72, 96) * 9).astype(np.uint16)).save(path)
    elif kind == "cmyk":
        path = _photo(tmp_path / "cmyk.jpg", "CMYK")
    elif kind == "exif":
        path = tmp_path / "exif.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6
        _photo(path, size=(96, 48), exif=exif)
    out = tmp_path / "out"
    code, _, err = _run([path, "--model", random_model_dir, "--out", out], capsys, dof=False)
    assert code == 0, err
    assert len(list(out.glob("frame_*.png"))) == 9
    meta = json.loads((out / "run.json").read_text())
    if kind == "exif":
        assert any("EXIF" in n or "orientation" in n.lower() for n in meta["notes"]), meta["notes"]


def test_huge_image_is_resized_not_rejected(random_model_dir, tmp_path, capsys):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (12000, 9000), (40, 90, 160)).save(path, quality=50)
    out = tmp_path / "out"
    code, _, err = _run([path, "--model", random_model_dir, "--out", out], capsys, dof=False)
    assert code == 0, err
    meta = json.loads((out / "run.json").read_text())
    assert any("12000x9000" in n for n in meta["notes"])


@pytest.mark.parametrize("position", ["9", "-1"])
def test_position_outside_range(random_model_dir, tmp_path, capsys, position):
    out = tmp_path / "out"
    code, _, err = _run([_photo(tmp_path / "p.jpg"), "--model", random_model_dir, "--out", out,
                         f"--position={position}"], capsys)
    _assert_clean_failure(code, err, "outside 0..8")
    assert not out.exists()


def test_model_folder_with_missing_part(random_model_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(random_model_dir, broken)
    shutil.rmtree(broken / "image_encoder")
    out = tmp_path / "out"
    code, _, err = _run([_photo(tmp_path / "p.jpg"), "--model", broken, "--out", out], capsys)
    _assert_clean_failure(code, err, "image_encoder/")
    assert not out.exists()


def test_existing_frames_refused_then_forced(random_model_dir, tmp_path, capsys):
    photo = _photo(tmp_path / "p.jpg")
    out = tmp_path / "out"
    assert _run([photo, "--model", random_model_dir, "--out", out, "--seed", "1"], capsys)[0] == 0
    before = (out / "frame_0.png").read_bytes()
    code, _, err = _run([photo, "--model", random_model_dir, "--out", out, "--seed", "2"], capsys)
    _assert_clean_failure(code, err, "--force")
    assert (out / "frame_0.png").read_bytes() == before
    assert _run([photo, "--model", random_model_dir, "--out", out, "--seed", "2", "--force"], capsys)[0] == 0
    assert (out / "frame_0.png").read_bytes() != before


def test_interrupted_run_leaves_old_results_intact(random_model_dir, tmp_path, capsys, monkeypatch):
    photo = _photo(tmp_path / "p.jpg")
    out = tmp_path / "out"
    assert _run([photo, "--model", random_model_dir, "--out", out], capsys)[0] == 0
    snapshot = {p.name: p.read_bytes() for p in out.iterdir()}

    import refocus_edge.runtime.sampler as sampler

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sampler, "decode_latents", interrupted)
    code, _, err = _run([photo, "--model", random_model_dir, "--out", out, "--seed", "5", "--force"], capsys)
    assert code == 130 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_console_script_reports_bad_input_without_traceback(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "refocus_edge.cli", "run", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr


def test_models_lists_shipped_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.strip()
