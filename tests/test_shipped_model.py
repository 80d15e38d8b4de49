"""The shipped default model: addressable by name, loads, and the fast path
equals the literal reference loop on it (not just on random weights)."""
from __future__ import annotations

import pytest
import torch

from refocus_edge.cli.main import main
from refocus_edge.runtime.loading import load_refocuser
from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack
from refocus_edge.runtime.zoo import DEFAULT_MODEL, TEACHER_MODEL, list_models


def test_default_model_is_listed_by_name(capsys):
    assert DEFAULT_MODEL in [m.name for m in list_models()]
    assert main(["models"]) == 0
    assert DEFAULT_MODEL in capsys.readouterr().out


def test_shipped_model_fast_equals_literal_reference():
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

    refocuser = load_refocuser(TEACHER_MODEL)
    assert refocuser.config.num_inference_steps == 25 and refocuser.config.guidance_scale == 1.5
    frames = SyntheticFocalStacks("heldout", size=(128, 128))[0]["frames"]
    image = frames[2:3] * 2 - 1
    ref = sample_focal_stack(refocuser, image, SamplerConfig(position=2, seed=3, mode="reference", progress=False))
    fast = sample_focal_stack(refocuser, image, SamplerConfig(position=2, seed=3, mode="fast", progress=False))
    assert ref.unet_calls == 50 and fast.unet_calls == 25
    assert (ref.frames - fast.frames).abs().max().item() <= 1e-3
    assert ref.frames.shape == (9, 3, 128, 128) and torch.isfinite(ref.frames).all()


STUDENTS = {"refocus-tiny-4step": 4, "refocus-tiny-2step": 2, "refocus-tiny-1step": 1}


def test_shipped_student_runs_by_name_in_its_own_step_count(tmp_path):
    """`refocus run --model refocus-tiny-4step` needs no flags: 4 UNet calls, no guidance, its own sigmas."""
    import json

    from diffusers import EulerDiscreteScheduler

    from refocus_edge.runtime.zoo import models_dir

    for name, steps in STUDENTS.items():
        student = load_refocuser(name)
        assert student.config.num_inference_steps == steps and student.config.guidance_scale == 0
        # The scheduler config alone gives the student's sigmas in stock diffusers (a round trip).
        stock = EulerDiscreteScheduler.from_pretrained(models_dir() / name / "scheduler")
        stock.set_timesteps(steps)
        card = json.loads((models_dir() / name / "refocus.json").read_text())["extra"]
        assert [round(float(s), 4) for s in stock.sigmas] == [round(s, 4) for s in card["sigmas"]]

        out = tmp_path / name
        assert main(["run", "samples/coffee.jpg", "--model", name, "--position", "3", "--out", str(out)]) == 0
        run = json.loads((out / "run.json").read_text())
        assert run["steps"] == steps and run["unet_calls"] == steps
        assert all((out / f"frame_{j}.png").is_file() for j in range(9))


def test_default_model_refocuses_better_than_copying_the_input():
    """The shipped default on held-out synthetic stacks (never trained on): at large focal jumps its
    frames are closer to the truth than the input copied to every frame, and it keeps its own frame
    near the autoencoder's floor. The full numbers: benchmarks/results/refocus-tiny-1step/."""
    from benchmarks.quality import evaluate_quality

    res = evaluate_quality(DEFAULT_MODEL, count=3, positions=(0, 8), progress=False)
    large, own = res["large_jump"], res["own_frame"]
    assert large["model"] < large["baseline"], large
    assert own["model"] - own["vae_roundtrip"] < 0.1, own


@pytest.mark.parametrize("size", [(320, 256), (448, 256)])
def test_default_model_beats_copying_the_input_on_photos(size):
    """On stacks rendered from whole photographs the training scenes never used, at the sizes a 4:3 and a
    16:9 photo are served at, the default (the 1-step student with its photo-guided decoder, generating
    at half the served size: refocus.json generate_scale) is closer to the truth at large focal jumps
    than the photo copied to every frame, and reproduces its own frame. (Generated at the served size
    instead, 16:9 was worse than copying: 0.317 vs 0.279 on 8 photos.) Full numbers:
    benchmarks/results/refocus-tiny-1step-sizes/, benchmarks/results/refocus-tiny-1step-photos/."""
    from benchmarks.quality import evaluate_quality

    res = evaluate_quality(DEFAULT_MODEL, count=3, positions=(0, 8), progress=False, eval_set="photos",
                           size=size)
    assert res["decoder"] == "guided"
    large, own = res["large_jump"], res["own_frame"]
    assert large["model"] < large["baseline"], large
    assert own["model"] < own["vae_roundtrip"], own


def test_default_model_serves_photos_at_their_own_shape_and_refocuses_there():
    """The default serves a 4:3 photo at 320x256 (not a 128x128 crop), and at that size its stacks of
    held-out synthetic scenes still beat the input copied to every frame at large focal jumps. All
    served sizes and both sets: benchmarks/results/refocus-tiny-1step-sizes/."""
    from benchmarks.quality import evaluate_quality
    from refocus_edge.runtime.model_config import load_model_config
    from refocus_edge.runtime.resize import target_size
    from refocus_edge.runtime.zoo import resolve_model

    policy = load_model_config(resolve_model(DEFAULT_MODEL)).resolution_policy
    assert target_size(4032, 3024, policy) == (320, 256) and target_size(1920, 1080, policy) == (448, 256)
    res = evaluate_quality(DEFAULT_MODEL, count=2, positions=(0, 8), progress=False, size=(320, 256))
    large = res["large_jump"]
    assert large["model"] < 0.95 * large["baseline"], large
