"""The two conditioning signals of the refocuser, computed as the reference does.

* Image embedding: CLIP of the input, [1, 1, D]. The reference resizes the
  [-1, 1] image to 224x224 with antialiasing and then feeds that [-1, 1] tensor
  straight into CLIP's mean/std normalisation (its training used [0, 1]); we
  keep that quirk because reference mode must match it.
* Conditioning latents: VAE `.mode()` of the input at frame k, not multiplied by
  the scaling factor, exact zeros at every other frame.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from refocus_edge.runtime.quiet import quiet_libraries


def component_dtype(module) -> torch.dtype:
    """The dtype a component computes in: diffusers/transformers models and backend adapters
    say so (`.dtype`); any other torch module (a test spy, a user's wrapper) by its weights."""
    dtype = getattr(module, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    params = getattr(module, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.dtype if first is not None else torch.float32


@functools.lru_cache(maxsize=1)
def _reference_resize():
    """The exact resize the SVD pipeline (and so the reference) uses, looked up once."""
    try:
        with quiet_libraries():  # importing the pipeline module makes transformers talk
            from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
                _resize_with_antialiasing,
            )
    except ImportError:  # pragma: no cover - older/newer diffusers without the helper
        return lambda image, size: F.interpolate(image, size=size, mode="bicubic", align_corners=True,
                                                 antialias=True)
    return _resize_with_antialiasing


def _resize_antialiased(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _reference_resize()(image, size)


def clip_pixels(image: torch.Tensor, size, mean, std) -> torch.Tensor:
    """[-1, 1] image [B, 3, H, W] -> CLIP input, with the reference's normalisation quirk."""
    x = _resize_antialiased(image, tuple(size))
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def image_embedding(image_encoder, image: torch.Tensor, size, mean, std) -> torch.Tensor:
    """[-1, 1] image [B, 3, H, W] -> [B, 1, D] image embedding."""
    dtype = component_dtype(image_encoder)
    pixels = clip_pixels(image, size, mean, std).to(dtype)
    return image_encoder(pixels).image_embeds.unsqueeze(1)


def conditioning_latents(vae, image: torch.Tensor, position: int, num_frames: int) -> torch.Tensor:
    """[-1, 1] image [1, 3, H, W] -> [1, F, C, h, w]: the input's latent at `position`, zeros elsewhere."""
    dtype = component_dtype(vae)
    latent = vae.encode(image.to(dtype)).latent_dist.mode()  # unscaled, as the reference
    cond = torch.zeros((1, num_frames, *latent.shape[1:]), dtype=latent.dtype, device=latent.device)
    cond[0, position] = latent[0]
    return cond


def conditioning_latents_literal(vae, image: torch.Tensor, position: int, num_frames: int) -> torch.Tensor:
    """The reference's own way: encode 8 mid-gray frames too, then mask them to zero."""
    dtype = component_dtype(vae)
    frames = torch.zeros((num_frames, *image.shape[1:]), dtype=dtype, device=image.device)  # 0 = mid-gray
    frames[position] = image[0].to(dtype)
    latents = vae.encode(frames).latent_dist.mode()
    mask = torch.zeros((num_frames, 1, 1, 1), dtype=latents.dtype, device=latents.device)
    mask[position] = 1.0
    return (latents * mask).unsqueeze(0)
