"""The quality and latency benchmarks run end to end on the tiny random refocuser.

The numbers mean nothing here (random weights); these tests check the plumbing:
table shapes, the identity baseline's exact zeros, the large-jump and own-frame
averages, the depth-from-focus rank correlations on both evaluation sets, the
report files, and that every latency stage is timed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.latency import END_TO_END, STAGES, measure_stages, write_latency_report
from benchmarks.quality import LARGE_JUMP, evaluate_quality, main as quality_main, spearman, write_quality_report
from refocus_edge.runtime.errors import InvalidArgumentError, MissingDependencyError
from refocus_edge.runtime.metrics import lpips as lp

POSITIONS = [0, 8]


def _need_lpips_weights():
    try:
        lp.weights_path("alex")
    except MissingDependencyError as exc:
        pytest.skip(f"LPIPS weights unavailable: {exc}")


@pytest.fixture(scope="module")
def quality(random_model_dir, one_thread) -> dict:
    _need_lpips_weights()
    return evaluate_quality(str(random_model_dir), count=1, positions=POSITIONS, seed=0, mode="fast",
                            progress=False)


@pytest.fixture(scope="module")
def quality_photos(random_model_dir, one_thread) -> dict:
    _need_lpips_weights()
    return evaluate_quality(str(random_model_dir), count=2, positions=[8], seed=0, mode="fast",
                            progress=False, eval_set="photos")


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
    own = quality["own_frame"]
    assert own["cells"] == len(POSITIONS) and own["baseline"] == 0.0
    assert own["model"] == pytest.approx(np.mean([model[r, k] for r, k in enumerate(POSITIONS)]))
    vae = np.array(quality["vae_roundtrip"])
    assert own["vae_roundtrip"] == pytest.approx(vae[POSITIONS].mean())
    assert quality["large_jump"]["vae_roundtrip"] == pytest.approx(np.broadcast_to(vae, model.shape)[jump].mean())
    assert quality["set"] == "synthetic" and quality["stacks"] == [f"heldout/{quality['scene_seeds'][0]}"]


def _check_depth_rank(res: dict, count: int, positions: int):
    dr, per = res["depth_rank"], res["per_stack"]
    assert np.array(per["depth_rank_model"]).shape == (count, positions) and len(dr["model_per_position"]) == positions
    assert len(per["depth_rank_ground_truth"]) == count
    assert dr["model"] == pytest.approx(np.mean(per["depth_rank_model"]))
    assert dr["ground_truth"] == pytest.approx(np.mean(per["depth_rank_ground_truth"]))
    assert -1.0 <= dr["model"] <= 1.0
    # Depth from focus on a true stack recovers the depth ordering well (the reference the model is read against).
    assert dr["ground_truth"] > 0.5


def test_quality_depth_rank(quality):
    _check_depth_rank(quality, 1, len(POSITIONS))


def test_quality_photo_set(quality_photos, tmp_path):
    res = quality_photos
    assert res["set"] == "photos" and res["stacks"] == ["stereo_motorcycle/00", "retina/00"]
    assert np.array(res["model_table"]).shape == (1, 9) and res["large_jump"]["cells"] == 5
    assert res["own_frame"]["cells"] == 1 and res["own_frame"]["model"] == pytest.approx(res["model_table"][0][8])
    _check_depth_rank(res, 2, 1)
    assert "--set photos" in res["command"]
    paths = write_quality_report(res, tmp_path)
    md = paths["markdown"].read_text()
    assert "photo stacks" in md and "stereo_motorcycle/00" in md and f"{res['depth_rank']['ground_truth']:.3f}" in md
    assert json.loads(paths["json"].read_text())["depth_rank"] == res["depth_rank"]


def test_spearman_known_inputs():
    a = np.arange(10.0)
    assert spearman(a, a ** 3) == pytest.approx(1.0)  # any increasing map: perfect
    assert spearman(a, -np.exp(a)) == pytest.approx(-1.0)  # reversed
    assert spearman(a, np.full(10, 2.5)) == 0.0 and spearman(np.zeros((3, 3)), np.ones((3, 3))) == 0.0  # constant
    # Ties take their average rank; checked against the textbook formula on ranks worked out by hand.
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]  # ranks of x: 1, 2.5, 2.5, 4
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4.0])
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert spearman(np.array([[3, 1], [2, 0]]), np.array([[30, 10], [20, 0]])) == pytest.approx(1.0)  # any shape
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        spearman([1, np.nan], [1, 2])


def test_depth_rank_of_a_stack_without_focus_change_is_zero(one_thread):
    from benchmarks.quality import _depth_from_focus, _depth_rank
    from refocus_edge.focalstacks.photo_stacks import PhotoFocalStacks

    item = PhotoFocalStacks((48, 48), length=1)[0]
    assert _depth_rank(_depth_from_focus(item["frames"]), item["depth"].numpy()) > 0.5  # the true stack
    identity = item["frames"][4:5].expand(9, -1, -1, -1).contiguous()  # what the identity baseline outputs
    assert _depth_rank(_depth_from_focus(identity), item["depth"].numpy()) == 0.0


def test_quality_rejects_bad_set_and_count(random_refocuser):
    from refocus_edge.focalstacks.photo_stacks import EVAL_PHOTOS

    with pytest.raises(InvalidArgumentError, match="set"):
        evaluate_quality(random_refocuser, count=1, positions=[0], eval_set="imagenet")
    with pytest.raises(InvalidArgumentError, match="count"):
        evaluate_quality(random_refocuser, count=sum(EVAL_PHOTOS.values()) + 1, positions=[0], eval_set="photos")


def test_quality_report_files(quality, tmp_path):
    from PIL import Image

    paths = write_quality_report(quality, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["model_table"] == quality["model_table"] and "_examples" not in saved
    md = paths["markdown"].read_text()
    assert "| F1 (k=0) |" in md and "| F9 (k=8) |" in md and quality["command"] in md
    assert f"{quality['large_jump']['model']:.3f}" in md and f"{quality['own_frame']['model']:.3f}" in md
    assert f"{quality['depth_rank']['model']:.3f}" in md and "held-out synthetic stacks" in md
    with Image.open(paths["figure"]) as im:
        assert im.width > 9 * 64 and im.height > 7 * 64  # 2 positions x (GT, model, baseline) rows + depth row


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


def test_a_validation_start_gives_held_out_stacks_the_tables_never_use():
    from benchmarks.quality import _eval_stacks
    from refocus_edge.focalstacks.photo_stacks import photo_stack_specs
    from refocus_edge.runtime.errors import InvalidArgumentError

    first, names = _eval_stacks("synthetic", (32, 32), 2)
    later, later_names = _eval_stacks("synthetic", (32, 32), 2, start=64)
    assert names == ["heldout/10000000", "heldout/10000001"] and later_names == ["heldout/10000064", "heldout/10000065"]
    assert len(later) == 2 and later[0]["seed"] == 10000064
    assert not np.array_equal(np.asarray(first[0]["frames"]), np.asarray(later[0]["frames"]))
    photos, photo_names = _eval_stacks("photos", (32, 32), 2, start=8)
    assert photo_names == [s.name for s in photo_stack_specs()[8:10]] and len(photos) == 2
    with pytest.raises(InvalidArgumentError, match="start must be in"):
        _eval_stacks("synthetic", (32, 32), 2, start=255)
    with pytest.raises(InvalidArgumentError, match="start must be in"):
        _eval_stacks("photos", (32, 32), 2, start=19)
