"""The reference's EDM v-parameterised training objective (SVD finetuning recipe)."""
from __future__ import annotations

import torch

# Training sigma ~ LogNormal(0.7, 1.6) in log space; conditioning noise ~ LogNormal(-3, 0.5).
SIGMA_LOG_MEAN, SIGMA_LOG_STD = 0.7, 1.6
COND_NOISE_LOG_MEAN, COND_NOISE_LOG_STD = -3.0, 0.5


def sample_sigmas(n: int, generator: torch.Generator, mean=SIGMA_LOG_MEAN, std=SIGMA_LOG_STD) -> torch.Tensor:
    return torch.exp(torch.randn(n, generator=generator) * std + mean)


def denoise(unet, noisy: torch.Tensor, sigmas: torch.Tensor, cond_latents, embeddings, time_ids):
    """EDM preconditioning around a v-prediction UNet: returns the denoised latents."""
    s = sigmas.view(-1, 1, 1, 1, 1)
    scaled = noisy / (s ** 2 + 1) ** 0.5  # the scheduler's scale_model_input
    timesteps = 0.25 * sigmas.log()
    v = unet(torch.cat([scaled, cond_latents], dim=2), timesteps, encoder_hidden_states=embeddings,
             added_time_ids=time_ids, return_dict=False)[0]
    c_out = -s / (s ** 2 + 1) ** 0.5
    c_skip = 1 / (s ** 2 + 1)
    return v * c_out + noisy * c_skip


def edm_v_loss(denoised: torch.Tensor, target: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Weighted MSE with the reference's weight (1 + sigma^2) / sigma^2."""
    weight = ((1 + sigmas ** 2) / sigmas ** 2).view(-1, 1, 1, 1, 1)
    return (weight * (denoised.float() - target.float()) ** 2).mean()


def conditioning_dropout_masks(n: int, generator: torch.Generator, p: float = 0.1):
    """10% drop the image embedding only, 10% the conditioning latents only, 10% both.

    Returns (keep_embedding, keep_latents) as float masks of shape [n].
    """
    u = torch.rand(n, generator=generator)
    drop_emb = (u < p) | ((u >= 2 * p) & (u < 3 * p))
    drop_lat = ((u >= p) & (u < 2 * p)) | ((u >= 2 * p) & (u < 3 * p))
    return (~drop_emb).float(), (~drop_lat).float()
