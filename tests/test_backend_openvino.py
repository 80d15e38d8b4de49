"""The OpenVINO backend (issue 21 item 2): each component against its PyTorch module on the tiny
random model (fp32 tight, bf16 looser where the CPU has bf16), whole stacks through the thin sampler
against ONNX Runtime, the load-time bf16 gate, shapes, the torch boundary, the one-line error when the
package is missing, and `refocus run` on it in a process without torch.

Threads: one (the `one_thread` fixture; OpenVINO reads torch's count like ONNX Runtime), so the suite
stays polite on the 2-core CI box.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")

from refocus_edge.runtime.array_sampler import sample_focal_stack_arrays  # noqa: E402
from refocus_edge.runtime.backends import get_backend  # noqa: E402
from refocus_edge.runtime.backends import backend_openvino as ovb  # noqa: E402
from refocus_edge.runtime.backends.base import BackendUnavailableError  # noqa: E402
from refocus_edge.runtime.bundle import read_bundle  # noqa: E402
from refocus_edge.runtime.component_modules import component_module  # noqa: E402
from refocus_edge.runtime.loading import load_refocuser  # noqa: E402
from refocus_edge.runtime.sampler import SamplerConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ["image_encoder", "vae_encoder", "unet", "vae_decoder_8", "vae_decoder_1"]
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="package 'openvino' is not installed (pip install 'refocus-edge[openvino]')")
needs_bf16 = pytest.mark.skipif(not ovb.BACKEND.supports("bf16"),
                                reason="this CPU has no bf16 in OpenVINO's OPTIMIZATION_CAPABILITIES "
                                       "(AVX-512 BF16 or AMX), or openvino is missing")


def _rel(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _worst_against_torch(bundle, random_refocuser, name, precision):
    spec = bundle.specs[name]
    runner = get_backend("openvino").load_arrays(bundle, spec, precision)
    module = component_module(random_refocuser, spec)
    gen, worst = torch.Generator().manual_seed(0), 0.0
    for corner in ("min", "opt", "max"):
        feeds = spec.sample_inputs(gen, corner)
        with torch.no_grad():
            ref = module(*(feeds[n] for n in spec.input_names)).numpy()
        got = runner({k: v.numpy() for k, v in feeds.items()})[spec.output_names[0]]
        worst = max(worst, _rel(got, ref))
    return worst, spec


def test_missing_package_is_one_line_naming_the_extra(tiny_bundle, monkeypatch):
    """Runs with or without openvino: the package is made to look absent."""
    monkeypatch.setattr(ovb, "importable", lambda name: False)
    state = get_backend("openvino").availability()
    assert not state.available and "pip install 'refocus-edge[openvino]'" in state.reason
    assert not get_backend("openvino").supports("bf16")
    with pytest.raises(BackendUnavailableError, match=r"backend 'openvino' is unavailable here: package "
                                                      r"'openvino' is not installed \(pip install 'refocus-edge\[openvino\]'\)"):
        load_refocuser(tiny_bundle, backend="openvino")


@needs_openvino
@pytest.mark.parametrize("name", COMPONENTS)
def test_fp32_matches_the_pytorch_component(tiny_bundle, random_refocuser, name, one_thread):
    """At the profile's min/opt/max shapes, within 1e-5 relative (10x tighter than the export's gate;
    measured ~1e-6). Also proves the f32 hint holds: this CPU's OpenVINO default is bf16 (1e-2 errors)."""
    worst, _ = _worst_against_torch(read_bundle(tiny_bundle), random_refocuser, name, "fp32")
    assert worst < 1e-5


@needs_openvino
@needs_bf16
@pytest.mark.parametrize("name", COMPONENTS)
def test_bf16_is_within_its_tolerance_and_really_bf16(tiny_bundle, random_refocuser, name, one_thread):
    worst, spec = _worst_against_torch(read_bundle(tiny_bundle), random_refocuser, name, "bf16")
    assert 1e-4 < worst < spec.tolerance("bf16")  # above fp32's bound: bf16 kernels did run


@needs_openvino
def test_precisions_offered_here(tiny_bundle):
    bundle, ov = read_bundle(tiny_bundle), get_backend("openvino")
    # fp16 graphs would run on f32 arithmetic here: not offered; bf16 is derived from the fp32 graphs.
    assert ov.precisions(bundle) == ["fp32"] + (["bf16"] if ov.supports("bf16") else [])
    assert not ov.supports("fp16") and not ov.supports("fp8") and ov.supports("int8")
    with pytest.raises(BackendUnavailableError, match="not fp16"):
        ov.load_arrays(bundle, bundle.specs["unet"], "fp16")
    # an int8 graph's float parts run at bf16 where the device has it, each hint in its own cache folder
    from refocus_edge.runtime.backends.backend_openvino import compile_config

    hint = "bf16" if ov.supports("bf16") else "f32"
    config = compile_config("int8")
    assert config["INFERENCE_PRECISION_HINT"] == hint and config["CACHE_DIR"].endswith(f"int8-{hint}")
    assert compile_config("fp32")["INFERENCE_PRECISION_HINT"] == "f32"


@needs_openvino
def test_each_call_shape_gets_its_own_compile(tiny_bundle, random_refocuser, one_thread):
    """The UNet at batch 1 and 2 (the student's and a guided model's calls): two static compiles, kept."""
    bundle = read_bundle(tiny_bundle)
    spec = bundle.specs["unet"]
    runner = get_backend("openvino").load_arrays(bundle, spec, "fp32")
    module = component_module(random_refocuser, spec)
    for which in ("min", "max", "min"):
        feeds = spec.sample_inputs(torch.Generator().manual_seed(1), which)
        with torch.no_grad():
            ref = module(*(feeds[n] for n in spec.input_names)).numpy()
        assert _rel(runner({k: v.numpy() for k, v in feeds.items()})["out_sample"], ref) < 1e-5
    assert sorted(s[0][0] for s in runner._fn.requests) == [1, 2]


@needs_openvino
def test_torch_load_wraps_the_array_runner(tiny_bundle, one_thread):
    bundle = read_bundle(tiny_bundle)
    spec = bundle.specs["vae_encoder"]
    feeds = spec.sample_inputs(torch.Generator().manual_seed(2), "opt")
    ov = get_backend("openvino")
    out = ov.load(bundle, spec, "fp32")(feeds)["latent"]
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), ov.load_arrays(bundle, spec, "fp32")(
        {k: v.numpy() for k, v in feeds.items()})["latent"])


def _image(seed=3, size=64):
    return (np.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32) * 2 - 1)


@needs_openvino
def test_whole_stack_on_the_thin_sampler_matches_onnxruntime(tiny_bundle, one_thread):
    """Same noise, 4 guided steps, frames in [0, 1]: fp32 within 1e-4 (both run the same gated graphs;
    op order only), bf16 within 0.05 (the fp16 graphs' bound on the same comparison)."""
    cfg = SamplerConfig(position=2, seed=5, progress=False)
    noise = np.random.default_rng(5).standard_normal((1, 9, 4, 8, 8), dtype=np.float32)
    ref = sample_focal_stack_arrays(load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32",
                                                   arrays=True), _image(), cfg, noise=noise).frames
    ov = load_refocuser(tiny_bundle, backend="openvino", precision="fp32", arrays=True)
    assert {c.device for c in ov.choices} == {"openvino CPU fp32"}
    got = sample_focal_stack_arrays(ov, _image(), cfg, noise=noise).frames
    assert got.shape == (9, 3, 64, 64) and np.abs(got - ref).max() < 1e-4
    if ovb.BACKEND.supports("bf16"):
        bf16 = load_refocuser(tiny_bundle, backend="openvino", precision="bf16", arrays=True)
        assert np.abs(sample_focal_stack_arrays(bf16, _image(), cfg, noise=noise).frames - ref).max() < 0.05


@needs_openvino
@needs_bf16
def test_bf16_gate_refuses_a_compile_out_of_bounds_and_remembers_a_pass(tiny_bundle, monkeypatch, tmp_path,
                                                                         one_thread):
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path))
    bundle = read_bundle(tiny_bundle)
    spec = bundle.specs["vae_decoder_1"]
    ov = get_backend("openvino")
    ov.load_arrays(bundle, spec, "bf16")
    records = list((tmp_path / "openvino" / "gates").glob("vae_decoder_1.bf16.*.json"))
    assert len(records) == 1 and 0 < json.loads(records[0].read_text())["max_rel_error"] < 0.1
    # a later load reads the record instead of checking again
    monkeypatch.setattr(ovb, "max_rel_error", lambda *a: pytest.fail("re-checked a recorded pass"))
    ov.load_arrays(bundle, spec, "bf16")
    monkeypatch.undo()
    # a bound bf16 cannot meet: a new key, checked, refused with the numbers
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules["refocus_edge.runtime.components"].PARITY_TOLERANCE, "bf16", 1e-6)
    with pytest.raises(BackendUnavailableError, match=r"vae_decoder_1: openvino bf16 failed its parity gate: "
                                                      r"max_rel_error .* > 1e-06 against the fp32 graph"):
        ov.load_arrays(bundle, spec, "bf16")


@needs_openvino
def test_refocus_run_on_openvino_without_torch(tiny_bundle, tmp_path):
    """The thin runtime on OpenVINO: nothing tries torch, diffusers or transformers (tests/no_torch)."""
    from PIL import Image

    photo, out, log = tmp_path / "photo.png", tmp_path / "stack", tmp_path / "hidden.log"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(photo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "no_torch"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "REFOCUS_HIDDEN_LOG": str(log), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "refocus_edge.cli", "run", str(photo), "--model", str(tiny_bundle),
                           "--backend", "openvino", "--no-dof", "--out", str(out), "--seed", "3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not log.exists(), f"tried to import {sorted(set(log.read_text().split()))}"
    assert all((out / f"frame_{i}.png").is_file() for i in range(9))
    meta = json.loads((out / "run.json").read_text())
    assert meta["runtime"] == "thin" and {b["backend"] for b in meta["backends"].values()} == {"openvino"}


def test_refocus_backends_lists_openvino(capsys):
    from refocus_edge.cli.main import main

    assert main(["backends"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("openvino"))
    if importlib.util.find_spec("openvino") is None:
        assert " no " in line and "refocus-edge[openvino]" in line
    else:
        assert " yes " in line and "fp32, int8" in line


@needs_openvino
@needs_bf16
def test_a_bf16_compile_after_an_fp32_one_is_still_bf16(tiny_bundle, random_refocuser, monkeypatch, tmp_path,
                                                         one_thread):
    """OpenVINO 2026.4's model-cache key leaves out the precision hint: with one cache folder, a bf16
    compile of a graph already cached at f32 imported that blob and computed garbage (relative error
    0.43 on an AMX CPU). The backend keeps a folder per precision; this order used to fail."""
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path))
    bundle = read_bundle(tiny_bundle)
    _worst_against_torch(bundle, random_refocuser, "image_encoder", "fp32")
    worst, spec = _worst_against_torch(bundle, random_refocuser, "image_encoder", "bf16")
    assert worst < spec.tolerance("bf16")
    assert sorted(p.name for p in (tmp_path / "openvino").iterdir() if p.name != "gates") == ["bf16-bf16", "fp32-f32"]
