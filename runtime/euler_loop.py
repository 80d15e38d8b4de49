"""The fast sampler's Euler loop and the chunked decode: written once, on arrays.

Both run on numpy arrays (the thin runtime: runtime/array_sampler.py, any bundle backend) and
on torch tensors (runtime/sampler.py's fast mode on a PyTorch model) with the same operations:
the EDM arithmetic of runtime/edm.py, diffusers' Euler step operation for operation. The caller
supplies the UNet as `unet(x, t, emb, batch) -> v` and the decoder as `decode(z, frames[, guide]) -> image`,
already cast to whatever its component computes in; the loop never chooses a backend.

Guidance (weight > 0) batches both branches into one UNet call: [unconditional, conditional],
the unconditional one with zero conditioning latents and a zero image embedding; weight 0 (a
distilled student) makes one batch-1 call a step.
"""
from __future__ import annotations

from typing import Callable, Sequence

from refocus_edge.runtime.arrays import clip01, concat, zeros_like
from refocus_edge.runtime.edm import denoised_at, euler_at, scale_at

# on_step(step index, sigma, denoised latents [1, F, C, h, w]): a read-only view of each step.
StepObserver = Callable[[int, float, object], None]


def progress_bar(iterable, enabled: bool, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="sampling", unit="step", leave=False)


def denoise_loop(unet: Callable, latents, cond, emb, sigmas: Sequence, timesteps: Sequence, guidance: float,
                 on_step: StepObserver | None = None, progress: bool = False):
    """Run the Euler loop from `latents` (noise x init_noise_sigma) -> (final latents, UNet calls).

    `sigmas` has one more entry than `timesteps` (the final sigma); each entry is a scalar of the
    latents' kind (a float32 numpy scalar, a 0-d float32 tensor)."""
    guided = guidance > 0  # the reference guides whenever the weight is > 0
    if guided:
        zero_cond = zeros_like(cond)
        both_emb = concat([zeros_like(emb), emb], 0)
    calls = 0
    for i, t in enumerate(progress_bar(timesteps, progress, len(timesteps))):
        s, s_next = sigmas[i], sigmas[i + 1]
        scaled = scale_at(latents, s)
        if guided:
            x = concat([concat([scaled, zero_cond], 2), concat([scaled, cond], 2)], 0)
            v = unet(x, t, both_emb, 2)
            v_uncond, v_cond = v[:1], v[1:]
            v = v_uncond + guidance * (v_cond - v_uncond)
        else:
            v = unet(concat([scaled, cond], 2), t, emb, 1)
        calls += 1
        denoised = denoised_at(v, latents, s)
        latents = euler_at(latents, denoised, s, s_next)
        if on_step is not None:
            on_step(i, float(s), denoised)
    return latents, calls


def decode_chunks(decode: Callable, latents, scaling_factor: float, chunk_sizes: Sequence[int],
                  guide: tuple | None = None):
    """[1, F, C, h, w] latents -> [F, 3, H, W] in [0, 1], decoding `chunk_sizes` frames at a time
    (the temporal decoder mixes frames inside a chunk only, so the chunking is part of the result)
    with `decode(z, frames)`. For a photo-guided decoder `guide` = (input photo, its position), and
    each chunk is decoded with `decode(z, frames, (photo, the chunk's frame_offsets))`."""
    flat = latents[0] / scaling_factor
    out, start = [], 0
    for size in chunk_sizes:
        z = flat[start:start + size]
        if guide is None:
            out.append(decode(z, size))
        else:
            out.append(decode(z, size, (guide[0], frame_offsets(start, size, guide[1], flat.shape[0]))))
        start += size
    return clip01(concat(out, 0) / 2 + 0.5)


def frame_offsets(start: int, size: int, position: int, num_frames: int):
    """(j - position) / (num_frames - 1) for the frames j of a chunk starting at `start`: how far
    each output frame's focus is from the input photo's, what a photo-guided decoder is told."""
    import numpy as np

    return ((np.arange(start, start + size) - position) / max(num_frames - 1, 1)).astype(np.float32)
