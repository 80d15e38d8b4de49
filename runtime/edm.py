"""EDM preconditioning of a v-prediction UNet and the Euler step: the one implementation.

The released model is Stable Video Diffusion's: EDM sigmas, v-prediction, timestep
t = log(sigma) / 4. The formulas (`*_at`) are written once for any array type whose sigma
broadcasts against the latents: numpy arrays with a float32 sigma (the thin runtime's sampler
loop, runtime/euler_loop.py) and torch tensors (the same loop on a PyTorch model, distillation
in export/distillation, training in training/). They are diffusers' EulerDiscreteScheduler
arithmetic, operation for operation; the runtime's reference mode keeps that scheduler itself,
and tests/test_edm.py checks that these functions and it agree step for step.

The torch entry points below (`scale_input`, `denoised_from_v`, `euler_step`, `timestep`,
`denoise`) take one sigma or one per sample and import torch when called.
"""
from __future__ import annotations


def scale_at(x, s):
    """c_in(sigma) x = x / sqrt(sigma^2 + 1): the scheduler's scale_model_input."""
    return x / (s ** 2 + 1) ** 0.5


def denoised_at(v, x, s):
    """x0 = c_skip x + c_out v with c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2 + 1)."""
    return v * (-s / (s ** 2 + 1) ** 0.5) + x / (s ** 2 + 1)


def euler_at(x, denoised, s, s_next):
    """EulerDiscreteScheduler.step with s_churn 0: x + (x - D) / sigma * (sigma_next - sigma)."""
    return x + (x - denoised) / s * (s_next - s)


def _per_sample(sigma, like):
    """sigma as float32 [N, 1, 1, 1, 1] on `like`'s device (one value, or one per sample)."""
    import torch

    return torch.as_tensor(sigma, dtype=torch.float32, device=like.device).reshape(-1, 1, 1, 1, 1)


def scale_input(x, sigma):
    return scale_at(x, _per_sample(sigma, x))


def timestep(sigma):
    """c_noise(sigma) = log(sigma) / 4, the UNet's timestep: a scalar for one sigma, else [N]."""
    import torch

    t = 0.25 * torch.as_tensor(sigma, dtype=torch.float32).log().reshape(-1)
    return t.reshape(()) if t.numel() == 1 else t


def denoised_from_v(v, x, sigma):
    return denoised_at(v, x, _per_sample(sigma, x))


def denoise(unet, x, sigma, cond, emb, time_ids):
    """The x0 estimate D(x; sigma) of a v-prediction UNet: [N, F, C, h, w] noisy latents in,
    denoised latents out (float32). `cond` is concatenated on channels; `time_ids` is [1, k]
    or [N, k]. Inputs are cast to the UNet's parameter dtype (bf16 UNets included)."""
    import torch

    from refocus_edge.runtime.conditioning import component_dtype

    dtype = component_dtype(unet)
    t = timestep(sigma).to(x.device)
    v = unet(torch.cat([scale_input(x, sigma), cond], dim=2).to(dtype), t, encoder_hidden_states=emb.to(dtype),
             added_time_ids=time_ids.to(dtype).expand(x.shape[0], -1), return_dict=False)[0].float()
    return denoised_from_v(v, x, sigma)


def euler_step(x, denoised, sigma, sigma_next):
    """The Euler step on torch tensors. Sigmas go to the state's device: callers keep their sigma
    tables on the CPU while x may sit on a GPU."""
    return euler_at(x, denoised, _per_sample(sigma, x), _per_sample(sigma_next, x))
