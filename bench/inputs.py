"""What every latency measurement feeds: a seeded image, stage inputs prepared outside the timed
region, and the plain diffusers-style loop the speed-ups are compared with."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from refocus_edge.runtime.conditioning import component_dtype, conditioning_latents, image_embedding
from refocus_edge.runtime.sampler import make_scheduler


@torch.no_grad()
def diffusers_baseline(refocuser, image: torch.Tensor, position: int, seed: int = 0,
                       steps: int | None = None) -> torch.Tensor:
    """The SVD-pipeline-style loop, written inline: [1, 3, H, W] in [-1, 1] -> [9, 3, H, W] in [0, 1].

    Same maths as the reference (so same output), none of the project's speed-ups:
    what "just use diffusers" costs. It only encodes the input frame, as a user would.
    """
    from refocus_edge.runtime.sampler import decode_latents, initial_noise

    cfg, unet, vae = refocuser.config, refocuser.unet, refocuser.vae
    steps = cfg.num_inference_steps if steps is None else steps
    dtype = component_dtype(unet)
    emb = image_embedding(refocuser.image_encoder, image, refocuser.clip_size, refocuser.clip_mean,
                          refocuser.clip_std).to(dtype)
    cond = conditioning_latents(vae, image, position, cfg.num_frames).to(dtype)
    scheduler = make_scheduler(refocuser, steps)
    h, w = image.shape[-2] // refocuser.vae_scale_factor, image.shape[-1] // refocuser.vae_scale_factor
    # Same noise helper as the sampler, so that the outputs can be compared.
    latents = initial_noise((1, cfg.num_frames, refocuser.latent_channels, h, w), seed, scheduler.init_noise_sigma)
    time_ids = torch.tensor([cfg.added_time_ids], dtype=dtype)
    for t in scheduler.timesteps:
        scaled = scheduler.scale_model_input(latents, t).to(dtype)
        pred_cond = unet(torch.cat([scaled, cond], dim=2), t, encoder_hidden_states=emb,
                         added_time_ids=time_ids).sample.float()
        pred_uncond = unet(torch.cat([scaled, torch.zeros_like(cond)], dim=2), t,
                           encoder_hidden_states=torch.zeros_like(emb), added_time_ids=time_ids).sample.float()
        pred = pred_uncond + cfg.guidance_scale * (pred_cond - pred_uncond)
        latents = scheduler.step(pred, t, latents).prev_sample
    return decode_latents(vae, latents, cfg.decode_chunk_sizes)


def bench_image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A seeded [1, 3, H, W] image in [-1, 1]; content does not change CPU latency."""
    w, h = size
    return torch.rand((1, 3, h, w), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def stage_inputs(refocuser, size, position: int, seed: int, steps: int) -> SimpleNamespace:
    """The inputs every stage benchmark feeds, prepared once outside the timed region.

    image, emb/cond (batch 1), x1 (batch 1) and x2/emb2 (batch 2 = [unconditional, conditional],
    the order fast mode uses), ids, the first timestep t, and random latents [1, F, C, h, w]."""
    unet, vae = refocuser.unet, refocuser.vae
    image = bench_image(size, seed)
    dtype = component_dtype(unet)
    with torch.no_grad():
        emb = image_embedding(refocuser.image_encoder, image, refocuser.clip_size, refocuser.clip_mean,
                              refocuser.clip_std).to(dtype)
        cond = conditioning_latents(vae, image, position, refocuser.config.num_frames).to(dtype)
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randn(cond.shape, generator=g).to(dtype)
    x1 = torch.cat([noisy, cond], dim=2)
    return SimpleNamespace(
        image=image, emb=emb, cond=cond, x1=x1,
        x2=torch.cat([torch.cat([noisy, torch.zeros_like(cond)], dim=2), x1]),
        emb2=torch.cat([torch.zeros_like(emb), emb]),
        ids=torch.tensor([refocuser.config.added_time_ids], dtype=dtype),
        t=make_scheduler(refocuser, steps).timesteps[0],  # the timestep value does not change the cost
        latents=torch.randn(cond.shape, generator=g))
