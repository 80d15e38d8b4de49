"""The reference's EDM v-parameterised training objective (SVD finetuning recipe)."""
from __future__ import annotations

import math

import torch

from refocus_edge.runtime.edm import denoise  # noqa: F401 (training's callers use edm.denoise)
from training.tiny_architecture import SCHEDULER_CONFIG

# Training sigma ~ LogNormal(0.7, 1.6) in log space; conditioning noise ~ LogNormal(-3, 0.5).
SIGMA_LOG_MEAN, SIGMA_LOG_STD = 0.7, 1.6
COND_NOISE_LOG_MEAN, COND_NOISE_LOG_STD = -3.0, 0.5


# The sampler's own range: the SVD scheduler's Karras sigmas (700 down to 0.002).
SAMPLER_SIGMA_MIN, SAMPLER_SIGMA_MAX = SCHEDULER_CONFIG["sigma_min"], SCHEDULER_CONFIG["sigma_max"]


def sample_sigmas(n: int, generator: torch.Generator, mean=SIGMA_LOG_MEAN, std=SIGMA_LOG_STD,
                  uniform_fraction: float = 0.0) -> torch.Tensor:
    """LogNormal(mean, std) sigmas; a `uniform_fraction` of them log-uniform over the sampler's range instead.

    LogNormal(0.7, 1.6) draws sigma > 100 less than 1% of the time, yet 6 of the 25
    sampling steps are there, where the sample's layout is decided. Mixing in
    log-uniform draws trains the whole range the sampler visits.
    """
    sigmas = torch.exp(torch.randn(n, generator=generator) * std + mean)
    if uniform_fraction > 0:
        lo, hi = math.log(SAMPLER_SIGMA_MIN), math.log(SAMPLER_SIGMA_MAX)
        uniform = torch.exp(lo + (hi - lo) * torch.rand(n, generator=generator))
        pick = torch.rand(n, generator=generator) < uniform_fraction
        sigmas = torch.where(pick, uniform, sigmas)
    return sigmas


def edm_v_loss(denoised: torch.Tensor, target: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Weighted MSE with the reference's weight (1 + sigma^2) / sigma^2."""
    return weighted_loss(denoised, target, sigmas)


LOSS_WEIGHTS = ("edm", "min-snr")


def sigma_weight(sigmas: torch.Tensor, kind: str = "edm", gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weight of the squared error of the denoised (x0) estimate.

    "edm": (1 + sigma^2) / sigma^2, the reference's (EDM with sigma_data 1: a unit-variance v-loss).
    "min-snr": min(SNR, gamma) with SNR = 1 / sigma^2 (Hang et al. 2023, "Efficient Diffusion Training
    via Min-SNR Weighting Strategy"; the same weight whether written on x0, eps or v): the low-noise
    steps, which dominate the EDM weight, are capped at gamma, so they conflict less with the others."""
    snr = 1.0 / sigmas.float() ** 2
    if kind == "edm":
        return 1.0 + snr
    if kind == "min-snr":
        return snr.clamp(max=gamma)
    raise ValueError(f"loss weight {kind!r}: expected one of {LOSS_WEIGHTS}")


def weighted_loss(denoised: torch.Tensor, target: torch.Tensor, sigmas: torch.Tensor, kind: str = "edm",
                  gamma: float = 5.0, own_frame: torch.Tensor | None = None, own_weight: float = 1.0) -> torch.Tensor:
    """Mean of sigma_weight x squared error over [B, F, C, h, w]. With `own_frame` ([B] input positions)
    and `own_weight` != 1, each sample's input frame counts `own_weight` times (the weights normalised
    to mean 1 over the frames): the frame whose latent the conditioning carries, which a UNet that
    uses the conditioning only as a loose hint gets as wrong as the far frames."""
    err = sigma_weight(sigmas, kind, gamma).view(-1, 1, 1, 1, 1) * (denoised.float() - target.float()) ** 2
    if own_frame is None or own_weight == 1.0:
        return err.mean()
    weight = torch.ones(err.shape[:2], device=err.device)
    weight[torch.arange(len(weight), device=err.device), own_frame.to(err.device)] = own_weight
    return (err.mean(dim=(2, 3, 4)) * weight / weight.mean(dim=1, keepdim=True)).mean()


def conditioning_dropout_masks(n: int, generator: torch.Generator, p: float = 0.1):
    """10% drop the image embedding only, 10% the conditioning latents only, 10% both.

    Returns (keep_embedding, keep_latents) as float masks of shape [n].
    """
    u = torch.rand(n, generator=generator)
    drop_emb = (u < p) | ((u >= 2 * p) & (u < 3 * p))
    drop_lat = ((u >= p) & (u < 2 * p)) | ((u >= 2 * p) & (u < 3 * p))
    return (~drop_emb).float(), (~drop_lat).float()
