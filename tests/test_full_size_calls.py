"""The full-size per-call benchmark's parts that run at any size (benchmarks/full_size_calls.py):
the matrix-product graphs its peaks are measured on compute what they say (the int8 one within its
quantization error), the fixed-range cache lets the project's quantizer write a QDQ graph without
calibrating, a child stage is watched and reported, and the report reads a result."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.full_size_calls import _fixed_ranges, _matmul_graphs, best_graph_route, report


def test_the_peak_graphs_and_a_fixed_range_int8_graph(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")
    import onnx
    from dataclasses import replace

    from refocus_edge.quantization.qdq import quantize_graph
    from refocus_edge.quantization.recipes import get_recipe

    graphs = _matmul_graphs(64)
    x = np.random.default_rng(1).uniform(-3, 3, (64, 64)).astype(np.float32)
    w = onnx.numpy_helper.to_array(onnx.load(str(graphs["fp32"])).graph.initializer[0])
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(graphs["fp32"]), x @ w, rtol=1e-4, atol=1e-3)
    ref = x @ w
    assert np.abs(run(graphs["int8"]) - ref).max() < 0.05 * np.abs(ref).max()  # int8 rounding, not garbage

    cache = tmp_path / "ranges.json"
    _fixed_ranges(graphs["fp32"], cache)
    out = quantize_graph(graphs["fp32"], tmp_path / "q.onnx", replace(get_recipe("int8"), calibration_method="MinMax"),
                         cache=cache, input_names=["x"])  # no feeds: the cache stands in for calibration
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") >= 1 and "MatMul" in ops
    # every tensor quantized on [-8, 8]: the product is right where it lies inside, clipped outside
    assert np.abs(run(out) - np.clip(ref, -8, 8)).max() < 1.0  # steps of 16/255 on x and y


def test_a_watched_child_and_the_report(tmp_path):
    from benchmarks.watched_child import watch

    run = watch("benchmarks.full_size_calls", ["--child", "peaks", "--matmul", "128"], 4096, 300, tmp_path / "p.err")
    assert run["returncode"] == 0 and not run["killed"]
    peaks = run["stages"]
    assert {(s["library"], s["precision"]) for s in peaks} >= {("torch", "fp32"), ("torch", "bf16")}
    assert all(s["gflops"] > 0 for s in peaks)
    called = lambda s: {"stages": [{"stage": "called", "best_s": s, "finite": True}], "peak_rss_mib_sampled": 1024}  # noqa: E731
    res = {"command": "python -m benchmarks.full_size_calls", "width": 512, "height": 320, "threads": 2,
           "repeats": 2, "uptime_start": "-", "uptime_end": "-", "peaks": run,
           "flops": {"unet": 6e12, "full": 1.7e13, "tiny": 4.8e10},
           "unet_quantize_int8-sym": {"stages": [{"stage": "quantized", "seconds": 80.0, "calibrated": False}],
                                      "peak_rss_mib_sampled": 7168},
           "unet": {"torch bf16": called(8.0), "openvino bf16": called(4.0), "openvino int8-sym": called(5.0),
                    "torch.compile bf16": {"stages": [{"stage": "called", "best_s": 7.0, "warmup_s": 190.0,
                                                       "finite": True}], "peak_rss_mib_sampled": 1024},
                    "openvino int8": {"stages": [], "peak_rss_mib_sampled": 0, "killed": "killed at 20 GiB"}},
           "decoders": {"tiny openvino-bf16": called(0.1)}}
    text = report(res)
    assert "openvino bf16, 4.00 s = 0.50x torch bf16 eager" in text
    # an int8 route that is fast but far from fp32 computes something else: never the best route
    fast_wrong = {"stages": [{"stage": "called", "best_s": 2.0, "finite": True, "rel_l2_to_fp32": 0.41}],
                  "peak_rss_mib_sampled": 1024}
    right = {"stages": [{"stage": "called", "best_s": 3.0, "finite": True, "rel_l2_to_fp32": 0.05}],
             "peak_rss_mib_sampled": 1024}
    # a bf16 route's far smaller error is not the yardstick for the int8 routes
    close_bf16 = {"stages": [{"stage": "called", "best_s": 4.0, "finite": True, "rel_l2_to_fp32": 0.0126}],
                  "peak_rss_mib_sampled": 1024}
    other = report({**res, "unet": {**res["unet"], "openvino bf16": close_bf16, "openvino int8-sym": fast_wrong,
                                    "openvino int8-ov": right}})
    assert "openvino int8-ov, 3.00 s = 0.38x torch bf16 eager" in other
    assert "| openvino int8-sym | 2.00 s | 0.25x |" in other and "| 0.41 |" in other
    assert "wrong results): openvino int8-sym." in other
    # the duel is fought by the fastest graph route that computes the UNet, and reported by its median ratio
    unet = {**res["unet"], "openvino bf16": close_bf16, "openvino int8-sym": fast_wrong, "openvino int8-ov": right}
    assert best_graph_route(unet) == "openvino int8-ov"
    assert best_graph_route({"torch bf16": called(8.0), "torch.compile bf16": called(1.0)}) is None
    duel = {"route": "openvino int8-ov", "stages": [{"stage": "duel", "torch_s": [8.0, 10.0, 9.0],
                                                     "route_s": [4.4, 4.0, 5.4], "ratios": [0.55, 0.4, 0.6]}]}
    dueled = report({**res, "unet": unet, "duel": duel})
    assert "openvino int8-ov / torch bf16 per round **median 0.55x** (min 0.40, max 0.60)" in dueled
    assert "median call 4.40 s against 9.00 s" in dueled
    failed = report({**res, "duel": {"route": "openvino int8-ov", "stages": [], "killed": "killed at 20 GiB"}})
    assert "Interleaved duel with openvino int8-ov: killed at 20 GiB." in failed
    assert "| openvino int8 | - |" in text and "killed at 20 GiB" in text
    assert "| torch.compile bf16 | 7.00 s | 0.88x |" in text and "first call (compiles) 190 s" in text
    assert "| openvino int8-sym | 5.00 s | 0.62x | 1200 |" in text  # its share of the measured int8 peak
    assert "int8-sym QDQ quantization (fixed ranges, no calibration): 80.0 s, peak 7.0 GiB" in text
    assert "| tiny | openvino-bf16 | 0.10 s | 480 |" in text
