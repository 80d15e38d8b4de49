"""Backend choice: explicit override (flag, env), measured auto choice, visible fallback."""
from __future__ import annotations

import importlib.util

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
    """Replace measurement by fixed times per backend/precision (and count calls). A runner's device
    names its backend first and its precision last ("onnxruntime CPUExecutionProvider fp16")."""
    calls = []

    def fake(runner, spec, arrays=False):
        calls.append(runner.device)
        words = runner.device.split()
        return table[f"{words[0]}/{words[-1]}"]
    return fake, calls


def _only(monkeypatch, *names):
    """Dispatch sees only these backends (whatever else is installed here)."""
    everything = registry()
    monkeypatch.setattr(dispatch, "registry", lambda: {n: b for n, b in everything.items() if n in names})


ORIGINAL = ("torch", "onnxruntime", "tensorrt", "coreml")


def _break_unet(monkeypatch, backend, method: str):
    """`backend.<method>` (load or load_arrays) fails for the UNet alone."""
    real = getattr(backend, method)

    def broken(bundle, spec, precision):
        if spec.name == "unet":
            raise RuntimeError("simulated load failure")
        return real(bundle, spec, precision)

    monkeypatch.setattr(backend, method, broken)


def test_registry_finds_every_backend_by_convention():
    assert {"torch", "onnxruntime", "openvino", "tensorrt", "coreml", "executorch"} <= set(registry())
    with pytest.raises(InvalidArgumentError, match="unknown backend 'cuda'.*torch"):
        get_backend("cuda")


def test_auto_picks_the_fastest_measured_and_caches_the_timings(tiny_bundle, monkeypatch):
    fake, calls = _fake_times({"torch/fp32": 5.0, "onnxruntime/fp32": 2.0, "onnxruntime/fp16": 3.0})
    monkeypatch.setattr(dispatch, "_time_runner", fake)
    _only(monkeypatch, *ORIGINAL)
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
    _only(monkeypatch, *ORIGINAL)
    _break_unet(monkeypatch, get_backend("onnxruntime"), "load")
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


# ------------------------------------------------------------------ three CPU backends (issue 21)
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="package 'openvino' is not installed (pip install 'refocus-edge[openvino]')")
CPU_THREE = ("torch", "onnxruntime", "openvino")


def _three(monkeypatch, tmp_path, table):
    """torch, onnxruntime and openvino alone, with stubbed timings and a fresh timing cache."""
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path))
    fake, calls = _fake_times(table)
    monkeypatch.setattr(dispatch, "_time_runner", fake)
    _only(monkeypatch, *CPU_THREE)
    return calls


@needs_openvino
@pytest.mark.parametrize("fastest", CPU_THREE)
def test_auto_picks_the_fastest_of_three_cpu_backends(tiny_bundle, monkeypatch, tmp_path, fastest):
    times = {"torch/fp32": 6.0, "onnxruntime/fp32": 4.0, "onnxruntime/fp16": 5.0, "openvino/fp32": 3.0,
             "openvino/bf16": 3.5}
    times[f"{fastest}/fp32"] = 1.0
    calls = _three(monkeypatch, tmp_path, times)
    _, choices = dispatch.load_runners(read_bundle(tiny_bundle), arrays=True)
    assert {(c.backend, c.precision) for c in choices} == {(fastest, "fp32")}
    assert choices[0].reason.startswith("fastest measured (1.0 ms vs ")
    assert {d.split()[0] for d in calls} == set(CPU_THREE)  # every one was timed
    bf16 = get_backend("openvino").supports("bf16")
    assert all(("openvino/bf16" in c.timings_ms) == bf16 for c in choices)  # bf16 competes where the CPU has it


@needs_openvino
def test_three_cpu_backends_override_and_visible_fallback(tiny_bundle, monkeypatch, tmp_path):
    _three(monkeypatch, tmp_path, {"torch/fp32": 6.0, "onnxruntime/fp32": 4.0, "onnxruntime/fp16": 5.0,
                                   "openvino/fp32": 1.0, "openvino/bf16": 2.0})
    bundle = read_bundle(tiny_bundle)
    # environment, then the flag over it
    monkeypatch.setenv("REFOCUS_BACKEND", "openvino")
    _, chosen = dispatch.load_runners(bundle, dispatch.requested_backend(None), "fp32", arrays=True)
    assert {(c.backend, c.reason) for c in chosen} == {("openvino", "requested explicitly")}
    _, chosen = dispatch.load_runners(bundle, dispatch.requested_backend("onnxruntime"), "fp32", arrays=True)
    assert {c.backend for c in chosen} == {"onnxruntime"}
    monkeypatch.delenv("REFOCUS_BACKEND")
    # openvino (the fastest) cannot load the UNet: a warning, and the next fastest runs it
    _break_unet(monkeypatch, get_backend("openvino"), "load_arrays")
    with pytest.warns(dispatch.BackendFallbackWarning, match="unet: backend openvino/(fp32|bf16) skipped"):
        _, choices = dispatch.load_runners(bundle, arrays=True)
    by = {c.component: (c.backend, c.precision) for c in choices}
    assert by.pop("unet") == ("onnxruntime", "fp32") and set(by.values()) == {("openvino", "fp32")}


def test_openvino_enters_the_timing_key(tiny_bundle):
    """The key holds each backend's availability facts: openvino's version and the device's default
    inference precision (bf16 on AVX-512 BF16 / AMX CPUs) and capabilities."""
    bundle = read_bundle(tiny_bundle)
    facts = {"openvino": "2026.4.1", "device": "CPU", "capabilities": "BF16 FP32 INT8", "default_precision": "bf16"}
    base = dispatch_key(bundle.content_hash, {"openvino": facts}, {"cpu": "x"})
    assert base != dispatch_key(bundle.content_hash, {"openvino": {**facts, "openvino": "2026.5.0"}}, {"cpu": "x"})
    assert base != dispatch_key(bundle.content_hash, {"openvino": {**facts, "default_precision": "f32"}},
                                {"cpu": "x"})
    versions = dispatch._versions()
    if importlib.util.find_spec("openvino") is not None:
        assert {"openvino", "default_precision", "capabilities"} <= set(versions["openvino"])


# ------------------------------------------------------------------ executorch among them (issue 22)
def _bundle_with_executorch_table(tiny_bundle, tmp_path):
    """A copy of the tiny bundle whose manifest also lists ExecuTorch fp32 artifacts (the ONNX files,
    checksummed like any other) with passed gates: dispatch's bookkeeping, without executorch installed."""
    import shutil

    from refocus_edge.runtime.manifest import Manifest

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    manifest = Manifest.read(root)
    manifest.set_table("executorch", "fp32", manifest.table("onnx", "fp32"))
    manifest.set_gates("executorch", "fp32", manifest.gate_table("onnx", "fp32"))
    manifest.write(root)
    return read_bundle(root)


def _stand_in_executorch(monkeypatch):
    """The executorch backend, available, loading the ONNX Runtime runner under its own name."""
    from refocus_edge.runtime.backends.base import Availability

    et, ort = get_backend("executorch"), get_backend("onnxruntime")

    def load_arrays(bundle, spec, precision):
        runner = ort.load_arrays(bundle, spec, precision)
        runner.device = f"executorch XNNPACK {precision}"
        return runner

    monkeypatch.setattr(et, "availability", lambda: Availability(True, "stand-in", {"executorch": "test"}))
    monkeypatch.setattr(et, "load_arrays", load_arrays)
    return et


@pytest.mark.parametrize("fastest", ["executorch", "onnxruntime", "torch"])
def test_auto_picks_the_fastest_among_cpu_backends_and_executorch(tiny_bundle, monkeypatch, tmp_path, fastest):
    bundle = _bundle_with_executorch_table(tiny_bundle, tmp_path)
    _stand_in_executorch(monkeypatch)
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path / "cache"))
    times = {"torch/fp32": 6.0, "onnxruntime/fp32": 4.0, "onnxruntime/fp16": 5.0, "executorch/fp32": 3.0}
    times[f"{fastest}/fp32"] = 1.0
    fake, calls = _fake_times(times)
    monkeypatch.setattr(dispatch, "_time_runner", fake)
    _only(monkeypatch, "torch", "onnxruntime", "executorch")
    _, choices = dispatch.load_runners(bundle, arrays=True)
    assert {(c.backend, c.precision) for c in choices} == {(fastest, "fp32")}
    assert all("executorch/fp32" in c.timings_ms for c in choices)  # it competed for every component
    assert {d.split()[0] for d in calls} == {"torch", "onnxruntime", "executorch"}


def test_executorch_override_and_visible_fallback(tiny_bundle, monkeypatch, tmp_path):
    bundle = _bundle_with_executorch_table(tiny_bundle, tmp_path)
    et = _stand_in_executorch(monkeypatch)
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path / "cache"))
    fake, _ = _fake_times({"torch/fp32": 6.0, "onnxruntime/fp32": 4.0, "onnxruntime/fp16": 5.0,
                           "executorch/fp32": 1.0})
    monkeypatch.setattr(dispatch, "_time_runner", fake)
    _only(monkeypatch, "torch", "onnxruntime", "executorch")
    _, chosen = dispatch.load_runners(bundle, dispatch.requested_backend("executorch"), arrays=True)
    assert {(c.backend, c.precision, c.reason) for c in chosen} == {("executorch", "fp32", "requested explicitly")}
    _break_unet(monkeypatch, et, "load_arrays")
    with pytest.warns(dispatch.BackendFallbackWarning, match="unet: backend executorch/fp32 skipped"):
        _, choices = dispatch.load_runners(bundle, arrays=True)
    by = {c.component: c.backend for c in choices}
    assert by.pop("unet") == "onnxruntime" and set(by.values()) == {"executorch"}


def test_every_backend_reports_a_refused_package_as_unavailable(monkeypatch):
    """A package whose lookup raises (a hiding finder, a half-removed install) is "not installed" for
    every backend: availability answers, it never raises, so dispatch and `refocus backends` go on.
    (With executorch installed, the executorch backend's torch lookup once crashed a torch-free run.)"""
    import sys

    refused = {"torch", "onnxruntime", "openvino", "executorch", "tensorrt", "coremltools"}

    def find_spec(name, package=None):
        if name.split(".")[0] in refused:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, package)

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for name in refused:  # importable() trusts an already-imported module; make it look things up
        for loaded in [m for m in sys.modules if m.split(".")[0] == name]:
            monkeypatch.delitem(sys.modules, loaded)
    for name, backend in registry().items():
        state = backend.availability()
        assert not state.available and state.reason, (name, state)
