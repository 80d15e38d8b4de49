"""Core ML backend: what it says and does off macOS (the only place CI runs)."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import backend_coreml as coreml
from runtime.backends.base import BackendUnavailableError
from runtime.components import ModelDims, component_specs
from runtime.errors import InvalidArgumentError


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
    monkeypatch.setattr(coreml, "_installed", lambda name: False)
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
