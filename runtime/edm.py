"""EDM preconditioning of a v-prediction UNet and the Euler step: the one implementation.

The released model is Stable Video Diffusion's: EDM sigmas, v-prediction, timestep
t = log(sigma) / 4. Distillation (export/distillation) and training (training/) build
their losses and few-step samplers from these functions. The runtime sampler keeps
diffusers' EulerDiscreteScheduler, the reference's own arithmetic;
tests/test_edm.py checks that these functions and that scheduler agree step for step.
"""
from __future__ import annotations

import torch

from refocus_edge.runtime.conditioning import component_dtype


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """sigma as float32 [N, 1, 1, 1, 1] on `like`'s device (one value, or one per sample)."""
    return torch.as_tensor(sigma, dtype=torch.float32, device=like.device).reshape(-1, 1, 1, 1, 1)


def scale_input(x: torch.Tensor, sigma) -> torch.Tensor:
    """c_in(sigma) x = x / sqrt(sigma^2 + 1): the scheduler's scale_model_input."""
    s = _per_sample(sigma, x)
    return x / (s ** 2 + 1) ** 0.5


def timestep(sigma) -> torch.Tensor:
    """c_noise(sigma) = log(sigma) / 4, the UNet's timestep: a scalar for one sigma, else [N]."""
    t = 0.25 * torch.as_tensor(sigma, dtype=torch.float32).log().reshape(-1)
    return t.reshape(()) if t.numel() == 1 else t


def denoised_from_v(v: torch.Tensor, x: torch.Tensor, sigma) -> torch.Tensor:
    """x0 = c_skip x + c_out v with c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2 + 1)."""
    s = _per_sample(sigma, x)
    return v * (-s / (s ** 2 + 1) ** 0.5) + x / (s ** 2 + 1)


def denoise(unet, x: torch.Tensor, sigma, cond: torch.Tensor, emb: torch.Tensor,
            time_ids: torch.Tensor) -> torch.Tensor:
    """The x0 estimate D(x; sigma) of a v-prediction UNet: [N, F, C, h, w] noisy latents in,
    denoised latents out (float32). `cond` is concatenated on channels; `time_ids` is [1, k]
    or [N, k]. Inputs are cast to the UNet's parameter dtype (bf16 UNets included)."""
    dtype = component_dtype(unet)
    t = timestep(sigma).to(x.device)
    v = unet(torch.cat([scale_input(x, sigma), cond], dim=2).to(dtype), t, encoder_hidden_states=emb.to(dtype),
             added_time_ids=time_ids.to(dtype).expand(x.shape[0], -1), return_dict=False)[0].float()
    return denoised_from_v(v, x, sigma)


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """EulerDiscreteScheduler.step with s_churn 0: x + (x - D) / sigma * (sigma_next - sigma).

    Sigmas go to the state's device: callers keep their sigma tables on the CPU while x may
    sit on a GPU."""
    s, n = _per_sample(sigma, x), _per_sample(sigma_next, x)
    return x + (x - denoised) / s * (n - s)
