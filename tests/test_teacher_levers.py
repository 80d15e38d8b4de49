"""benchmarks/teacher_levers.py on the tiny random model: levers train side by side for the same
minutes, every result and the starting teacher are probed and measured in reference mode, and a
second call resumes instead of training again."""
from __future__ import annotations

import json

import numpy as np


def test_levers_train_for_equal_minutes_and_are_measured(random_model_dir, tmp_path):
    from benchmarks.teacher_levers import main

    data = tmp_path / "stacks.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (2, 9, 64, 64, 3), dtype=np.uint8))
    args = ["--levers", "baseline", "own-frame", "--minutes", "0.1", "--init", str(random_model_dir),
            "--data", str(data), "--count", "1", "--positions", "0", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert set(res) == {"start", "baseline", "own-frame"}
    for name in ("baseline", "own-frame"):
        run = json.loads((tmp_path / "work" / name / "unet_run.json").read_text())
        assert run["minutes"] == 0.1 and run["threads"] == 1
        assert run["config"]["own_weight"] == (4.0 if name == "own-frame" else 1.0)
    for r in res.values():
        assert 0 <= r["large_jump"] <= 1 and set(r["probe"]) == {"700.0", "20.0", "1.0"}
    table = (tmp_path / "out" / "levers.md").read_text()
    assert "| own-frame | the input's own frame counts 4x" in table
    # Again: nothing is trained twice and the measurements are reused.
    before = (tmp_path / "work" / "baseline" / "unet_run.json").stat().st_mtime
    assert main(args) == 0
    assert (tmp_path / "work" / "baseline" / "unet_run.json").stat().st_mtime == before


def test_missing_training_stacks_say_how_to_make_them(tmp_path, capsys):
    from benchmarks.teacher_levers import main

    assert main(["--data", str(tmp_path / "none.npy"), "--work", str(tmp_path / "w")]) == 2
    assert "python -m training.train_tiny data" in capsys.readouterr().err
