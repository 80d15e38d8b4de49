"""`refocus distill`: teacher trajectories -> student training -> student model folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from refocus_edge.export.distillation.config import SHARED_STEP_COUNTS, DistillConfig
from refocus_edge.export.distillation.data import FocalStackSource, check_larger_size, larger_size_data
from refocus_edge.export.distillation.schedule import StudentSchedule, student_sigmas, teacher_grid
from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.sampler import make_scheduler


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
    from refocus_edge.runtime.artifacts import model_hash

    base = model_hash(Path(refocuser.source))
    if cfg.teacher_unet is None:
        return base
    return hashlib.sha256(f"{base}:{model_hash(Path(cfg.teacher_unet))}".encode()).hexdigest()


def prepare_trajectories(refocuser, cfg: DistillConfig, log=print) -> Path:
    """Phase 1: make sure the cache holds cfg.samples teacher trajectories; returns its folder."""
    from refocus_edge.export.distillation.trajectories import build_cache

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
    from refocus_edge.runtime.loading import load_refocuser

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


_TRAJECTORY_METHOD = """trajectory distillation with the guidance folded in. The teacher's
  guided Euler sampler (weight {guidance}, zeroed unconditional
  branch) is run once per (input, noise seed) with the student's levels inserted
  in its grid; each student step is trained so that one Euler step with the
  student's x0 estimate lands on the teacher's state at the next level (the last
  step on the teacher's sample), from the teacher's state or from the student's
  own earlier steps ({rollout:.0%} of updates). See
  export/distillation/objective.py."""

_GROUND_TRUTH_METHOD = """the student's own {steps}-step Euler sampler, run from noise with
  gradients through every UNet call, trained toward the true focal stacks: latent
  MSE to the encoded ground truth plus {pw:g} x LPIPS (alex) of a decoded crop
  ({crop}) against the true frames{focus}, the temporal decoder frozen{teacher}.
  See export/distillation/ground_truth.py."""


def _readme(cfg: DistillConfig, card: dict) -> str:
    t = card["training"]
    sig = ", ".join(f"{s:g}" for s in card["sigmas"])
    if cfg.objective == "ground-truth":
        crop = f"{cfg.perceptual_crop * 8} px square" if cfg.perceptual_crop else "whole frames"
        teacher = (f"; plus {cfg.teacher_weight:g} x the trajectory-distillation term to the teacher"
                   if cfg.teacher_weight > 0 else "")
        focus = (f", plus {cfg.focus_weight:g} x L1 of the crop's log focus maps to the truth's"
                 if cfg.focus_weight > 0 else "")
        focus += (f", plus {cfg.curve_weight:g} x cross-entropy of its per-pixel focus curves with the truth's"
                  if cfg.curve_weight > 0 else "")
        method = _GROUND_TRUTH_METHOD.format(steps=cfg.steps, pw=cfg.perceptual_weight, crop=crop,
                                             teacher=teacher, focus=focus)
        data = f"{t['samples']} ground-truth stacks from {card['data']}"
        if cfg.sizes:
            sizes = ", ".join(f"{w}x{h}" for w, h in cfg.sizes)
            data += (f"; plus {cfg.size_samples} stacks rendered at each of {sizes} (larger blur in pixels), "
                     f"{cfg.size_mix:.0%} of the updates on random working-size crops of them")
        measured = "against the ground truth, held-back stacks, fixed noise and input positions"
    else:
        method = _TRAJECTORY_METHOD.format(guidance=card["teacher_guidance"], rollout=cfg.rollout_fraction)
        data = f"{t['samples']} teacher trajectories from {card['data']}"
        measured = "latent MSE between the student's and the teacher's sample, held-back trajectories"
    start = ", ".join(f"{k} {v:.4f}" for k, v in t["val_start"].items())
    end = ", ".join(f"{k} {v:.4f}" for k, v in t["val_end"].items())
    return f"""# {Path(cfg.out).name}: a {cfg.steps}-step student of {card['teacher']}

Written by `refocus distill` ({card['command']}).

- **Method**: {method}
- **Sampling**: {cfg.steps} UNet calls, no guidance (refocus.json guidance_scale 0),
  sigmas {sig} (scheduler config sigma_max {card['sigma_max']:g}, sigma_min
  {card['sigma_min']:g}, Karras).
- **Data**: {data}
  ({t['train_samples']} trained on, {t['val_samples']} held back).
- **Training**: {t['iterations']} updates, batch {cfg.batch}, AdamW lr {cfg.lr:g} (warm-up, cosine),
  EMA {cfg.ema_decay} (EMA weights shipped), trainable: {cfg.trainable}, {cfg.precision};
  started from {card['init']}; {t['seconds'] / 60:.1f} min of updates on {card['device']}.
- **Measured here** ({measured}): {start} before training (the weights it
  started from, {card['init']}, run for {cfg.steps} unguided steps); {end} after.
  Training loss over the last 50 updates {t['final_loss']:.4f}.

Image-space quality (LPIPS against ground truth and against the teacher) is
measured by `python -m benchmarks.distillation` and `python -m benchmarks.quality`.
"""


def prepare_ground_truth(refocuser, cfg: DistillConfig, log=print) -> Path:
    """The ground-truth objective's phase 1: the training stacks encoded once; returns the cache folder."""
    from refocus_edge.export.distillation.ground_truth import build_ground_truth, default_ground_truth_dir, ground_truth_facts

    size = working_size(refocuser, cfg)
    facts = ground_truth_facts(refocuser, cfg, size)
    folder = Path(cfg.cache) if cfg.cache is not None else default_ground_truth_dir(facts)
    source = FocalStackSource(cfg.data, size)
    log(f"distill: ground truth -> {folder} ({cfg.samples} stacks from {source.kind}, {size[0]}x{size[1]})")
    return build_ground_truth(refocuser, source, folder, cfg.samples, facts, progress=cfg.progress)


def prepare_size_ground_truth(refocuser, cfg: DistillConfig, log=print) -> list[Path]:
    """The ground truth at each of cfg.sizes (cfg.size_samples stacks each), one cache folder per size
    (where the stacks come from: data.larger_size_data)."""
    from dataclasses import replace

    from refocus_edge.export.distillation.ground_truth import build_ground_truth, default_ground_truth_dir, ground_truth_facts

    working = working_size(refocuser, cfg)
    for size in cfg.sizes:  # before minutes of rendering, not after
        check_larger_size(size, working, refocuser.vae_scale_factor)
    data = larger_size_data(cfg.data)
    folders = []
    for w, h in cfg.sizes:
        facts = ground_truth_facts(refocuser, replace(cfg, data=data), (w, h))
        folder = Path(f"{cfg.cache}-{w}x{h}") if cfg.cache is not None else default_ground_truth_dir(facts)
        source = FocalStackSource(data, (w, h))
        log(f"distill: ground truth at {w}x{h} -> {folder} ({cfg.size_samples} stacks from {source.kind})")
        folders.append(build_ground_truth(refocuser, source, folder, cfg.size_samples, facts, progress=cfg.progress))
    return folders


def _teacher_objective(teacher, cfg: DistillConfig, sigmas, init_sigma, log):
    """The trajectory term beside the ground truth (teacher_weight > 0): its own cache folder."""
    from dataclasses import replace

    from refocus_edge.export.distillation.train import TrajectoryObjective
    from refocus_edge.export.distillation.trajectories import load_cache

    traj_cfg = replace(cfg, cache=None) if cfg.cache is not None else cfg
    traj, _ = load_cache(prepare_trajectories(teacher, traj_cfg, log), cfg.samples)
    n_train, _ = split_counts(len(traj))
    return TrajectoryObjective(traj, sigmas, init_sigma, n_train)


def _ground_truth_phase(teacher, student, cfg: DistillConfig, sigmas, init_sigma, log):
    """-> (trainer, validation fn on held-back stacks, facts for the card)."""
    from refocus_edge.export.distillation.ground_truth import GroundTruthTrainer, load_ground_truth

    folder = prepare_ground_truth(teacher, cfg, log)
    data = load_ground_truth(folder, cfg.samples)
    n_train, n_val = split_counts(len(data))
    objective = _teacher_objective(teacher, cfg, sigmas, init_sigma, log) if cfg.teacher_weight > 0 else None
    extra = [load_ground_truth(folder, cfg.size_samples) for folder in prepare_size_ground_truth(teacher, cfg, log)]
    trainer = GroundTruthTrainer(student, teacher, data, sigmas, init_sigma, cfg, n_train, objective, log,
                                 extra=extra)
    val_idx = torch.arange(n_train, n_train + min(n_val, 16))
    return trainer, lambda unet: trainer.validation(unet, val_idx), {
        "train_samples": n_train, "val_samples": len(val_idx), "samples": len(data)}


def _trajectory_phase(teacher, student, cfg: DistillConfig, sigmas, init_sigma, log):
    from refocus_edge.export.distillation.train import StudentTrainer
    from refocus_edge.export.distillation.trajectories import load_cache

    folder = prepare_trajectories(teacher, cfg, log)
    traj, meta = load_cache(folder, cfg.samples)
    n_train, n_val = split_counts(len(traj))
    trainer = StudentTrainer(student, teacher.config, traj, sigmas, init_sigma, cfg, n_train, log)
    val_idx = torch.arange(n_train, n_train + n_val)
    return trainer, lambda unet: {"latent_mse": trainer.validation_mse(unet, val_idx)}, {
        "train_samples": n_train, "val_samples": n_val, "samples": len(traj)}


def run_distillation(cfg: DistillConfig, log=print) -> Path:
    """All phases; rerunning the same command resumes whichever phase was interrupted."""
    import platform
    import shlex
    import sys

    from diffusers import UNetSpatioTemporalConditionModel

    from refocus_edge.export.distillation.student import write_student

    if Path(cfg.out).exists() and not cfg.force:
        raise InvalidArgumentError(f"{cfg.out} already exists; pass --force to replace it")
    if cfg.objective not in ("teacher", "ground-truth"):
        raise InvalidArgumentError(f"--objective must be 'teacher' or 'ground-truth', got {cfg.objective!r}")
    teacher = load_teacher(cfg)
    sigmas, init_sigma = student_sigmas(cfg.schedule, teacher.scheduler)
    if cfg.init is not None:
        student = UNetSpatioTemporalConditionModel.from_pretrained(Path(cfg.init) / "unet"
                                                                   if (Path(cfg.init) / "unet").is_dir() else cfg.init)
    else:
        import copy

        student = copy.deepcopy(teacher.unet)
    phase = _ground_truth_phase if cfg.objective == "ground-truth" else _trajectory_phase
    trainer, validate, counts = phase(teacher, student, cfg, sigmas, init_sigma, log)
    resumed = trainer.resume()
    start_path = cfg.resolved_run_dir / "val_start.json"
    if not resumed or not start_path.is_file():
        start_path.parent.mkdir(parents=True, exist_ok=True)
        start_path.write_text(json.dumps(validate(trainer.student)))
    val_start = json.loads(start_path.read_text())
    log(f"distill: {cfg.steps}-step student ({cfg.objective} objective), sigmas "
        f"{[round(float(s), 4) for s in sigmas]}, {counts['train_samples']} samples to train on, "
        f"{counts['val_samples']} held back: {_fmt(val_start)}")
    trainer.run()
    val_end = validate(trainer.ema)
    log(f"distill: held back, before -> after: {_fmt(val_start)} -> {_fmt(val_end)}")
    sched_cfg = cfg.schedule.scheduler_config(teacher.scheduler)
    method = ("few-step sampler trained end to end toward the ground-truth stacks "
              f"(latent MSE + {cfg.perceptual_weight:g} x LPIPS of decoded crops"
              + (f" + {cfg.focus_weight:g} x L1 of log focus maps" if cfg.focus_weight > 0 else "")
              + (f" + {cfg.curve_weight:g} x focus-curve cross-entropy" if cfg.curve_weight > 0 else "")
              + (f" + {cfg.teacher_weight:g} x trajectory distillation" if cfg.teacher_weight > 0 else "")
              + ", export/distillation/ground_truth.py)"
              if cfg.objective == "ground-truth" else "trajectory distillation, guidance folded in (export/distillation)")
    card = {
        "summary": f"{cfg.steps}-step guidance-free student of {Path(str(cfg.teacher)).name} "
                   f"({cfg.steps} UNet calls a stack)",
        "distilled_from": str(cfg.teacher), "teacher_hash": teacher_hash_of(teacher, cfg),
        "method": method, "objective": cfg.objective,
        "steps": cfg.steps, "sigmas": [float(s) for s in sigmas],
    }
    full = dict(card, teacher=Path(str(cfg.teacher)).name, teacher_guidance=teacher.config.guidance_scale,
                sigma_max=sched_cfg["sigma_max"], sigma_min=sched_cfg["sigma_min"], data=cfg.data,
                init=str(cfg.init) if cfg.init else "the teacher's UNet",
                device=f"{cfg.device} ({platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} threads)",
                command="refocus " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "",
                training=dict(counts, iterations=trainer.step, seconds=trainer.seconds,
                              final_loss=(sum(v for _, v in trainer.history[-50:]) / len(trainer.history[-50:])
                                          if trainer.history else float("nan")),
                              val_start=val_start, val_end=val_end))
    (cfg.resolved_run_dir / "card.json").write_text(json.dumps(full, indent=2) + "\n")
    out = write_student(teacher, trainer.ema, sched_cfg, cfg.steps, Path(cfg.out), card | cfg.extra_card,
                        _readme(cfg, full), force=cfg.force)
    log(f"distill: wrote {out} (run it: refocus run IMAGE --model {out})")
    return out


def _fmt(val: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in val.items())
