"""The quality and latency benchmarks run end to end on the tiny random refocuser.

The numbers mean nothing here (random weights); these tests check the plumbing:
table shapes, the identity baseline's exact zeros, the large-jump average, the
report files, and that every latency stage is timed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.latency import END_TO_END, STAGES, measure_stages, write_latency_report
from benchmarks.quality import LARGE_JUMP, evaluate_quality, main as quality_main, write_quality_report
from runtime.errors import InvalidArgumentError, MissingDependencyError
from runtime.metrics import lpips as lp

POSITIONS = [0, 8]


@pytest.fixture(scope="module")
def quality(random_model_dir, one_thread) -> dict:
    try:
        lp.weights_path("alex")
    except MissingDependencyError as exc:
        pytest.skip(f"LPIPS weights unavailable: {exc}")
    return evaluate_quality(str(random_model_dir), count=1, positions=POSITIONS, seed=0, mode="fast",
                            progress=False)


def test_quality_tables(quality):
    model, base = np.array(quality["model_table"]), np.array(quality["baseline_table"])
    assert model.shape == base.shape == (len(POSITIONS), 9)
    assert np.array(quality["per_stack"]["model"]).shape == (1, len(POSITIONS), 9)
    assert len(quality["vae_roundtrip"]) == 9
    assert np.isfinite(model).all() and (model >= 0).all() and (base >= 0).all()
    for r, k in enumerate(POSITIONS):
        assert base[r, k] == 0.0  # the input frame compared with itself
        assert (np.delete(base[r], k) > 0).all()  # every other focal position differs
    jump = np.abs(np.arange(9)[None] - np.array(POSITIONS)[:, None]) >= LARGE_JUMP
    assert quality["large_jump"]["cells"] == 10
    assert quality["large_jump"]["model"] == pytest.approx(model[jump].mean())
    assert quality["large_jump"]["baseline"] == pytest.approx(base[jump].mean())
    assert quality["large_jump"]["model_beats_baseline"] == (model[jump].mean() < base[jump].mean())
    assert quality["all_cells"]["model"] == pytest.approx(model.mean())
    assert quality["size"] == [64, 64] and quality["unet_calls_per_stack"] == 4


def test_quality_report_files(quality, tmp_path):
    from PIL import Image

    paths = write_quality_report(quality, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["model_table"] == quality["model_table"] and "_examples" not in saved
    md = paths["markdown"].read_text()
    assert "| F1 (k=0) |" in md and "| F9 (k=8) |" in md and quality["command"] in md
    assert f"{quality['large_jump']['model']:.3f}" in md
    with Image.open(paths["figure"]) as im:
        assert im.width > 9 * 64 and im.height > 6 * 64  # 2 positions x (GT, model, baseline) rows


def test_quality_rejects_bad_position(random_refocuser):
    with pytest.raises(InvalidArgumentError, match="positions"):
        evaluate_quality(random_refocuser, count=1, positions=[9])


def test_quality_cli(quality, random_model_dir, tmp_path):
    out = tmp_path / "q"
    argv = ["--model", str(random_model_dir), "--count", "1", "--positions", "4", "--out", str(out)]
    assert quality_main(argv) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["positions"] == [4] and saved["command"].endswith(f"--out {out}")
    assert (out / "quality.md").is_file() and (out / "quality.png").is_file()


def test_measure_stages(random_refocuser, one_thread, tmp_path):
    from PIL import Image

    res = measure_stages(random_refocuser, repeats=1, warmup=0)
    assert list(res["stages"]) == list(STAGES)
    for s in res["stages"].values():
        assert 0 < s["min_s"] <= s["median_s"] <= s["max_s"]
    assert res["unet_calls"] == {"end_to_end_reference": 8, "end_to_end_fast": 4, "diffusers_baseline": 8}
    # Same seed and maths in every end-to-end variant, or the timings compare different work.
    for name in END_TO_END[1:]:
        assert res["max_abs_diff_vs_reference"][name] < 1e-3
    assert res["peak_rss_mib"] > 0
    paths = write_latency_report(res, tmp_path)
    assert json.loads(paths["json"].read_text())["stages"].keys() == res["stages"].keys()
    assert "diffusers_baseline" in paths["markdown"].read_text()
    with Image.open(paths["figure"]) as im:
        assert im.width > 0
