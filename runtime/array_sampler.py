"""The thin runtime's sampler: a bundle's focal stack on numpy arrays, without torch.

The fast mode of runtime/sampler.py on numpy: image embedding and conditioning latents
(runtime/array_conditioning.py), the Euler loop and the chunked decode of
runtime/euler_loop.py (the same code the PyTorch sampler runs), sigmas and timesteps from
the scheduler's stored config (runtime/sigmas.py). The components are a bundle's backend
adapters taking numpy arrays (runtime/bundle_loading.py with arrays=True), whichever backend
runs them; a torch or TensorRT component converts at its own boundary.

Noise: numpy cannot draw torch's generator's numbers, so the thin runtime draws its own,
`numpy.random.Generator(PCG64(seed)).standard_normal(float32)` (`noise_rng`), and says so in
SampleResult.noise (run.json). The same seed therefore gives another sample than a PyTorch run
of the model folder; with the same noise array (`noise=`), the two agree to graph precision
(tests/test_thin_runtime.py). The literal reference loop (mode "reference") stays PyTorch's.
"""
from __future__ import annotations

import time

import numpy as np

from refocus_edge.runtime.array_conditioning import conditioning_latents, image_embedding
from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.euler_loop import StepObserver, decode_chunks, denoise_loop
from refocus_edge.runtime.low_memory import release
from refocus_edge.runtime.sampler_config import SampleResult, SamplerConfig, resolve_settings
from refocus_edge.runtime.sigmas import model_schedule

NOISE_RNG = "numpy.random.Generator(PCG64), standard_normal float32"


def noise_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed)))


def sample_focal_stack_arrays(refocuser, image: np.ndarray, cfg: SamplerConfig = SamplerConfig(),
                              noise: np.ndarray | None = None,
                              on_step: StepObserver | None = None) -> SampleResult:
    """The focal stack of `image` (float32 [1, 3, H, W] in [-1, 1]): frames float32 [F, 3, H, W] in [0, 1].

    `noise`: the standard-normal initial noise [1, F, C, h, w] to use instead of drawing it from
    cfg.seed (parity tests feed the PyTorch sampler's)."""
    if cfg.mode != "fast":
        raise InvalidArgumentError(f"the thin runtime samples in mode fast; mode {cfg.mode!r} is the literal "
                                   "PyTorch loop (install torch to run it)")
    image = np.asarray(image, dtype=np.float32)
    run = resolve_settings(refocuser, cfg, image.shape)
    mcfg = refocuser.config
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    emb = image_embedding(refocuser.image_encoder, image, refocuser.clip_size, refocuser.clip_mean,
                          refocuser.clip_std)
    release(refocuser.image_encoder)  # low-memory mode: free each component after its stage
    timings["image_encoder"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cond = conditioning_latents(refocuser.vae, image, run.position, mcfg.num_frames)
    release(refocuser.vae)
    timings["vae_encode"] = time.perf_counter() - t0

    schedule = model_schedule(refocuser.scheduler.config, mcfg, run.steps)
    factor = refocuser.vae_scale_factor
    shape = (1, mcfg.num_frames, refocuser.latent_channels, image.shape[-2] // factor, image.shape[-1] // factor)
    if noise is None:
        noise = noise_rng(cfg.seed).standard_normal(shape, dtype=np.float32)
        drawn = f"{NOISE_RNG}, seed {cfg.seed}"
    else:
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape != shape:
            raise InvalidArgumentError(f"noise must have shape {list(shape)}, got {list(noise.shape)}")
        drawn = "given by the caller"
    latents = noise * schedule.init_noise_sigma
    time_ids = np.asarray([mcfg.added_time_ids], dtype=np.float32)

    def unet(x, t, e, n):
        return refocuser.unet(x, t, encoder_hidden_states=e, added_time_ids=np.repeat(time_ids, n, axis=0),
                              return_dict=False)[0]

    t0 = time.perf_counter()
    latents, calls = denoise_loop(unet, latents, cond, emb, schedule.sigmas, schedule.timesteps, run.guidance,
                                  on_step, cfg.progress)
    release(refocuser.unet)
    timings["unet_total"] = time.perf_counter() - t0
    timings["unet_per_step"] = timings["unet_total"] / max(len(schedule.timesteps), 1)

    t0 = time.perf_counter()
    def decode(z, n, chunk_guide=None):
        if chunk_guide is None:
            return refocuser.vae.decode(z, num_frames=n).sample
        return refocuser.vae.decode(z, num_frames=n, guide=chunk_guide).sample

    guide = (image, run.position) if getattr(refocuser.vae, "takes_guide", False) else None  # photo-guided
    frames = decode_chunks(decode, latents, refocuser.vae.config.scaling_factor, mcfg.decode_chunk_sizes, guide)
    release(refocuser.vae)
    timings["vae_decode"] = time.perf_counter() - t0
    timings["total"] = sum(timings[k] for k in ("image_encoder", "vae_encode", "unet_total", "vae_decode"))
    return SampleResult(frames=np.asarray(frames, dtype=np.float32), position=run.position,
                        num_inference_steps=run.steps, guidance_scale=run.guidance, unet_calls=calls,
                        sigmas=[float(s) for s in schedule.sigmas], timings=timings, noise=drawn)
