"""Backend choice: explicit override (flag, env), measured auto choice, visible fallback."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")

import refocus_edge.runtime.dispatch as dispatch  # noqa: E402
from refocus_edge.runtime.artifacts import dispatch_key  # noqa: E402
from refocus_edge.runtime.backends import get_backend, registry  # noqa: E402
from refocus_edge.runtime.backends.base import BackendUnavailableError  # noqa: E402
from refocus_edge.runtime.bundle import read_bundle  # noqa: E402
from refocus_edge.runtime.errors import InvalidArgumentError, ModelLoadError  # noqa: E402
from refocus_edge.runtime.loading import load_refocuser  # noqa: E402


def _fake_times(table):
    """Replace measurement by fixed times per backend/precision (and count calls)."""
    calls = []

    def fake(runner, spec, arrays=False):
        calls.append(runner.device)
        backend = "torch" if runner.device.startswith("torch") else "onnxruntime"
        precision = "fp16" if runner.device.endswith("fp16") else "fp32"
        return table[f"{backend}/{precision}"]
    return fake, calls


def test_registry_finds_every_backend_by_convention():
    assert {"torch", "onnxruntime", "tensorrt", "coreml"} <= set(registry())
    with pytest.raises(InvalidArgumentError, match="unknown backend 'cuda'.*torch"):
        get_backend("cuda")


def test_auto_picks_the_fastest_measured_and_caches_the_timings(tiny_bundle, monkeypatch):
    fake, calls = _fake_times({"torch/fp32": 5.0, "onnxruntime/fp32": 2.0, "onnxruntime/fp16": 3.0})
    monkeypatch.setattr(dispatch, "_time_runner", fake)
    refocuser = load_refocuser(tiny_bundle)
    assert {(c.backend, c.precision) for c in refocuser.choices} == {("onnxruntime", "fp32")}
    assert "fastest measured (2.0 ms vs onnxruntime/fp16 3.0 ms, torch/fp32 5.0 ms)" in refocuser.choices[0].reason
    measured = len(calls)
    assert measured == 5 * 3  # 5 components x 3 candidates
    load_refocuser(tiny_bundle)  # second load on this machine: cached timings, no re-measurement
    assert len(calls) == measured


def test_auto_falls_back_visibly_when_the_fastest_fails_to_load(tiny_bundle, monkeypatch):
    fake, _ = _fake_times({"torch/fp32": 5.0, "onnxruntime/fp32": 2.0, "onnxruntime/fp16": 3.0})
    monkeypatch.setattr(dispatch, "_time_runner", fake)
    ort = get_backend("onnxruntime")
    real = ort.load

    def broken(bundle, spec, precision):
        if spec.name == "unet":
            raise RuntimeError("simulated load failure")
        return real(bundle, spec, precision)

    monkeypatch.setattr(ort, "load", broken)
    with pytest.warns(dispatch.BackendFallbackWarning, match="unet: backend onnxruntime/fp32 (skipped|failed to load)"):
        refocuser = load_refocuser(tiny_bundle)
    unet = next(c for c in refocuser.choices if c.component == "unet")
    assert unet.backend == "torch"


def test_explicit_backend_from_flag_or_environment(tiny_bundle, monkeypatch):
    monkeypatch.setenv("REFOCUS_BACKEND", "torch")
    assert {c.backend for c in load_refocuser(tiny_bundle).choices} == {"torch"}
    # the flag wins over the environment
    chosen = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp16").choices
    assert {(c.backend, c.precision) for c in chosen} == {("onnxruntime", "fp16")}
    assert all(c.reason == "requested explicitly" for c in chosen)


def test_an_explicit_backend_that_cannot_run_fails_with_its_reason(tiny_bundle):
    with pytest.raises(BackendUnavailableError, match="backend 'coreml' is unavailable here: Core ML runs only on macOS"):
        load_refocuser(tiny_bundle, backend="coreml")


def test_a_model_folder_runs_on_torch_only(random_model_dir):
    with pytest.raises(ModelLoadError, match="export this model first: refocus export onnx"):
        load_refocuser(random_model_dir, backend="onnxruntime")
    assert load_refocuser(random_model_dir, backend="torch").choices == []


def test_the_timing_cache_key_changes_with_versions_hardware_and_bundle(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    base = dispatch_key(bundle.content_hash, {"onnxruntime": "1.31.1"}, {"cpu": "x"})
    assert base == dispatch_key(bundle.content_hash, {"onnxruntime": "1.31.1"}, {"cpu": "x"})
    assert base != dispatch_key(bundle.content_hash, {"onnxruntime": "1.32.0"}, {"cpu": "x"})
    assert base != dispatch_key(bundle.content_hash, {"onnxruntime": "1.31.1"}, {"cpu": "y"})
    assert base != dispatch_key("0" * 64, {"onnxruntime": "1.31.1"}, {"cpu": "x"})
