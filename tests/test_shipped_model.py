"""The shipped default model: addressable by name, loads, and the fast path
equals the literal reference loop on it (not just on random weights)."""
from __future__ import annotations

import torch

from refocus_cli.main import main
from runtime.loading import load_refocuser
from runtime.sampler import SamplerConfig, sample_focal_stack
from runtime.zoo import DEFAULT_MODEL, list_models


def test_default_model_is_listed_by_name(capsys):
    assert DEFAULT_MODEL in [m.name for m in list_models()]
    assert main(["models"]) == 0
    assert DEFAULT_MODEL in capsys.readouterr().out


def test_shipped_model_fast_equals_literal_reference():
    from focalstacks.synthetic import SyntheticFocalStacks

    refocuser = load_refocuser(DEFAULT_MODEL)
    assert refocuser.config.num_inference_steps == 25 and refocuser.config.guidance_scale == 1.5
    frames = SyntheticFocalStacks("heldout", size=(128, 128))[0]["frames"]
    image = frames[2:3] * 2 - 1
    ref = sample_focal_stack(refocuser, image, SamplerConfig(position=2, seed=3, mode="reference", progress=False))
    fast = sample_focal_stack(refocuser, image, SamplerConfig(position=2, seed=3, mode="fast", progress=False))
    assert ref.unet_calls == 50 and fast.unet_calls == 25
    assert (ref.frames - fast.frames).abs().max().item() <= 1e-3
    assert ref.frames.shape == (9, 3, 128, 128) and torch.isfinite(ref.frames).all()
