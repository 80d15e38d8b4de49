"""VAE safety: a reduced-precision decoder whose output holds NaN/inf re-runs that chunk in fp32.

The overflow is forced: a latent scaled past fp16's range (65504) cannot even be fed
to the fp16 graph, so its whole output is inf/NaN; each test first checks that the
unguarded fp16 runner really fails on it, so a pass means the guard did the work.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")

from refocus_edge.runtime.backends import get_backend  # noqa: E402
from refocus_edge.runtime.backends.base import Runner  # noqa: E402
from refocus_edge.runtime.backends.finite_guard import (FiniteGuard, NonFiniteOutputError,  # noqa: E402
                                           PrecisionFallbackUnavailableError, PrecisionFallbackWarning,
                                           guard_decoders, load_fp32_fallback)
from refocus_edge.runtime.bundle import Bundle, read_bundle  # noqa: E402
from refocus_edge.runtime.loading import load_refocuser  # noqa: E402

DECODER = "vae_decoder_1"


def _latent(spec, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    latent = spec.sample_inputs(torch.Generator().manual_seed(seed), "min")["latent"]
    return latent if scale == 1.0 else latent / latent.abs().max() * scale


def _huge(spec, seed: int = 0) -> torch.Tensor:
    return _latent(spec, 1e5, seed)  # every value past +-65504 becomes inf in fp16


def _non_finite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum())


def _call(runner, latent: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "overflow encountered in cast"
        return runner({"latent": latent})["image"]


def _fallback_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, PrecisionFallbackWarning)]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return read_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def runners(bundle):
    ort = get_backend("onnxruntime")
    spec = bundle.specs[DECODER]
    return ort.load(bundle, spec, "fp16"), ort.load(bundle, spec, "fp32")


def _guard(runners, loads: list | None = None) -> FiniteGuard:
    fp16, fp32 = runners

    def fallback():
        if loads is not None:
            loads.append(1)
        return fp32
    return FiniteGuard(fp16, "fp16", fallback)


def test_forced_overflow_reruns_in_fp32_warns_once_and_counts(runners):
    fp16, fp32 = runners
    spec = fp16.spec
    a, b = _huge(spec, 0), _huge(spec, 1)
    assert _non_finite(_call(fp16, a)) > 0 and _non_finite(_call(fp16, b)) > 0  # the overflow is real
    loads = []
    guard = _guard(runners, loads)
    assert "fp16" in guard.device and "fp32 fallback on NaN/inf" in guard.device
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        outs = [_call(guard, a), _call(guard, b)]
    for latent, out in zip((a, b), outs):
        assert _non_finite(out) == 0
        want = _call(fp32, latent)
        assert torch.isfinite(want).all()
        assert (out - want).abs().max() <= 1e-4 * want.abs().max()
    hits = _fallback_warnings(record)
    assert len(hits) == 1
    message = str(hits[0].message)
    assert DECODER in message and "fp16" in message and f"{outs[0].numel()} non-finite" in message
    assert guard.fallbacks == 2 and len(loads) == 1  # fp32 loaded once, both calls counted
    assert guard.non_finite == 2 * outs[0].numel()


def test_a_normal_latent_passes_through_unchanged(runners):
    fp16, _ = runners
    loads = []
    guard = _guard(runners, loads)
    latent = _latent(fp16.spec)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = _call(guard, latent)
    assert torch.equal(out, _call(fp16, latent))
    assert not _fallback_warnings(record)
    assert guard.fallbacks == 0 and not loads  # the fp32 runner is never loaded


def test_bundle_refocuser_guards_reduced_precision_decoders(tiny_bundle):
    refocuser = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp16")
    runners = refocuser.vae.runners
    decoders = [n for n in runners if n.startswith("vae_decoder_")]
    assert decoders and all(isinstance(runners[n], FiniteGuard) for n in decoders)
    assert not any(isinstance(runners[n], FiniteGuard) for n in runners if n not in decoders)
    assert all("fp32 fallback on NaN/inf" in c.device for c in refocuser.choices if c.component in decoders)
    assert any("fp32 fallback on NaN/inf" in note for note in refocuser.notes)

    spec = runners["vae_decoder_8"].spec
    huge = _huge(spec)
    assert _non_finite(_call(runners["vae_decoder_8"].inner, huge)) > 0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            image = refocuser.vae.decode(huge, num_frames=8).sample
    assert torch.isfinite(image).all()
    assert len(_fallback_warnings(record)) == 1 and runners["vae_decoder_8"].fallbacks == 1

    fp32 = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32")
    assert not any(isinstance(r, FiniteGuard) for r in fp32.vae.runners.values())
    assert not any("fallback on NaN/inf" in c.device for c in fp32.choices)


def test_low_memory_bundle_refocuser_guards_its_decoders(tiny_bundle):
    refocuser = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp16", low_memory=True)
    huge = _huge(read_bundle(tiny_bundle).specs["vae_decoder_1"])
    with pytest.warns(PrecisionFallbackWarning, match="vae_decoder_1.*fp16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            image = refocuser.vae.decode(huge, num_frames=1).sample
    assert torch.isfinite(image).all()
    assert isinstance(refocuser.vae.runners["vae_decoder_1"], FiniteGuard)
    refocuser.vae.release()


def test_without_any_fp32_source_the_error_names_the_component_and_the_fix(runners):
    fp16, _ = runners

    def no_fallback():
        raise FileNotFoundError("no fp32 artifact")
    guard = FiniteGuard(fp16, "fp16", no_fallback)
    huge = _huge(fp16.spec)
    for _ in range(2):  # the failed load is remembered, and every overflowing call fails the same way
        with pytest.raises(PrecisionFallbackUnavailableError,
                           match=rf"{DECODER}: the fp16 decoder produced \d+ NaN/inf.*no fp32 decoder.*"
                                 r"no fp32 artifact.*--precision fp32"):
            _call(guard, huge)
    assert guard.fallbacks == 0
    # a latent fp16 can hold still decodes: the guard only fails where it would have returned NaN/inf
    assert torch.isfinite(_call(guard, _latent(fp16.spec))).all()


def _without_fp32_onnx(bundle: Bundle, source: dict | None = None) -> Bundle:
    manifest = copy.deepcopy(bundle.manifest)
    manifest.gates["onnx"].pop("fp32")
    if source is not None:
        manifest.source = source
    return Bundle(bundle.root, manifest)


def test_fp32_source_falls_back_to_the_torch_model_then_to_a_clear_error(bundle, runners):
    fp16, fp32 = runners
    spec = fp16.spec
    huge = _huge(spec)
    assert load_fp32_fallback(bundle, spec, "onnxruntime").device.endswith("fp32")

    no_onnx = _without_fp32_onnx(bundle)
    torch_runner = load_fp32_fallback(no_onnx, spec, "onnxruntime")
    assert torch_runner.device == "torch cpu fp32"
    with pytest.warns(PrecisionFallbackWarning, match="re-run in fp32 on torch cpu fp32"):
        out = _call(FiniteGuard(fp16, "fp16", lambda: torch_runner), huge)
    want = _call(fp32, huge)
    assert (out - want).abs().max() <= 1e-3 * want.abs().max()

    nowhere = _without_fp32_onnx(bundle, {"model": "/nonexistent/model", "path": "/nonexistent/model"})
    with pytest.raises(PrecisionFallbackUnavailableError, match=rf"{DECODER}: no fp32 runner.*onnx fp32.*torch"):
        load_fp32_fallback(nowhere, spec, "onnxruntime")
    choice = type("Choice", (), {"component": DECODER, "backend": "onnxruntime", "precision": "fp16",
                                 "device": fp16.device})()
    guarded = guard_decoders(nowhere, {DECODER: fp16}, [choice])[DECODER]
    with pytest.raises(PrecisionFallbackUnavailableError, match=rf"{DECODER}: the fp16 decoder.*--precision fp32"):
        _call(guarded, huge)


def test_non_finite_input_or_fp32_overflow_is_an_error_not_a_silent_nan(runners):
    fp16, _ = runners
    latent = _latent(fp16.spec)
    latent[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match=rf"{DECODER}: its input already holds 1 NaN/inf"):
        _call(_guard(runners), latent)

    def nan_runner(feeds):
        return {"image": torch.full((1, 3, 64, 64), float("nan"))}
    broken = Runner(fp16.spec, nan_runner, "broken fp32", check_inputs=False)
    with pytest.raises(NonFiniteOutputError, match=rf"{DECODER}: .* still are in fp32"):
        _call(FiniteGuard(fp16, "fp16", lambda: broken), _huge(fp16.spec))
