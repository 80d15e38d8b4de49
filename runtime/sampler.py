"""The learn2refocus sampler, written once.

`sample_focal_stack` runs the reference's EDM Euler loop (v-prediction, Karras
sigmas from the scheduler's own config, timestep 0.25 ln sigma, added time ids
[6, 0, 0], guidance 1.5 with an unconditional branch that zeros both the
conditioning latents and the image embedding, decode in chunks of 8 then 1).

Two modes behind the same API:
  * "reference": literally the reference: blank frames encoded then masked, and
    two batch-1 UNet calls per step (50 calls at 25 steps);
  * "fast": the same maths with the free speed-ups: only the input frame is
    encoded, both guidance branches go through the UNet as one batch of 2, and
    cross-attention against the single CLIP token skips the attention.
The fast loop is runtime/euler_loop.py's, the same code the thin runtime runs on numpy
arrays (runtime/array_sampler.py); reference mode keeps its literal loop here, diffusers'
scheduler stepping it. The components passed in may be any modules with the PyTorch call
signatures (a backend wrapper included): the loop never chooses a backend.
"""
from __future__ import annotations

import time

import torch

from refocus_edge.runtime.conditioning import (component_dtype, conditioning_latents, conditioning_latents_literal,
                                  image_embedding)
from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.euler_loop import StepObserver, decode_chunks, denoise_loop, progress_bar
from refocus_edge.runtime.fast_attention import single_token_cross_attention
from refocus_edge.runtime.low_memory import release
from refocus_edge.runtime.sampler_config import Mode, SampleResult, SamplerConfig, resolve_settings  # noqa: F401

NOISE_RNG = "torch.Generator('cpu') (mt19937), torch.randn float32"


def make_scheduler(refocuser, num_inference_steps: int):
    """A fresh scheduler (they are stateful) with the model's sigmas set."""
    scheduler = type(refocuser.scheduler).from_config(refocuser.scheduler.config)
    sigmas = refocuser.config.sigmas
    if sigmas is not None and num_inference_steps == refocuser.config.num_inference_steps:
        scheduler.set_timesteps(sigmas=list(sigmas), device="cpu")
    else:
        scheduler.set_timesteps(num_inference_steps, device="cpu")
    return scheduler


def initial_noise(shape, seed: int, init_noise_sigma) -> torch.Tensor:
    # A CPU generator and fp32, so a seed gives the same noise in every implementation.
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32) * init_noise_sigma


def decode_latents(vae, latents: torch.Tensor, chunk_sizes, guide: tuple | None = None) -> torch.Tensor:
    """[1, F, C, h, w] latents -> [F, 3, H, W] in [0, 1], decoding chunk by chunk. `guide` =
    (input photo [1, 3, H, W] in [-1, 1], its focal position) goes to a photo-guided decoder
    (runtime/tiny_decoder.py; `vae.takes_guide`), which needs it; other decoders ignore it."""
    dtype = component_dtype(vae)
    guided = getattr(vae, "takes_guide", False)
    if guided and guide is None:
        raise InvalidArgumentError("this model's decoder is guided by the input photo: pass guide=(photo, position)")

    def decode(chunk, frames, chunk_guide=None):
        if chunk_guide is None:
            return vae.decode(chunk.to(dtype), num_frames=frames).sample.float()
        photo, offsets = chunk_guide
        return vae.decode(chunk.to(dtype), num_frames=frames,
                          guide=(photo.to(dtype), torch.from_numpy(offsets).to(dtype))).sample.float()

    return decode_chunks(decode, latents, vae.config.scaling_factor, chunk_sizes, guide if guided else None)


@torch.no_grad()
def sample_focal_stack(refocuser, image: torch.Tensor, cfg: SamplerConfig = SamplerConfig(),
                       on_step: StepObserver | None = None, decode: bool = True) -> SampleResult:
    """Generate the focal stack of `image` ([1, 3, H, W] in [-1, 1]).

    `on_step`, when given, sees the denoised estimate after every step (diagnostics such as
    `training.probe`'s trajectory); it cannot change the sample. `decode=False` stops before the
    decoder: the result holds the final latents and no frames (training data for decoders).
    """
    mcfg = refocuser.config
    frames_n = mcfg.num_frames
    run = resolve_settings(refocuser, cfg, tuple(image.shape))
    position, steps, guidance = run.position, run.steps, run.guidance
    literal = cfg.mode == "reference"
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    emb = image_embedding(refocuser.image_encoder, image, refocuser.clip_size,
                          refocuser.clip_mean, refocuser.clip_std)
    release(refocuser.image_encoder)  # low-memory mode: free each component after its stage
    timings["image_encoder"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    encode = conditioning_latents_literal if literal else conditioning_latents
    cond = encode(refocuser.vae, image, position, frames_n)
    release(refocuser.vae)
    timings["vae_encode"] = time.perf_counter() - t0

    scheduler = make_scheduler(refocuser, steps)
    factor = refocuser.vae_scale_factor
    h, w = image.shape[-2] // factor, image.shape[-1] // factor
    latents = initial_noise((1, frames_n, refocuser.latent_channels, h, w), cfg.seed,
                            scheduler.init_noise_sigma)
    unet_dtype = component_dtype(refocuser.unet)
    time_ids = torch.tensor([mcfg.added_time_ids], dtype=unet_dtype)

    def unet(x, t, e, n):
        return refocuser.unet(x.to(unet_dtype), t, encoder_hidden_states=e.to(unet_dtype),
                              added_time_ids=time_ids.repeat(n, 1), return_dict=False)[0].float()

    t0 = time.perf_counter()
    if literal:
        latents, calls = _reference_loop(unet, scheduler, latents, cond, emb, guidance, on_step, cfg.progress)
    else:
        with single_token_cross_attention(refocuser.unet):
            latents, calls = denoise_loop(unet, latents, cond, emb, scheduler.sigmas, scheduler.timesteps,
                                          guidance, on_step, cfg.progress)
    release(refocuser.unet)
    timings["unet_total"] = time.perf_counter() - t0
    timings["unet_per_step"] = timings["unet_total"] / max(len(scheduler.timesteps), 1)

    if not decode:
        return SampleResult(frames=None, position=position, num_inference_steps=steps, guidance_scale=guidance,
                            unet_calls=calls, sigmas=[float(s) for s in scheduler.sigmas], timings=timings,
                            noise=f"{NOISE_RNG}, seed {cfg.seed}", latents=latents)
    t0 = time.perf_counter()
    frames = decode_latents(refocuser.vae, latents, mcfg.decode_chunk_sizes, guide=(image, position))
    release(refocuser.vae)
    timings["vae_decode"] = time.perf_counter() - t0
    timings["total"] = sum(timings[k] for k in ("image_encoder", "vae_encode", "unet_total", "vae_decode"))
    return SampleResult(frames=frames, position=position, num_inference_steps=steps,
                        guidance_scale=guidance, unet_calls=calls,
                        sigmas=[float(s) for s in scheduler.sigmas], timings=timings,
                        noise=f"{NOISE_RNG}, seed {cfg.seed}")


def _reference_loop(unet, scheduler, latents, cond, emb, guidance, on_step, progress):
    """The reference's own loop: diffusers' scheduler steps, two batch-1 UNet calls per guided step."""
    use_guidance = guidance > 0  # the reference guides whenever the weight is > 0
    zero_cond, zero_emb = torch.zeros_like(cond), torch.zeros_like(emb)
    calls = 0
    timesteps = scheduler.timesteps
    for i, t in enumerate(progress_bar(timesteps, progress, len(timesteps))):
        scaled = scheduler.scale_model_input(latents, t)
        if not use_guidance:
            pred = unet(torch.cat([scaled, cond], dim=2), t, emb, 1)
            calls += 1
        else:
            pred_cond = unet(torch.cat([scaled, cond], dim=2), t, emb, 1)
            pred_uncond = unet(torch.cat([scaled, zero_cond], dim=2), t, zero_emb, 1)
            calls += 2
            pred = pred_uncond + guidance * (pred_cond - pred_uncond)
        out = scheduler.step(pred, t, latents)
        latents = out.prev_sample
        if on_step is not None:
            on_step(i, float(scheduler.sigmas[i]), out.pred_original_sample.clone())
    return latents, calls
