"""The backend benchmark (bench/backends.py, `refocus bench`) on the tiny random bundle.

Numbers mean nothing here (random weights, 2 steps, 1 repeat); these tests check
the plumbing: one fresh process per backend, the JSON structure, drift against
torch fp32 (0 for torch itself, tiny for ONNX Runtime fp32), the report files,
and the model-folder and bad-argument paths.
"""
from __future__ import annotations

import importlib.util
import json

import pytest

from refocus_edge.bench.backends import (BASELINE, END_TO_END, REFERENCE, STAGES, BackendBenchConfig, plan_bench,
                                 run_backend_bench, write_backend_report)
from refocus_edge.runtime.errors import InvalidArgumentError, ModelLoadError, MissingDependencyError
from refocus_edge.runtime.metrics import lpips as lp

pytest.importorskip("onnxruntime")

STEPS = 2


@pytest.fixture(scope="module")
def result(tiny_bundle) -> dict:
    try:
        lp.weights_path("alex")
    except MissingDependencyError as exc:
        pytest.skip(f"LPIPS weights unavailable: {exc}")
    cfg = BackendBenchConfig(bundle=tiny_bundle, precisions=("fp32",), repeats=1, warmup=0, count=1,
                             positions=(0,), steps=STEPS, threads=1, progress=False)
    return run_backend_bench(cfg)


def test_runs_and_structure(result):
    runs = result["runs"]
    # fp16 not asked for; openvino runs the fp32 graphs too where it is installed
    openvino = ["openvino/fp32"] if importlib.util.find_spec("openvino") else []
    assert list(runs) == [REFERENCE, "onnxruntime/fp32", *openvino, BASELINE]
    assert all(r["status"] == "ok" for r in runs.values()), {k: r.get("error") for k, r in runs.items()}
    assert result["steps"] == STEPS and result["size"] == [64, 64] and result["isolated"]
    stages = [*STAGES, "vae_decode_8", "vae_decode_1", *END_TO_END]
    for key in (REFERENCE, "onnxruntime/fp32"):
        run = runs[key]
        assert list(run["stages"]) == stages
        for s in run["stages"].values():
            assert s["runs"] == 1 and 0 < s["min_s"] <= s["median_s"] <= s["max_s"]
        assert run["speedup"]["fast_vs_reference"] > 0 and run["speedup"]["fast_vs_diffusers_baseline"] > 0
        assert run["memory"]["peak_rss_mib"] >= run["memory"]["rss_after_load_mib"] > 0
    assert runs[REFERENCE]["speedup"]["fast_vs_torch_fast"] == 1.0
    assert set(runs["onnxruntime/fp32"]["devices"]) == {"image_encoder", "vae_encoder", "unet",
                                                         "vae_decoder_8", "vae_decoder_1"}
    assert all(d.startswith("onnxruntime") for d in runs["onnxruntime/fp32"]["devices"].values())
    assert runs[BASELINE]["stages"][BASELINE]["median_s"] > 0
    # Backends that cannot run here are listed with their reason, not silently dropped.
    for name, why in result["skipped"].items():
        assert why, name


def test_drift(result):
    runs = result["runs"]
    torch_drift, ort_drift = runs[REFERENCE]["drift"], runs["onnxruntime/fp32"]["drift"]
    assert torch_drift["per_frame"] == [0.0] * 9 and torch_drift["max_abs_pixel"] == 0.0
    assert len(ort_drift["per_frame"]) == 9 and ort_drift["max"] < 1e-3
    assert ort_drift["max_abs_pixel"] < 1e-3
    assert "drift" not in runs[BASELINE]
    assert result["drift_setup"]["missing"] is None
    # Same image and seed: the ONNX graphs and the plain diffusers loop do the same maths as torch.
    assert runs["onnxruntime/fp32"]["max_abs_diff_vs_torch_reference_mode"] < 1e-3
    assert runs[BASELINE]["max_abs_diff_vs_torch_reference_mode"] < 1e-3


def test_report_files(result, tmp_path):
    from PIL import Image

    paths = write_backend_report(result, tmp_path)
    assert json.loads(paths["json"].read_text())["runs"].keys() == result["runs"].keys()
    md = paths["markdown"].read_text()
    assert "| end_to_end_fast |" in md and "onnxruntime/fp32" in md and "Drift vs torch fp32" in md
    for key in ("figure", "drift_figure"):
        with Image.open(paths[key]) as im:
            assert im.format == "PNG" and im.width > 300


def test_model_folder_measures_torch_only(random_model_dir):
    plan = plan_bench(BackendBenchConfig(bundle=random_model_dir))
    assert [j.key for j in plan.jobs] == [REFERENCE, BASELINE] and not plan.is_bundle
    assert "export" in plan.notes[0]
    with pytest.raises(ModelLoadError, match="refocus export onnx"):
        plan_bench(BackendBenchConfig(bundle=random_model_dir, backends=("onnxruntime",)))


def test_bad_arguments(tiny_bundle):
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        plan_bench(BackendBenchConfig(bundle=tiny_bundle, backends=("nope",)))
    with pytest.raises(InvalidArgumentError, match="positions"):
        plan_bench(BackendBenchConfig(bundle=tiny_bundle, positions=(9,)))
    with pytest.raises(InvalidArgumentError, match="repeats"):
        plan_bench(BackendBenchConfig(bundle=tiny_bundle, repeats=0))


def test_in_process_torch_only(tiny_bundle):
    """--no-isolate: one process, and the report says the peak is process-wide."""
    res = run_backend_bench(BackendBenchConfig(bundle=tiny_bundle, backends=("torch",), repeats=1, warmup=0,
                                               count=1, positions=(8,), steps=1, baseline=False,
                                               isolate=False, progress=False))
    assert list(res["runs"]) == [REFERENCE] and res["runs"][REFERENCE]["status"] == "ok"
    assert not res["isolated"] and "not per backend" in res["peak_rss_note"]


def test_cli_registered(tiny_bundle):
    from refocus_edge.cli.main import build_parser

    args = build_parser().parse_args(["bench", "--model", str(tiny_bundle), "--repeats", "1", "--count", "1",
                                      "--backend", "onnxruntime", "--precision", "fp16", "--steps", "2"])
    from refocus_edge.bench.backends import config_from_args

    cfg = config_from_args(args, args.model)
    assert cfg.backends == ("onnxruntime",) and cfg.precisions == ("fp16",) and cfg.steps == 2
    assert [j.key for j in plan_bench(cfg).jobs] == [REFERENCE, "onnxruntime/fp16", BASELINE]
