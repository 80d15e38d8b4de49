"""`refocus export onnx`: spec-driven graphs, parity gates, atomic bundles."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")
onnx = pytest.importorskip("onnx", reason="needs onnx (pip install -e '.[test]')")

from refocus_edge.export.targets.target_onnx import OnnxExportConfig, export_onnx  # noqa: E402
from refocus_edge.export.parity import ParityError, component_gate  # noqa: E402
from refocus_edge.runtime.bundle import read_bundle  # noqa: E402
from refocus_edge.runtime.component_modules import component_module  # noqa: E402

COMPONENTS = ["image_encoder", "vae_encoder", "unet", "vae_decoder_8", "vae_decoder_1"]


def test_every_component_is_exported_from_its_spec(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    manifest = bundle.manifest
    assert list(manifest.components) == COMPONENTS
    for precision in ("fp32", "fp16"):
        for name, spec in bundle.specs.items():
            graph = onnx.load(str(bundle.artifact_path("onnx", precision, name)))
            assert graph.opset_import[0].version >= 17
            inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                      for i in graph.graph.input}
            assert inputs == {t.name: list(t.dims) for t in spec.inputs}, name
            assert [o.name for o in graph.graph.output] == spec.output_names
            gate = manifest.gate_table("onnx", precision)[name]
            assert gate["passed"] and gate["metric"] == "max_rel_error"
            assert gate["value"] <= gate["threshold"] == spec.tolerance(precision)
        e2e = manifest.gate_table("onnx", precision)["end_to_end"]
        assert e2e["passed"] and e2e["metric"] == "lpips_alex_max_frame"
    # fp32 graphs differ from eager PyTorch only by op order
    assert max(manifest.gate_table("onnx", "fp32")[n]["value"] for n in COMPONENTS) < 1e-4
    assert manifest.sampler["added_time_ids"] == [6.0, 0.0, 0.0]
    assert len(manifest.sampler["sigmas"]) == manifest.sampler["num_inference_steps"] + 1
    assert manifest.source["hash"] and manifest.tools["onnxruntime"]


def _corrupt(src, dst):
    """Add noise to the largest weight of a graph: a wrong graph that still runs. (Scaling
    alone could be undone by a following normalisation.)"""
    from onnx import numpy_helper

    model = onnx.load(str(src))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(0).standard_normal(w.shape).astype(w.dtype) * (w.std() + 1e-3)
    init.CopyFrom(numpy_helper.from_array(w + noise, init.name))
    onnx.save(model, str(dst))


def test_parity_gate_fails_on_a_corrupted_graph(tiny_bundle, random_refocuser, tmp_path):
    from refocus_edge.runtime.backends.backend_onnxruntime import session_runner

    bundle = read_bundle(tiny_bundle)
    spec = bundle.specs["unet"]
    bad = tmp_path / "unet.onnx"
    _corrupt(bundle.artifact_path("onnx", "fp32", "unet"), bad)
    reference = component_module(random_refocuser, spec)
    gate = component_gate(spec, "onnx", "fp32", reference, session_runner(bad, spec, "fp32"))
    assert not gate.passed
    with pytest.raises(ParityError, match=r"unet \(onnx fp32\): max_rel_error = .* > threshold 0\.0001"):
        gate.enforce()


def test_a_failed_gate_fails_the_export_and_writes_nothing(random_model_dir, tmp_path, monkeypatch):
    import refocus_edge.export.onnx_graphs as mod

    real = mod.export_component

    def corrupting(module, spec, path, dtype=torch.float32):
        real(module, spec, path, dtype)
        if spec.name == "vae_decoder_1":
            _corrupt(path, path)
        return path

    monkeypatch.setattr(mod, "export_component", corrupting)
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match="vae_decoder_1"):
        export_onnx(OnnxExportConfig(model=random_model_dir, out=out), log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []  # no bundle, no staging folder


def test_export_refuses_to_overwrite_without_force_and_keeps_the_old_bundle(tiny_bundle, random_model_dir, tmp_path):
    from refocus_edge.runtime.errors import OutputExistsError

    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(OutputExistsError, match="--force"):
        export_onnx(OnnxExportConfig(model=random_model_dir, out=out), log=lambda _m: None)
    assert (out / "manifest.json").read_text() == before


def test_bundle_runs_the_sampler_like_pytorch(tiny_bundle, random_refocuser):
    """Backend parity on the whole sampler: ONNX Runtime fp32 vs torch, same seed."""
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    cfg = SamplerConfig(position=2, seed=5, progress=False)
    ref = sample_focal_stack(random_refocuser, image, cfg).frames
    ort = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32")
    assert {c.backend for c in ort.choices} == {"onnxruntime"}
    for mode in ("fast", "reference"):
        got = sample_focal_stack(ort, image, SamplerConfig(position=2, seed=5, progress=False, mode=mode))
        assert (got.frames - ref).abs().max() < 1e-3, mode
    fp16 = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp16")
    assert (sample_focal_stack(fp16, image, cfg).frames - ref).abs().max() < 0.05


def test_cli_export_and_backends(tiny_bundle, random_model_dir, tmp_path, capsys):
    from refocus_edge.cli.main import main

    out = tmp_path / "cli_bundle"
    assert main(["export", "onnx", "--model", str(random_model_dir), "--out", str(out),
                 "--resolution", "64x64", "--gate-steps", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["gates"]["onnx"]["fp32"]["end_to_end"]["steps"] == 2
    assert main(["export", "onnx", "--model", str(random_model_dir), "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["backends"]) == 0
    listing = capsys.readouterr().out
    assert "onnxruntime  yes" in listing and "torch        yes" in listing
    assert "coreml       no   Core ML runs only on macOS" in listing or "coreml       yes" in listing
