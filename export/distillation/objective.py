"""What a student step is trained to do.

A student step from level s to level n is one Euler step with the student's own
x0 estimate D: x_n = x + (x - D) / s * (n - s). It should land where the
guided teacher's trajectory is at n. Solving that for D gives the target

    D* = x - s * (T_n - x) / (n - s)        (n > 0)
    D* = T_0                                (n = 0: the teacher's sample)

so the loss is a plain regression of D on D*, in x0 units (unit-variance
latents), for every step alike. x is either the teacher's own state at s or
where the student's own earlier steps put it (so it learns to return to the
teacher's path from its own mistakes, which is what inference feeds it).
"""
from __future__ import annotations

import torch


def step_target(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                teacher_next: torch.Tensor) -> torch.Tensor:
    """D* per sample; sigma and sigma_next are [B] float32."""
    s = sigma.reshape(-1, 1, 1, 1, 1)
    n = sigma_next.reshape(-1, 1, 1, 1, 1)
    last = (n == 0).to(x.dtype)
    denom = torch.where(n == 0, torch.ones_like(n), n - s)
    through = x - s * (teacher_next - x) / denom
    return last * teacher_next + (1 - last) * through


def regression_loss(denoised: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (denoised.float() - target.float()).pow(2).mean()
