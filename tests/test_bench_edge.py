"""`refocus bench --against-reference` (issue 21 item 3) on the tiny random refocuser: the reference
(the model folder, literal loop, torch) and an edge configuration (its ONNX bundle on the thin runtime)
alternate in one run; every stage is timed for both, the speed-up is their ratio, quality is LPIPS to
the truth of held-out stacks, and the report says which backend ran each component."""
from __future__ import annotations

import json

from refocus_edge.bench.edge import STAGES, EdgeBenchConfig, bars, run_edge_bench, write_edge_report


def test_edge_against_reference_on_the_tiny_model(random_model_dir, tiny_bundle, tmp_path, one_thread):
    cfg = EdgeBenchConfig(edge=str(tiny_bundle), reference=str(random_model_dir), backend="onnxruntime",
                          precision="fp32", rounds=2, warmup=0, count=1, positions=(0,), progress=False)
    result = run_edge_bench(cfg, log=lambda _m: None)
    assert len(result["rounds"]["reference"]) == len(result["rounds"]["edge"]) == 2
    for name in ("reference", "edge"):
        assert all(result["median"][name][k] > 0 for k in (*STAGES, "stack"))
        assert 0 < result["quality"][name]["lpips_large_jumps"] < 1
    # the reference is the literal loop: 2 UNet calls per guided step; the edge config batches them
    assert result["reference"]["unet_calls"] == 2 * result["edge"]["unet_calls"] == 8
    assert result["speedup"] == result["median"]["reference"]["stack"] / result["median"]["edge"]["stack"]
    assert {c["backend"] for c in result["edge"]["choices"]} == {"onnxruntime"}
    assert result["bars"]["speedup_met"] == (result["speedup"] >= 40)
    paths = write_edge_report(result, tmp_path / "out", "refocus bench --against-reference")
    assert json.loads(paths[0].read_text())["speedup"] == result["speedup"]
    text = paths[1].read_text()
    assert "| unet_total |" in text and "onnxruntime" in text and "Speed-up, whole stack" in text


def test_bars():
    result = {"speedup": 41.0, "quality": {"reference": {"lpips_large_jumps": 0.39},
                                           "edge": {"lpips_large_jumps": 0.40}}}
    assert bars(result) == {"speedup_at_least": 40.0, "speedup_met": True, "lpips_large_jumps_at_most": 0.39 + 0.02,
                            "quality_met": True}
    result["quality"]["edge"]["lpips_large_jumps"] = 0.42
    assert not bars(result)["quality_met"]
