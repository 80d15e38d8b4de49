"""`refocus run` against faults (issue 20): checks before work, one-line errors for every I/O fault,
nothing partial, one writer per output folder."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from PIL import Image

from refocus_edge.cli.main import main
from lock_holder import lock_held_elsewhere
from test_cli_run import _assert_clean_failure, _photo, _run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_seed_out_of_range_is_refused_at_parse_time(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(_photo(tmp_path / "p.jpg")), "--seed", str(2 ** 64)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "seed must be in 0..18446744073709551615" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["run", str(_photo(tmp_path / "p.jpg")), "--steps", "0"])
    assert "expected an integer >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0x64", "100x64", "64x16384", "64"])
def test_sizes_out_of_range_are_refused_at_parse_time(tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exc:
        main(["export", "onnx", "--out", str(tmp_path / "b"), "--resolution", size])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    expected = "must look like 512x320" if "x" not in size else "each side must be a multiple of 8 from 8 to 8192"
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_far_too_many_steps_ask_for_force_before_sampling(random_model_dir, tmp_path, capsys, monkeypatch):
    import refocus_edge.runtime.sampler as sampler

    monkeypatch.setattr(sampler, "sample_focal_stack", lambda *a, **k: pytest.fail("sampled anyway"))
    out = tmp_path / "out"
    code, _, err = _run([_photo(tmp_path / "p.jpg"), "--model", random_model_dir, "--out", out,
                         "--steps", "10000"], capsys)
    _assert_clean_failure(code, err, "--steps 10000 is 2500x this model's own 4 steps", "--force")
    assert not out.exists()


def test_a_read_only_output_is_refused_before_any_work(random_model_dir, tmp_path, capsys, monkeypatch):
    import refocus_edge.runtime.loading as loading

    monkeypatch.setattr(loading, "load_refocuser", lambda *a, **k: pytest.fail("loaded the model anyway"))
    parent = tmp_path / "ro"
    parent.mkdir()
    real_access = os.access
    # As root, permission bits do not stop writes; a read-only mount is what this simulates.
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == parent else real_access(p, mode))
    code, _, err = _run([_photo(tmp_path / "p.jpg"), "--model", random_model_dir, "--out", parent / "out"], capsys)
    _assert_clean_failure(code, err, str(parent), "read-only or not writable", "pick another output folder")


def test_disk_full_while_writing_is_one_line_and_keeps_the_earlier_result(random_model_dir, tmp_path, capsys,
                                                                          monkeypatch):
    photo, out = _photo(tmp_path / "p.jpg"), tmp_path / "out"
    assert _run([photo, "--model", random_model_dir, "--out", out], capsys, dof=False)[0] == 0
    before = _snapshot(out)
    real_save = Image.Image.save

    def full(self, fp, *a, **k):
        if str(fp).endswith("frame_5.png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", full)
    code, _, err = _run([photo, "--model", random_model_dir, "--out", out, "--seed", "9", "--force"],
                        capsys, dof=False)
    _assert_clean_failure(code, err, "frame_5.png: No space left on device (ENOSPC)", "free some space")
    assert _snapshot(out) == before  # the earlier result, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "p.jpg"]  # no staging, no lock file


def test_a_second_run_into_the_same_folder_fails_at_once_naming_the_first(random_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with lock_held_elsewhere(out) as pid:
        code, _, err = _run([_photo(tmp_path / "p.jpg"), "--model", random_model_dir, "--out", out], capsys)
        _assert_clean_failure(code, err, str(out), f"pid {pid} is writing this folder now", "--wait")
    assert not out.exists()


def test_too_little_free_space_is_refused_before_sampling(random_model_dir, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    import refocus_edge.runtime.sampler as sampler

    monkeypatch.setattr(sampler, "sample_focal_stack", lambda *a, **k: pytest.fail("sampled anyway"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9 - 2 ** 20, 2 ** 20))
    out = tmp_path / "out"
    code, _, err = _run([_photo(tmp_path / "p.jpg"), "--model", random_model_dir, "--out", out], capsys)
    _assert_clean_failure(code, err, "not enough free space", "1.0 MiB are free", "pick another output folder")
    assert not out.exists()


def test_the_size_estimate_bounds_a_real_result(random_model_dir, tmp_path, capsys):
    from refocus_edge.app.outputs import result_bytes_estimate

    out = tmp_path / "out"
    assert _run([_photo(tmp_path / "p.jpg"), "--model", random_model_dir, "--out", out], capsys)[0] == 0
    written = sum(p.stat().st_size for p in out.iterdir())
    w, h = Image.open(out / "frame_0.png").size
    assert written <= result_bytes_estimate(w, h)
