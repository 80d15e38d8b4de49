"""Few-step distillation on a tiny random refocuser: teacher maths, targets, loss, resume, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from refocus_edge.export.distillation.config import DistillConfig
from refocus_edge.export.distillation.objective import step_target
from refocus_edge.export.distillation.schedule import StudentSchedule, student_sigmas, teacher_grid
from refocus_edge.export.distillation.teacher import encode_inputs, euler_step, solve
from resume_check import assert_resume_is_seamless


def _image(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3, size, size), generator=g) * 2 - 1


def test_teacher_solve_reproduces_the_sampler(random_refocuser):
    """The batched teacher is the runtime's guided sampler: same seed, same frames."""
    from refocus_edge.runtime.sampler import SamplerConfig, decode_latents, initial_noise, sample_focal_stack

    r = random_refocuser
    image = _image(1)
    ref = sample_focal_stack(r, image, SamplerConfig(position=2, seed=7, progress=False))
    sched = type(r.scheduler).from_config(r.scheduler.config)
    sched.set_timesteps(r.config.num_inference_steps)
    x = initial_noise((1, 9, r.latent_channels, 8, 8), 7, sched.init_noise_sigma)
    out = solve(r, x, sched.sigmas.float(), encode_inputs(r, image, [2]))
    frames = decode_latents(r.vae, out[0.0], r.config.decode_chunk_sizes)
    assert (frames - ref.frames).abs().max() <= 1e-4


def test_inserted_levels_refine_the_grid(random_refocuser):
    from refocus_edge.runtime.sampler import make_scheduler

    grid = teacher_grid(make_scheduler(random_refocuser, 4), [20.0, 1.0])
    assert float(grid[-1]) == 0.0 and torch.all(grid[:-1] > grid[1:])
    assert {20.0, 1.0} <= {float(g) for g in grid}
    assert len(grid) == 4 + 1 + 2


def test_student_schedule_is_a_plain_scheduler_config(random_refocuser):
    from diffusers import EulerDiscreteScheduler

    sched_cfg = StudentSchedule(4).scheduler_config(random_refocuser.scheduler)
    stock = EulerDiscreteScheduler.from_config(sched_cfg)
    stock.set_timesteps(4)  # what any diffusers user gets from the saved config
    sigmas, init = student_sigmas(StudentSchedule(4), random_refocuser.scheduler)
    assert torch.equal(stock.sigmas.float(), sigmas)
    assert sigmas[0] == 20.0 and sigmas[-1] == 0.0 and abs(float(sigmas[-2]) - 0.3) < 1e-6
    assert init == pytest.approx((20.0 ** 2 + 1) ** 0.5)
    one, _ = student_sigmas(StudentSchedule(1), random_refocuser.scheduler)
    assert one.tolist() == [20.0, 0.0]


def test_step_target_lands_on_the_teacher():
    """One Euler step with D* from x ends exactly at the teacher's next state (and D* = T0 at the end)."""
    g = torch.Generator().manual_seed(0)
    x, nxt = torch.randn((3, 9, 4, 8, 8), generator=g) * 5, torch.randn((3, 9, 4, 8, 8), generator=g)
    s, n = torch.tensor([5.0, 2.0, 0.5]), torch.tensor([2.0, 0.5, 0.0])
    d = step_target(x, s, n, nxt)
    landed = euler_step(x, d, s, n)
    assert torch.allclose(landed, nxt, atol=1e-5)
    assert torch.equal(d[2], nxt[2])


def _cfg(tmp_path: Path, model_dir: Path, **kw) -> DistillConfig:
    base = dict(teacher=model_dir, out=tmp_path / "student", steps=2, samples=12, iterations=30, batch=4,
                lr=1e-3, run_dir=tmp_path / "run", cache=tmp_path / "cache", progress=False,
                checkpoint_minutes=1e9)
    base.update(kw)
    return DistillConfig(**base)


def _trainer(cfg: DistillConfig, teacher=None):
    import copy

    from refocus_edge.export.distillation.pipeline import load_teacher, prepare_trajectories, split_counts
    from refocus_edge.export.distillation.train import StudentTrainer
    from refocus_edge.export.distillation.trajectories import load_cache

    teacher = teacher or load_teacher(cfg)
    traj, _ = load_cache(prepare_trajectories(teacher, cfg, log=lambda m: None), cfg.samples)
    sigmas, init = student_sigmas(cfg.schedule, teacher.scheduler)
    n_train, _ = split_counts(len(traj))
    return StudentTrainer(copy.deepcopy(teacher.unet), teacher.config, traj, sigmas, init, cfg, n_train,
                          log=lambda m: None)


def test_distillation_loss_decreases(tmp_path, random_model_dir):
    trainer = _trainer(_cfg(tmp_path, random_model_dir, iterations=60, rollout_fraction=0.0))
    val = torch.arange(10, 12)
    before = trainer.validation_mse(trainer.student, torch.arange(0, 10))
    trainer.run()
    losses = [loss for _, loss in trainer.history]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    # The student's own few-step samples move toward the teacher's on the inputs it trained on.
    assert trainer.validation_mse(trainer.student, torch.arange(0, 10)) < before
    assert np.isfinite(trainer.validation_mse(trainer.ema, val))


def test_resume_continues_the_same_run(tmp_path, random_model_dir):
    """Killed after 5 updates and restarted == never interrupted (weights, EMA, loss history)."""
    from refocus_edge.export.distillation.pipeline import load_teacher

    straight_cfg = _cfg(tmp_path / "a", random_model_dir, iterations=10)
    teacher = load_teacher(straight_cfg)
    straight = _trainer(straight_cfg, teacher)
    straight.run()

    cut_cfg = _cfg(tmp_path / "b", random_model_dir, iterations=10, cache=tmp_path / "a" / "cache")
    assert_resume_is_seamless(straight, lambda: _trainer(cut_cfg, teacher), stop_after=5)


def test_resume_refuses_different_settings(tmp_path, random_model_dir):
    from refocus_edge.runtime.errors import InvalidArgumentError

    cfg = _cfg(tmp_path, random_model_dir, iterations=3)
    t = _trainer(cfg)
    t.run()
    other = _trainer(_cfg(tmp_path, random_model_dir, iterations=3, lr=5e-4))
    with pytest.raises(InvalidArgumentError, match="different settings.*lr"):
        other.resume()


def test_cache_resumes_and_refuses_another_teacher(tmp_path, random_model_dir):
    from refocus_edge.export.distillation.pipeline import load_teacher, prepare_trajectories
    from refocus_edge.export.distillation.trajectories import load_cache
    from refocus_edge.runtime.errors import InvalidArgumentError

    cfg = _cfg(tmp_path, random_model_dir, samples=12)
    teacher = load_teacher(cfg)
    folder = prepare_trajectories(teacher, cfg, log=lambda m: None)
    first = sorted(folder.glob("shard_*.pt"))
    (folder / first[-1].name).unlink()  # a run killed mid-way
    mtime = first[0].stat().st_mtime_ns
    prepare_trajectories(teacher, cfg, log=lambda m: None)
    assert first[0].stat().st_mtime_ns == mtime  # finished shards are kept, not recomputed
    traj, meta = load_cache(folder)
    assert len(traj) == 12 and meta["teacher_hash"]
    meta["teacher_hash"] = "another"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidArgumentError, match="different.*teacher_hash"):
        prepare_trajectories(teacher, cfg, log=lambda m: None)


def test_cli_distill_writes_a_model_like_any_other(tmp_path, random_model_dir, capsys):
    """`refocus distill` -> a folder that loads by path and samples in `steps` UNet calls, no flags."""
    from refocus_edge.cli.main import main
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(random_model_dir), "--steps", "2", "--samples", "8",
            "--iterations", "4", "--out", str(out), "--run-dir", str(tmp_path / "run"),
            "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    student = load_refocuser(out)
    assert student.config.num_inference_steps == 2 and student.config.guidance_scale == 0
    assert json.loads((out / "refocus.json").read_text())["extra"]["teacher_hash"]
    assert (out / "README.md").read_text().startswith("# student: a 2-step student")

    calls = []
    student.unet.register_forward_hook(lambda *a: calls.append(1))
    res = sample_focal_stack(student, _image(2), SamplerConfig(position=0, progress=False))
    assert len(calls) == 2 and res.unet_calls == 2
    assert res.sigmas == pytest.approx([20.0, 1.0, 0.0])
    assert res.frames.shape == (9, 3, 64, 64)

    capsys.readouterr()
    assert main(argv) == 2  # the folder exists: refused, nothing replaced
    assert "already exists" in capsys.readouterr().err
    bad = [a if a != "2" else "0" for a in argv]  # --steps 0
    assert main(bad + ["--force"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_data_sources(tmp_path):
    from PIL import Image

    from refocus_edge.export.distillation.data import FocalStackSource
    from refocus_edge.runtime.errors import InvalidArgumentError

    cache = (np.random.default_rng(0).random((3, 9, 64, 64, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "stacks.npy", cache)
    src = FocalStackSource(str(tmp_path / "stacks.npy"), (64, 64))
    img = src.input_image(1, 4)
    assert img.shape == (1, 3, 64, 64)
    assert torch.allclose((img[0] + 1) / 2, torch.from_numpy(cache[1, 4]).permute(2, 0, 1).float() / 255)

    scene = tmp_path / "real" / "FSK_0001" / "scene"
    scene.mkdir(parents=True)
    for k in range(9):
        Image.fromarray(cache[0, k]).save(scene / f"focal_position_000{k}_frame_0000.jpg")
    real = FocalStackSource(str(tmp_path / "real"), (64, 64))
    assert len(real) == 1 and real.frames(0).shape == (9, 3, 64, 64)

    with pytest.raises(InvalidArgumentError, match="expected 'synthetic'"):
        FocalStackSource(str(tmp_path / "nothing-here"), (64, 64))
    with pytest.raises(InvalidArgumentError, match="the teacher works at 128x128"):
        FocalStackSource(str(tmp_path / "stacks.npy"), (128, 128))
