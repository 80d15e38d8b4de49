"""The student's training: learning-rate schedule, trainable parameters and the student trainers,
on the shared checkpointed loop (export/training_loop.py: deterministic, resumable, EMA; a run
whose settings differ (steps, batch, lr, ...) is refused rather than mixed)."""
from __future__ import annotations

import copy
from contextlib import nullcontext

import torch

from refocus_edge.export.distillation.config import DistillConfig
from refocus_edge.export.distillation.objective import regression_loss, step_target
from refocus_edge.export.distillation.trajectories import Trajectories
from refocus_edge.export.training_loop import CheckpointedTrainer, warmup_cosine
from refocus_edge.runtime.edm import denoise, euler_step
from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.sampler import initial_noise

WARMUP = 50


def lr_at(step: int, cfg: DistillConfig) -> float:
    return warmup_cosine(step, cfg.iterations, cfg.lr, WARMUP, floor=0.1)


def trainable_parameters(unet, which: str) -> list[torch.nn.Parameter]:
    """'all', or 'temporal': the temporal transformer blocks only (what the reference finetuned)."""
    if which == "all":
        chosen = list(unet.parameters())
    elif which == "temporal":
        unet.requires_grad_(False)
        chosen = [p for n, p in unet.named_parameters() if "temporal_transformer_blocks" in n]
        if not chosen:
            raise InvalidArgumentError("--trainable temporal: this UNet has no temporal transformer blocks")
    else:
        raise InvalidArgumentError(f"--trainable must be 'all' or 'temporal', got {which!r}")
    for p in chosen:
        p.requires_grad_(True)
    return chosen


def initial_states(traj: Trajectories, init_sigma: float) -> torch.Tensor:
    """The student's starting noise per sample: the runtime's draw for that seed at its own sigma."""
    shape = (1, *traj.final.shape[1:])
    return torch.cat([initial_noise(shape, int(s), init_sigma) for s in traj.noise_seeds])


class TrainerCore(CheckpointedTrainer):
    """What every student training run shares: the student and its EMA, AdamW with warm-up and
    cosine lr, one seeded data generator, and the checkpointed loop (export/training_loop.py).
    Subclasses say what one update's loss is (`loss`)."""

    desc = "distill"
    ckpt_key = "student"

    def _setup(self, student, teacher_config, cfg: DistillConfig, log) -> None:
        self.cfg, self.log = cfg, log
        self.device = torch.device(cfg.device)
        self.student = student.to(self.device).train()
        if cfg.gradient_checkpointing:
            self.student.enable_gradient_checkpointing()
        self.params = trainable_parameters(self.student, cfg.trainable)
        self.ema = copy.deepcopy(self.student).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.time_ids = torch.tensor([teacher_config.added_time_ids], dtype=torch.float32, device=self.device)
        self._start_counters()
        self.ckpt = cfg.resolved_run_dir / "student.ckpt"

    @property
    def model(self):
        return self.student

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.cfg)

    def bar_desc(self) -> str:
        return f"{self.desc} {self.steps}-step"

    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _d(self, unet, x, sigma, c):
        with self._autocast():
            return denoise(unet, x, sigma, c.latents.to(self.device), c.embeddings.to(self.device),
                           self.time_ids).float()


class TrajectoryObjective:
    """Trajectory distillation's loss for a trainer's student: one student step, from the teacher's
    state at a student level (or where the student's own earlier steps put it), regressed on the
    x0 estimate that lands on the teacher's state at the next level (objective.step_target)."""

    def __init__(self, traj: Trajectories, sigmas: torch.Tensor, init_sigma: float, train_count: int):
        self.traj, self.sigmas = traj, sigmas.to(torch.float32)
        self.steps = len(sigmas) - 1
        missing = [float(s) for s in self.sigmas[1:-1] if float(s) not in traj.levels]
        if missing:
            raise InvalidArgumentError(f"the trajectory cache has no teacher states at {missing}; "
                                       "build one for this schedule (a new --cache folder)")
        self.init = initial_states(traj, init_sigma)
        self.train_count = int(train_count)

    def _states(self, t, idx, k, rollout) -> torch.Tensor:
        """x at level k per sample: the teacher's state, or the student's own after k steps."""
        x = torch.stack([self.init[i] if kk == 0 else self.traj.state_at(i, self.sigmas[kk])
                         for i, kk in zip(idx.tolist(), k.tolist())]).to(t.device)
        own = (rollout & (k > 0)).nonzero().flatten()
        if len(own):
            sub = idx[own]
            c = self.traj.conditioning(sub)
            y = self.init[sub].to(t.device)
            with torch.no_grad():
                for j in range(int(k[own].max())):
                    active = (k[own] > j).nonzero().flatten()
                    if not len(active):
                        break
                    s = self.sigmas[j].expand(len(active)).to(t.device)
                    ca = type(c)(c.latents[active], c.embeddings[active], c.positions[active])
                    d = t._d(t.student, y[active], s, ca)
                    y[active] = euler_step(y[active], d, s, self.sigmas[j + 1])
            x[own] = y
        return x

    def loss(self, t: TrainerCore) -> torch.Tensor:
        cfg, b = t.cfg, t.cfg.batch
        idx = torch.randint(self.train_count, (b,), generator=t.gen)
        k = torch.randint(self.steps, (b,), generator=t.gen)
        rollout = torch.rand(b, generator=t.gen) < cfg.rollout_fraction
        x = self._states(t, idx, k, rollout)
        s, n = self.sigmas[k].to(t.device), self.sigmas[k + 1].to(t.device)
        nxt = torch.stack([self.traj.final[i] if kk + 1 == self.steps else self.traj.state_at(i, self.sigmas[kk + 1])
                           for i, kk in zip(idx.tolist(), k.tolist())]).to(t.device)
        target = step_target(x, s, n, nxt)
        return regression_loss(t._d(t.student, x, s, self.traj.conditioning(idx)), target)


class StudentTrainer(TrainerCore):
    """Trajectory distillation: every student step regresses on the teacher's trajectory."""

    def __init__(self, student, teacher_config, traj: Trajectories, sigmas: torch.Tensor, init_sigma: float,
                 cfg: DistillConfig, train_count: int, log=print):
        self.objective = TrajectoryObjective(traj, sigmas, init_sigma, train_count)
        self.traj, self.sigmas, self.steps = traj, self.objective.sigmas, self.objective.steps
        self.init, self.train_count = self.objective.init, self.objective.train_count
        self._setup(student, teacher_config, cfg, log)

    def loss(self) -> torch.Tensor:
        return self.objective.loss(self)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def sample(self, unet, idx: torch.Tensor) -> torch.Tensor:
        """The student's full few-step sample for cached inputs `idx` (as the runtime would draw it)."""
        c = self.traj.conditioning(idx)
        x = self.init[idx].to(self.device)
        for j in range(self.steps):
            s = self.sigmas[j].expand(len(idx)).to(self.device)
            x = euler_step(x, self._d(unet, x, s, c), s, self.sigmas[j + 1])
        return x

    def validation_mse(self, unet, idx: torch.Tensor) -> float:
        """Latent MSE between the student's sample and the teacher's, on samples never trained on."""
        return float((self.sample(unet, idx).cpu() - self.traj.final[idx]).pow(2).mean())
