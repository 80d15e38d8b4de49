"""Students trained toward the ground truth through their own sampler, on a tiny random refocuser."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from refocus_edge.export.distillation.config import DistillConfig
from resume_check import assert_resume_is_seamless


@pytest.fixture(scope="module")
def stacks_npy(tmp_path_factory) -> Path:
    """Eight real synthetic focal stacks at the random model's 64x64."""
    from refocus_edge.focalstacks.synthetic import render_cache

    path = tmp_path_factory.mktemp("gt-data") / "train_64.npy"
    render_cache("train", 8, (64, 64), path, progress=False)
    return path


def _cfg(tmp_path: Path, model_dir: Path, data: Path, **kw) -> DistillConfig:
    base = dict(teacher=model_dir, out=tmp_path / "student", steps=2, samples=8, iterations=30, batch=2,
                lr=1e-3, objective="ground-truth", data=str(data), run_dir=tmp_path / "run",
                cache=tmp_path / "gt-cache", progress=False, checkpoint_minutes=1e9)
    base.update(kw)
    return DistillConfig(**base)


def _trainer(cfg: DistillConfig, teacher=None):
    import copy

    from refocus_edge.export.distillation.ground_truth import GroundTruthTrainer, load_ground_truth
    from refocus_edge.export.distillation.pipeline import load_teacher, prepare_ground_truth, split_counts
    from refocus_edge.export.distillation.schedule import student_sigmas

    teacher = teacher or load_teacher(cfg)
    data = load_ground_truth(prepare_ground_truth(teacher, cfg, log=lambda m: None), cfg.samples)
    sigmas, init = student_sigmas(cfg.schedule, teacher.scheduler)
    n_train, _ = split_counts(len(data))
    return GroundTruthTrainer(copy.deepcopy(teacher.unet), teacher, data, sigmas, init, cfg, n_train,
                              log=lambda m: None)


def test_gradients_reach_the_unet_through_the_sampler(tmp_path, random_model_dir, stacks_npy):
    """Every UNet call of the few-step loop is in the graph: the first call's output gets a gradient
    from the loss on the final latents, and so does every UNet parameter that takes part."""
    trainer = _trainer(_cfg(tmp_path, random_model_dir, stacks_npy, steps=2))
    outputs = []

    def keep(_module, _inputs, out):
        out[0].retain_grad()
        outputs.append(out[0])

    handle = trainer.student.register_forward_hook(keep)
    try:
        loss = trainer.loss()
    finally:
        handle.remove()
    loss.backward()
    assert len(outputs) == 2  # 2 steps, 2 UNet calls
    first = outputs[0].grad
    assert first is not None and float(first.abs().sum()) > 0
    # The loss reaches the UNet through the decoder too (perceptual term on a decoded crop).
    assert trainer.lpips is not None
    grads = [p.grad for p in trainer.student.parameters() if p.requires_grad]
    assert sum(g is not None and float(g.abs().sum()) > 0 for g in grads) > 0.9 * len(grads)
    # The decoder stays frozen.
    assert all(p.grad is None for p in trainer.vae.parameters())


def test_focus_maps_rank_sharp_above_blurred_and_carry_gradients():
    """The focus term's measure: a sharp texture scores above its blurred copy everywhere textured, a flat
    frame sits at the floor, and the L1 between two stacks' maps is differentiable in the frames."""
    import math

    from refocus_edge.export.distillation.ground_truth import FOCUS_FLOOR, log_focus_maps

    gen = torch.Generator().manual_seed(0)
    sharp = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    flat = torch.zeros(1, 3, 32, 32)
    maps = log_focus_maps(torch.cat([sharp, blurred, flat]))
    assert maps.shape == (3, 32, 32)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert bool((maps[0][inner[1:]] > maps[1][inner[1:]] + 1.0).all())
    assert torch.allclose(maps[2], torch.full_like(maps[2], math.log(FOCUS_FLOOR)))
    frames = blurred.clone().requires_grad_(True)
    (log_focus_maps(frames) - log_focus_maps(sharp)).abs().mean().backward()
    assert frames.grad is not None and float(frames.grad.abs().sum()) > 0


def test_focus_weight_adds_the_focus_term(tmp_path, random_model_dir, stacks_npy):
    """With a focus weight the terms gain 'focus', taken on the same decoded crop as LPIPS (same draws:
    the MSE and LPIPS terms are those of a run without it)."""
    cfg = _cfg(tmp_path, random_model_dir, stacks_npy, steps=1, focus_weight=0.5)
    trainer = _trainer(cfg)
    idx, pos = torch.tensor([0, 1]), torch.tensor([2, 7])
    noise = torch.randn((2, *trainer.data.latents.shape[1:]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        terms = trainer.losses(trainer.student, trainer.batch(idx, pos), noise, torch.Generator().manual_seed(2))
    assert set(terms) == {"mse", "perceptual", "focus"} and float(terms["focus"]) > 0
    without = _trainer(_cfg(tmp_path / "b", random_model_dir, stacks_npy, steps=1, cache=tmp_path / "gt-cache"))
    with torch.no_grad():
        plain = without.losses(without.student, without.batch(idx, pos), noise, torch.Generator().manual_seed(2))
    assert "focus" not in plain
    assert float(plain["perceptual"]) == pytest.approx(float(terms["perceptual"]), rel=1e-6)
    assert float(plain["mse"]) == pytest.approx(float(terms["mse"]), rel=1e-6)


def test_curve_weight_adds_the_focus_curve_term_and_its_gradient_reaches_the_unet(tmp_path, random_model_dir,
                                                                                   stacks_npy):
    """--curve-weight: the terms gain 'curve' (the focus-curve cross-entropy of the decoded crop with the
    truth's, the crop's frames as the curve's axis), MSE and LPIPS are those of a run without it, and the
    curve term alone sends a gradient through the decoder and the sampler into the UNet."""
    from refocus_edge.export.distillation.ground_truth import focus_curve_loss

    cfg = _cfg(tmp_path, random_model_dir, stacks_npy, steps=1, curve_weight=1.0)
    trainer = _trainer(cfg)
    idx, pos = torch.tensor([0, 1]), torch.tensor([2, 7])
    noise = torch.randn((2, *trainer.data.latents.shape[1:]), generator=torch.Generator().manual_seed(1))
    terms = trainer.losses(trainer.student, trainer.batch(idx, pos), noise, torch.Generator().manual_seed(2))
    assert set(terms) == {"mse", "perceptual", "curve"} and float(terms["curve"].detach()) > 0
    trainer.student.zero_grad()
    terms["curve"].backward()
    grads = [p.grad for p in trainer.student.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    without = _trainer(_cfg(tmp_path / "b", random_model_dir, stacks_npy, steps=1, cache=tmp_path / "gt-cache"))
    with torch.no_grad():
        plain = without.losses(without.student, without.batch(idx, pos), noise, torch.Generator().manual_seed(2))
    assert "curve" not in plain
    assert float(plain["mse"]) == pytest.approx(float(terms["mse"]), rel=1e-6)
    # the term is focus_curve_loss, zero for a stack against itself
    stack = torch.rand(9, 3, 16, 16) * 2 - 1
    assert float(focus_curve_loss(stack, stack, 9)) == pytest.approx(0.0, abs=1e-6)
    assert cfg.training_facts()["curve_weight"] == 1.0 and "curve_weight" not in without.cfg.training_facts()


def test_curve_weight_belongs_to_the_ground_truth_objective(capsys):
    from refocus_edge.cli.main import main

    assert main(["distill", "--teacher", "unused", "--out", "unused", "--curve-weight", "1.0"]) == 2
    assert "--curve-weight and --sizes belong to --objective ground-truth" in capsys.readouterr().err.replace("\n", " ")
    assert main(["distill", "--teacher", "unused", "--out", "unused", "--objective", "ground-truth",
                 "--curve-weight", "-1"]) == 2
    assert "--curve-weight and --perceptual-crop must be >= 0" in capsys.readouterr().err


def test_ground_truth_loss_decreases(tmp_path, random_model_dir, stacks_npy, one_thread):
    # The latent term alone: a random decoder's LPIPS is noise that hides the trend in 40 updates
    # (the perceptual path is covered by the gradient test above).
    cfg = _cfg(tmp_path, random_model_dir, stacks_npy, steps=1, iterations=40, batch=2, perceptual_weight=0.0)
    trainer = _trainer(cfg)
    val = torch.arange(6, 8)
    before = trainer.validation(trainer.student, val)
    trainer.run()
    losses = [loss for _, loss in trainer.history]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    after = trainer.validation(trainer.student, val)
    assert after["latent_mse"] < before["latent_mse"]
    assert np.isfinite(after["lpips"])


def test_resume_continues_the_same_run(tmp_path, random_model_dir, stacks_npy, one_thread):
    """Killed after 3 updates and restarted == never interrupted (weights, EMA, loss history)."""
    from refocus_edge.export.distillation.pipeline import load_teacher

    straight_cfg = _cfg(tmp_path / "a", random_model_dir, stacks_npy, iterations=6)
    teacher = load_teacher(straight_cfg)
    straight = _trainer(straight_cfg, teacher)
    straight.run()

    cut_cfg = _cfg(tmp_path / "b", random_model_dir, stacks_npy, iterations=6, cache=tmp_path / "a" / "gt-cache")
    assert_resume_is_seamless(straight, lambda: _trainer(cut_cfg, teacher), stop_after=3)
    # Another objective's checkpoint is not continued as this one.
    other = _trainer(_cfg(tmp_path / "b", random_model_dir, stacks_npy, iterations=6, perceptual_weight=0.5,
                          cache=tmp_path / "a" / "gt-cache"), teacher)
    from refocus_edge.runtime.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="different settings.*perceptual_weight"):
        other.resume()


def test_ground_truth_cache_refuses_another_model(tmp_path, random_model_dir, stacks_npy):
    from refocus_edge.export.distillation.pipeline import load_teacher, prepare_ground_truth
    from refocus_edge.runtime.errors import InvalidArgumentError

    cfg = _cfg(tmp_path, random_model_dir, stacks_npy)
    teacher = load_teacher(cfg)
    folder = prepare_ground_truth(teacher, cfg, log=lambda m: None)
    meta = json.loads((folder / "meta.json").read_text())
    meta["model_hash"] = "another"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidArgumentError, match="different.*model_hash"):
        prepare_ground_truth(teacher, cfg, log=lambda m: None)


def test_cli_ground_truth_student_is_a_model_like_any_other(tmp_path, random_model_dir, stacks_npy, capsys):
    """`refocus distill --objective ground-truth` -> a folder that loads by path and samples in `steps`
    UNet calls with no flags; its card says how it was trained."""
    from refocus_edge.cli.main import main
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(random_model_dir), "--steps", "2", "--objective", "ground-truth",
            "--data", str(stacks_npy), "--samples", "8", "--iterations", "3", "--batch", "2",
            "--out", str(out), "--run-dir", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    student = load_refocuser(out)
    assert student.config.num_inference_steps == 2 and student.config.guidance_scale == 0
    card = json.loads((out / "refocus.json").read_text())["extra"]
    assert card["objective"] == "ground-truth" and "ground-truth" in card["method"]
    assert "trained toward the true focal stacks" in (out / "README.md").read_text()
    calls = []
    student.unet.register_forward_hook(lambda *a: calls.append(1))
    res = sample_focal_stack(student, torch.rand(1, 3, 64, 64) * 2 - 1, SamplerConfig(position=3, progress=False))
    assert len(calls) == 2 and res.frames.shape == (9, 3, 64, 64)

    capsys.readouterr()
    assert main(argv[:-6] + ["--teacher-weight", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_larger_sizes_train_as_working_size_crops_of_their_renders(tmp_path, random_model_dir, stacks_npy):
    """--sizes: ground truth rendered at the larger size (synthetic renderer: a .npy cache holds one size),
    cached once; a batch drawn from it is latent-aligned working-size crops whose frames are the crops'
    pixels and whose embeddings are the whole input photo's; the loss trains through it."""
    from dataclasses import replace

    from refocus_edge.export.distillation.pipeline import load_teacher, prepare_size_ground_truth
    from refocus_edge.export.distillation.ground_truth import load_ground_truth
    from refocus_edge.runtime.errors import InvalidArgumentError

    cfg = _cfg(tmp_path, random_model_dir, stacks_npy, steps=1, sizes=((128, 64),), size_samples=2, size_mix=1.0)
    teacher = load_teacher(cfg)
    [folder] = prepare_size_ground_truth(teacher, cfg, log=lambda m: None)
    assert folder == Path(f"{cfg.cache}-128x64")
    big = load_ground_truth(folder, 2)
    assert big.latents.shape[-2:] == (8, 16) and big.frames.shape[-2:] == (64, 128)
    trainer = _trainer(cfg)
    trainer.extra = [big]
    batch = trainer.batch(torch.tensor([0, 1]), torch.tensor([3, 5]), big, crop_gen=torch.Generator().manual_seed(0))
    assert batch.latents.shape == (2, 9, *trainer.data.latents.shape[2:])
    assert batch.frames.shape[-2:] == (64, 64)
    for b in range(2):  # each crop is a real place in its larger stack, pixels and latents together
        lat = big.latents[b].float()
        x = next(x for x in range(9) if torch.equal(lat[..., x:x + 8], batch.latents[b]))
        assert torch.equal(big.frames[b, ..., x * 8:x * 8 + 64], batch.frames[b])
    torch.testing.assert_close(batch.embeddings, big.embeddings[[0, 1], [3, 5]].float())
    loss = trainer.loss()
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(InvalidArgumentError, match="at least the working size"):
        prepare_size_ground_truth(teacher, replace(cfg, sizes=((32, 64),)), log=lambda m: None)
