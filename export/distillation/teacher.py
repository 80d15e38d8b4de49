"""The teacher's guided Euler solve, batched over inputs, over any sigma grid.

The maths is the runtime sampler's (runtime/sampler.py): EDM preconditioning of a
v-prediction UNet, timestep 0.25 ln sigma, guidance on the prediction with an
unconditional branch that zeros both conditioning latents and embedding, Euler
steps with the scheduler's own formula. It is restated here for a batch of
different inputs at once (the runtime samples one photo) and to record the
state at chosen levels; tests/test_distill.py checks it reproduces the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from refocus_edge.runtime.conditioning import component_dtype, image_embedding
from refocus_edge.runtime.edm import denoise, euler_step
from refocus_edge.runtime.fast_attention import single_token_cross_attention


@dataclass
class Conditioning:
    """What the UNet is conditioned on, for B inputs."""

    latents: torch.Tensor  # [B, F, C, h, w]: the input's VAE mode at its position, zeros elsewhere
    embeddings: torch.Tensor  # [B, 1, D]
    positions: torch.Tensor  # [B] long


def place_at_positions(latents: torch.Tensor, positions: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B, C, h, w] input latents -> [B, F, C, h, w]: each at its focal position, zeros elsewhere."""
    cond = torch.zeros((len(latents), num_frames, *latents.shape[1:]), dtype=latents.dtype)
    cond[torch.arange(len(latents)), positions] = latents
    return cond


@torch.no_grad()
def encode_inputs(refocuser, images: torch.Tensor, positions) -> Conditioning:
    """[-1, 1] images [B, 3, H, W] at focal `positions` -> the conditioning the sampler builds."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    emb = image_embedding(refocuser.image_encoder, images, refocuser.clip_size,
                          refocuser.clip_mean, refocuser.clip_std).float()
    vae = refocuser.vae
    lat = vae.encode(images.to(component_dtype(vae))).latent_dist.mode().float()  # unscaled
    return Conditioning(place_at_positions(lat, positions, refocuser.config.num_frames), emb, positions)


def guided_denoise(unet, x, sigma, c: Conditioning, guidance: float, time_ids) -> torch.Tensor:
    """The reference's guided x0 estimate; both branches in one batch (exactly as `fast` mode)."""
    if not guidance > 0:  # the reference guides whenever the weight is > 0
        return denoise(unet, x, sigma, c.latents, c.embeddings, time_ids)
    both = denoise(unet, torch.cat([x, x]), sigma, torch.cat([torch.zeros_like(c.latents), c.latents]),
                   torch.cat([torch.zeros_like(c.embeddings), c.embeddings]), time_ids)
    uncond, cond = both.chunk(2)
    # Guidance on v equals guidance on x0: x0 is affine in v with the same coefficients.
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def solve(refocuser, x: torch.Tensor, grid: torch.Tensor, c: Conditioning, record=(),
          guidance: float | None = None, progress=None) -> dict[float, torch.Tensor]:
    """Guided Euler from x (at grid[0]) through `grid` (descending, ending at 0).

    Returns {level: state} for every level of `record` on the grid, plus 0.0: the final sample.
    """
    guidance = refocuser.config.guidance_scale if guidance is None else float(guidance)
    time_ids = torch.tensor([refocuser.config.added_time_ids], dtype=torch.float32)
    wanted = {float(r) for r in record}
    missing = wanted - {float(g) for g in grid}
    if missing:
        raise ValueError(f"levels {sorted(missing)} are not on the grid")
    out = {}
    with single_token_cross_attention(refocuser.unet):
        for i in range(len(grid) - 1):
            sigma, nxt = grid[i], grid[i + 1]
            if float(sigma) in wanted:
                out[float(sigma)] = x.clone()
            d = guided_denoise(refocuser.unet, x, sigma, c, guidance, time_ids)
            x = euler_step(x, d, sigma, nxt)
            if progress is not None:
                progress()
    out[0.0] = x
    return out
