"""The student's noise levels, written as an ordinary scheduler config.

A student keeps the teacher's scheduler class (EulerDiscreteScheduler, EDM
v-prediction, Karras sigmas, continuous timesteps) and changes only its
`sigma_max` and `sigma_min`, so that `set_timesteps(steps)` in stock diffusers
gives exactly the student's sigmas. Why not the teacher's 700 -> 0.002: Karras
spacing (rho 7) at 4 steps from 700 puts the second step at sigma ~130, still
pure noise for unit-variance latents, and the last at 0.002, where a call
changes nothing; two of four calls would be wasted. From 20, every call lands
where the image is still being decided (e.g. 20, 6.4, 1.6, 0.3 at 4 steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Endpoints per step count: sigma_max is where sampling starts (pure noise for
# unit-variance latents either way), sigma_min is the last nonzero level.
DEFAULT_SIGMA_MAX = 20.0
DEFAULT_SIGMA_MIN = {1: 20.0, 2: 1.0, 3: 0.5, 4: 0.3}


@dataclass(frozen=True)
class StudentSchedule:
    steps: int
    sigma_max: float = DEFAULT_SIGMA_MAX
    sigma_min: float | None = None  # None: DEFAULT_SIGMA_MIN for the step count (0.3 beyond 4)

    @property
    def resolved_sigma_min(self) -> float:
        if self.sigma_min is not None:
            return float(self.sigma_min)
        return DEFAULT_SIGMA_MIN.get(self.steps, 0.3)

    def scheduler_config(self, teacher_scheduler) -> dict:
        """The teacher's scheduler config with the student's endpoints."""
        config = dict(teacher_scheduler.config)
        if config.get("prediction_type") != "v_prediction" or not config.get("use_karras_sigmas"):
            raise ValueError("distillation expects the reference's EDM v-prediction Karras scheduler; "
                             f"got prediction_type={config.get('prediction_type')!r}, "
                             f"use_karras_sigmas={config.get('use_karras_sigmas')!r}")
        config.update(sigma_max=float(self.sigma_max), sigma_min=self.resolved_sigma_min)
        return {k: v for k, v in config.items() if not k.startswith("_")}

    def scheduler(self, teacher_scheduler):
        sched = type(teacher_scheduler).from_config(self.scheduler_config(teacher_scheduler))
        sched.set_timesteps(self.steps, device="cpu")
        return sched


def student_sigmas(schedule: StudentSchedule, teacher_scheduler) -> tuple[torch.Tensor, float]:
    """(sigmas incl. the final 0, float32 [steps + 1]; init_noise_sigma) exactly as the runtime
    will see them when it loads the student's scheduler config."""
    sched = schedule.scheduler(teacher_scheduler)
    if len(sched.sigmas) != schedule.steps + 1:
        raise ValueError(f"scheduler gave {len(sched.sigmas) - 1} sigmas for {schedule.steps} steps")
    return sched.sigmas.to(torch.float32).clone(), float(sched.init_noise_sigma)


def teacher_grid(teacher_sched, extra_sigmas) -> torch.Tensor:
    """The teacher's own sigma grid (`teacher_sched`: runtime.sampler.make_scheduler's, timesteps
    set) with `extra_sigmas` inserted (descending, ends at 0).

    Inserting a level into an Euler grid only refines it, so the teacher's trajectory stays the
    one its own sampler follows (to its discretisation error) and has a state at every level a
    student steps through.
    """
    levels = {float(s) for s in teacher_sched.sigmas.to(torch.float32)}
    levels.update(float(torch.tensor(s, dtype=torch.float32)) for s in extra_sigmas)
    return torch.tensor(sorted(levels, reverse=True), dtype=torch.float32)
