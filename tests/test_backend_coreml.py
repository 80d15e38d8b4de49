"""Core ML backend: what it says and does off macOS (the only place CI runs)."""
from __future__ import annotations

import numpy as np
import pytest

from refocus_edge.runtime.backends import backend_coreml as coreml
from refocus_edge.runtime.backends.base import BackendUnavailableError
from refocus_edge.runtime.components import ModelDims, component_specs
from refocus_edge.runtime.errors import InvalidArgumentError


def tiny_spec(name="unet"):
    return component_specs(ModelDims(latent_channels=4, embed_dim=8, clip_size=(32, 32), vae_scale_factor=8,
                                     num_frames=9, decode_chunk_sizes=(8, 1), resolutions=((64, 64),)))[name]


@pytest.fixture
def linux(monkeypatch):
    monkeypatch.setattr(coreml.platform, "system", lambda: "Linux")


def test_unavailable_off_macos(linux):
    state = coreml.BACKEND.availability()
    assert not state.available
    assert state.reason.startswith("Core ML runs only on macOS") and "Linux" in state.reason


def test_load_off_macos_raises_before_touching_the_bundle(linux):
    with pytest.raises(BackendUnavailableError, match=r"^unet: Core ML runs only on macOS.*Linux"):
        coreml.BACKEND.load(None, tiny_spec(), "fp16")


def test_macos_without_coremltools_names_the_package(monkeypatch):
    monkeypatch.setattr(coreml.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(coreml, "importable", lambda name: False)
    state = coreml.BACKEND.availability()
    assert not state.available and "'coremltools' is not installed" in state.reason


def test_compute_units_from_the_environment(monkeypatch):
    assert coreml.compute_units() == "ALL"
    monkeypatch.setenv(coreml.UNITS_ENV, "cpu_and_ne")
    assert coreml.compute_units() == "CPU_AND_NE"
    monkeypatch.setenv(coreml.UNITS_ENV, "GPU")
    with pytest.raises(InvalidArgumentError, match="REFOCUS_COREML_COMPUTE_UNITS"):
        coreml.compute_units()


def test_feed_types_follow_the_package():
    assert coreml.numpy_type("FLOAT16") is np.float16
    assert coreml.numpy_type("FLOAT32") is np.float32
    assert coreml.numpy_type("") is np.float32


def test_registered_as_the_coreml_artifact_backend():
    assert (coreml.BACKEND.name, coreml.BACKEND.artifact) == ("coreml", "coreml")


def test_package_table_lists_chunks_in_call_order():
    from types import SimpleNamespace

    chunks = [{"path": "coreml/fp16/unet/chunk_1.mlpackage"}, {"path": "coreml/fp16/unet/chunk_2.mlpackage"}]
    from refocus_edge.runtime.manifest import Manifest

    manifest = Manifest(created_by="test", source={}, dims={}, components={}, configs={}, clip={}, sampler={},
                        tools={}, artifacts={"coreml": {"fp16": {"unet": "coreml/fp16/unet"}}},
                        coreml={"fp16": {"unet": {"packages": chunks}}})
    bundle = SimpleNamespace(manifest=manifest)
    assert coreml.package_table(bundle, "fp16", tiny_spec()) == chunks
    # A bundle without the per-package table (an older export) loads its one package.
    bundle.manifest.coreml = {}
    assert coreml.package_table(bundle, "fp16", tiny_spec()) == [{"path": "coreml/fp16/unet"}]


@pytest.mark.skipif(not coreml.on_macos(), reason="Core ML runs only on macOS: package parity is checked there")
def test_packages_match_the_pytorch_rewrites_on_macos(random_model_dir, tmp_path):
    pytest.importorskip("coremltools")
    import torch

    from refocus_edge.export.targets.target_coreml import CoreMLExportConfig, export_coreml
    from refocus_edge.runtime.bundle import read_bundle

    out = tmp_path / "bundle"
    export_coreml(CoreMLExportConfig(model=random_model_dir, out=out, max_package_mb=0.05, gate_steps=1),
                  log=lambda m: None)
    bundle = read_bundle(out)
    from refocus_edge.runtime.backends.backend_torch import BACKEND as TORCH

    for name, spec in bundle.specs.items():
        feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "opt")
        got = coreml.BACKEND.load(bundle, spec, "fp16")(feeds)[spec.output_names[0]]
        ref = TORCH.load(bundle, spec, "fp32")(feeds)[spec.output_names[0]]
        assert float((got - ref).abs().max() / ref.abs().max()) < 3e-2, name
