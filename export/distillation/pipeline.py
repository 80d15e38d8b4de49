"""`refocus distill`: teacher trajectories -> student training -> student model folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from export.distillation.config import SHARED_STEP_COUNTS, DistillConfig
from export.distillation.data import FocalStackSource
from export.distillation.schedule import StudentSchedule, student_sigmas, teacher_grid
from runtime.errors import InvalidArgumentError
from runtime.sampler import make_scheduler


def working_size(refocuser, cfg: DistillConfig) -> tuple[int, int]:
    if cfg.size is not None:
        w, h = cfg.size
    elif refocuser.config.fixed_size is not None:
        w, h = refocuser.config.fixed_size
    else:
        raise InvalidArgumentError("this teacher has no fixed working size; give --size WxH "
                                   "(sides multiples of 64, e.g. 512x320)")
    f = refocuser.vae_scale_factor
    if w % f or h % f:
        raise InvalidArgumentError(f"--size {w}x{h}: sides must be multiples of {f}")
    return int(w), int(h)


def recorded_levels(cfg: DistillConfig, teacher_scheduler) -> list[float]:
    """Every nonzero student level of the shared step counts and of this run's schedule."""
    schedules = [StudentSchedule(n) for n in SHARED_STEP_COUNTS] + [cfg.schedule]
    levels = set()
    for sch in schedules:
        sig, _ = student_sigmas(sch, teacher_scheduler)
        levels.update(float(s) for s in sig[:-1])
    return sorted(levels, reverse=True)


def cache_facts(refocuser, cfg: DistillConfig, teacher_hash: str, levels, size) -> dict:
    mcfg = refocuser.config
    return {"teacher_hash": teacher_hash, "data": cfg.data, "size": list(size),
            "teacher_steps": mcfg.num_inference_steps, "guidance_scale": mcfg.guidance_scale,
            "added_time_ids": list(mcfg.added_time_ids), "levels": [float(v) for v in levels]}


def default_cache_dir(facts: dict) -> Path:
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    return Path("runs/distill/cache") / f"trajectories-{digest}"


def teacher_hash_of(refocuser, cfg: DistillConfig) -> str:
    """The teacher folder's hash, and its UNet override's when one is given (the released layout):
    a different finetuned UNet on the same base must not reuse the cache."""
    from runtime.artifacts import model_hash

    base = model_hash(Path(refocuser.source))
    if cfg.teacher_unet is None:
        return base
    return hashlib.sha256(f"{base}:{model_hash(Path(cfg.teacher_unet))}".encode()).hexdigest()


def prepare_trajectories(refocuser, cfg: DistillConfig, log=print) -> Path:
    """Phase 1: make sure the cache holds cfg.samples teacher trajectories; returns its folder."""
    from export.distillation.trajectories import build_cache

    size = working_size(refocuser, cfg)
    levels = recorded_levels(cfg, refocuser.scheduler)
    facts = cache_facts(refocuser, cfg, teacher_hash_of(refocuser, cfg), levels, size)
    folder = Path(cfg.cache) if cfg.cache is not None else default_cache_dir(facts)
    # The teacher's schedule exactly as its sampler sets it (its own sigmas, if it carries any).
    sched = make_scheduler(refocuser, refocuser.config.num_inference_steps)
    grid = teacher_grid(sched, levels)
    source = FocalStackSource(cfg.data, size)
    log(f"distill: teacher trajectories -> {folder} ({cfg.samples} samples from {source.kind}; "
        f"{len(grid) - 1} guided Euler steps each, student levels {[round(v, 4) for v in levels]})")
    return build_cache(refocuser, source, folder, cfg.samples, grid, levels,
                       float(sched.init_noise_sigma), facts, seed=cfg.seed, progress=cfg.progress)


def load_teacher(cfg: DistillConfig):
    from runtime.loading import load_refocuser

    teacher = load_refocuser(cfg.teacher, unet=cfg.teacher_unet)
    for m in (teacher.unet, teacher.vae, teacher.image_encoder):
        m.eval().requires_grad_(False)
    return teacher


def split_counts(n: int) -> tuple[int, int]:
    """(train, validation): the last ~5% (at least 2, at most 32) of the cache is never trained on."""
    val = max(2, min(32, n // 20))
    if n - val < 1:
        raise InvalidArgumentError(f"{n} trajectories are too few to distill from; use --samples >= 4")
    return n - val, val


def _readme(cfg: DistillConfig, card: dict) -> str:
    t = card["training"]
    sig = ", ".join(f"{s:g}" for s in card["sigmas"])
    return f"""# {Path(cfg.out).name}: a {cfg.steps}-step student of {card['teacher']}

Written by `refocus distill` ({card['command']}).

- **Method**: trajectory distillation with the guidance folded in. The teacher's
  guided Euler sampler (weight {card['teacher_guidance']}, zeroed unconditional
  branch) is run once per (input, noise seed) with the student's levels inserted
  in its grid; each student step is trained so that one Euler step with the
  student's x0 estimate lands on the teacher's state at the next level (the last
  step on the teacher's sample), from the teacher's state or from the student's
  own earlier steps ({cfg.rollout_fraction:.0%} of updates). See
  export/distillation/objective.py.
- **Sampling**: {cfg.steps} UNet calls, no guidance (refocus.json guidance_scale 0),
  sigmas {sig} (scheduler config sigma_max {card['sigma_max']:g}, sigma_min
  {card['sigma_min']:g}, Karras).
- **Data**: {t['samples']} teacher trajectories from {card['data']}
  ({t['train_samples']} trained on, {t['val_samples']} held back).
- **Training**: {t['iterations']} updates, batch {cfg.batch}, AdamW lr {cfg.lr:g} (warm-up, cosine),
  EMA {cfg.ema_decay} (EMA weights shipped), trainable: {cfg.trainable}, {cfg.precision};
  started from {card['init']}; {t['seconds'] / 60:.1f} min of updates on {card['device']}.
- **Measured here** (latent MSE between the student's and the teacher's sample,
  held-back trajectories): {t['val_mse_start']:.4f} before training (the weights it
  started from, {card['init']}, run for {cfg.steps} unguided steps), {t['val_mse_end']:.4f} after.
  Training loss over the last 50 updates {t['final_loss']:.4f}.

Why this method: the teacher's calls are the expensive part, so they are paid
once per sample and every update regresses on an exact target on the teacher's
trajectory, with no bootstrapping from the student's own EMA (consistency
distillation) and no stage per halving (progressive distillation). Image-space
quality (LPIPS against ground truth and against the teacher) is measured by
`python -m benchmarks.distillation`.
"""


def run_distillation(cfg: DistillConfig, log=print) -> Path:
    """All three phases; rerunning the same command resumes whichever phase was interrupted."""
    import platform
    import shlex
    import sys

    from diffusers import UNetSpatioTemporalConditionModel

    from export.distillation.student import write_student
    from export.distillation.train import StudentTrainer
    from export.distillation.trajectories import load_cache

    if Path(cfg.out).exists() and not cfg.force:
        raise InvalidArgumentError(f"{cfg.out} already exists; pass --force to replace it")
    teacher = load_teacher(cfg)
    folder = prepare_trajectories(teacher, cfg, log)
    traj, meta = load_cache(folder, cfg.samples)
    n_train, n_val = split_counts(len(traj))
    sigmas, init_sigma = student_sigmas(cfg.schedule, teacher.scheduler)
    if cfg.init is not None:
        student = UNetSpatioTemporalConditionModel.from_pretrained(Path(cfg.init) / "unet"
                                                                   if (Path(cfg.init) / "unet").is_dir() else cfg.init)
    else:
        import copy

        student = copy.deepcopy(teacher.unet)
    trainer = StudentTrainer(student, teacher.config, traj, sigmas, init_sigma, cfg, n_train, log)
    val_idx = torch.arange(n_train, n_train + n_val)
    resumed = trainer.resume()
    start_path = cfg.resolved_run_dir / "val_mse_start.json"
    if not resumed or not start_path.is_file():
        start_path.parent.mkdir(parents=True, exist_ok=True)
        start_path.write_text(json.dumps({"val_mse": trainer.validation_mse(trainer.student, val_idx)}))
    val_start = json.loads(start_path.read_text())["val_mse"]
    log(f"distill: {cfg.steps}-step student, sigmas {[round(float(s), 4) for s in sigmas]}, "
        f"{n_train} trajectories to train on, {n_val} held back (latent MSE to the teacher {val_start:.4f})")
    trainer.run()
    val_end = trainer.validation_mse(trainer.ema, val_idx)
    log(f"distill: held-back latent MSE to the teacher {val_start:.4f} -> {val_end:.4f}")
    sched_cfg = cfg.schedule.scheduler_config(teacher.scheduler)
    card = {
        "summary": f"{cfg.steps}-step guidance-free student of {Path(str(cfg.teacher)).name} "
                   f"({cfg.steps} UNet calls a stack)",
        "distilled_from": str(cfg.teacher), "teacher_hash": meta["teacher_hash"],
        "method": "trajectory distillation, guidance folded in (export/distillation)",
        "steps": cfg.steps, "sigmas": [float(s) for s in sigmas],
    }
    full = dict(card, teacher=Path(str(cfg.teacher)).name, teacher_guidance=teacher.config.guidance_scale,
                sigma_max=sched_cfg["sigma_max"], sigma_min=sched_cfg["sigma_min"], data=meta["data"],
                init=str(cfg.init) if cfg.init else "the teacher's UNet",
                device=f"{cfg.device} ({platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} threads)",
                command="refocus " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "",
                training={"samples": len(traj), "train_samples": n_train, "val_samples": n_val,
                          "iterations": trainer.step, "seconds": trainer.seconds,
                          "final_loss": (sum(v for _, v in trainer.history[-50:]) / len(trainer.history[-50:])
                                         if trainer.history else float("nan")),
                          "val_mse_start": val_start, "val_mse_end": val_end})
    (cfg.resolved_run_dir / "card.json").write_text(json.dumps(full, indent=2) + "\n")
    out = write_student(teacher, trainer.ema, sched_cfg, cfg.steps, Path(cfg.out), card | cfg.extra_card,
                        _readme(cfg, full), force=cfg.force)
    log(f"distill: wrote {out} (run it: refocus run IMAGE --model {out})")
    return out
