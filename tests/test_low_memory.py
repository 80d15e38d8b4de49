"""Low-memory mode: same frames, one component resident at a time, each freed after its stage."""
from __future__ import annotations

import pytest
import torch

from refocus_edge.runtime.loading import load_refocuser
from refocus_edge.runtime.low_memory import LazyComponent
from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

IMAGE = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
CFG = SamplerConfig(position=3, seed=2, progress=False)


def _watch(refocuser):
    """Record which components are resident whenever one loads."""
    parts = {"unet": refocuser.unet, "vae": refocuser.vae, "image_encoder": refocuser.image_encoder}
    seen = []
    for name, part in parts.items():
        assert isinstance(part, LazyComponent) and not part.resident
        real = part._loader

        def loader(real=real, name=name):
            seen.append((name, sorted(n for n, p in parts.items() if p.resident)))
            return real()
        part._loader = loader
    return parts, seen


def _check(refocuser, reference):
    parts, seen = _watch(refocuser)
    frames = sample_focal_stack(refocuser, IMAGE, CFG).frames
    assert torch.equal(frames, reference)
    # stage order, and nothing else resident when a component loads
    assert seen == [("image_encoder", []), ("vae", []), ("unet", []), ("vae", [])]
    assert not any(p.resident for p in parts.values())
    assert (parts["vae"].loads, parts["unet"].loads) == (2, 1)


def test_low_memory_torch_model_gives_the_same_frames(random_model_dir, random_refocuser):
    reference = sample_focal_stack(random_refocuser, IMAGE, CFG).frames
    _check(load_refocuser(random_model_dir, low_memory=True), reference)


def test_low_memory_bundle_gives_the_same_frames(tiny_bundle):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    reference = sample_focal_stack(load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32"),
                                   IMAGE, CFG).frames
    refocuser = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32", low_memory=True)
    _check(refocuser, reference)
    assert {c.backend for c in refocuser.choices} == {"onnxruntime"}
