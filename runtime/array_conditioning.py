"""The refocuser's conditioning signals on numpy arrays, for the thin runtime.

The same signals as runtime/conditioning.py computes with torch (see its docstring for the
reference's conventions, its [-1, 1] CLIP quirk included), from components with the PyTorch
call signatures that take and return numpy arrays (runtime/backends/adapters.py):

* `resize_antialiased`: Stable Video Diffusion's `_resize_with_antialiasing` (a separable
  Gaussian blur, sigma (factor - 1) / 2 and a kernel of about 4 sigma, reflect-padded, then
  bicubic interpolation with align_corners=True and PyTorch's A = -0.75), in float32;
  tests/test_thin_runtime.py holds it within 1e-5 of the diffusers function.
* `image_embedding`: CLIP of the resized, normalised image, [B, 1, D].
* `conditioning_latents`: the VAE posterior mode of the input at frame k, zeros elsewhere.
"""
from __future__ import annotations

import numpy as np

CUBIC_A = -0.75  # PyTorch's bicubic convolution constant


def _blur_size(factor: float) -> tuple[float, int]:
    """Gaussian sigma and odd kernel size for a downscale by `factor` (skimage's rule, 2 sigma a side)."""
    sigma = max((factor - 1.0) / 2.0, 0.001)
    size = int(max(2.0 * 2 * sigma, 3))
    return sigma, size + 1 - size % 2


def _gaussian(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float32) - np.float32(size // 2)
    g = np.exp(-x ** 2 / (np.float32(2) * np.float32(sigma) ** 2))
    return g / g.sum()


def _blur_axis(image: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlate `image` with a 1-D kernel along `axis`, reflect-padded to keep its size."""
    k = kernel.shape[0]
    front = (k - 1) // 2
    pad = [(0, 0)] * image.ndim
    pad[axis] = (front, k - 1 - front)
    padded = np.pad(image, pad, mode="reflect")
    n = image.shape[axis]
    out = np.zeros_like(image)
    for j in range(k):
        out += kernel[j] * np.take(padded, np.arange(j, j + n), axis=axis)
    return out


def _cubic_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices [out, 4] and weights [out, 4] of align_corners=True bicubic interpolation."""
    scale = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0)
    real = scale * np.arange(out_size, dtype=np.float32)
    index = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    t = np.clip(real - index.astype(np.float32), 0, 1).astype(np.float32)
    a = np.float32(CUBIC_A)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1).astype(np.float32)
    indices = np.clip(index[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return indices, weights


def _cubic_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    indices, weights = _cubic_weights(image.shape[axis], out_size)
    shape = [1] * image.ndim
    shape[axis] = out_size
    out = 0
    for j in range(4):
        out = out + np.take(image, indices[:, j], axis=axis) * weights[:, j].reshape(shape)
    return out.astype(np.float32)


def resize_antialiased(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[B, C, H, W] float32 -> [B, C, size[0], size[1]], as the SVD pipeline resizes for CLIP."""
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape[-2:]
    sigma_y, k_y = _blur_size(h / size[0])
    sigma_x, k_x = _blur_size(w / size[1])
    blurred = _blur_axis(image, _gaussian(k_x, sigma_x), axis=3)
    blurred = _blur_axis(blurred, _gaussian(k_y, sigma_y), axis=2)
    return _cubic_axis(_cubic_axis(blurred, size[1], axis=3), size[0], axis=2)


def clip_pixels(image: np.ndarray, size, mean, std) -> np.ndarray:
    """[-1, 1] image [B, 3, H, W] -> CLIP input, with the reference's normalisation quirk."""
    x = resize_antialiased(image, tuple(size))
    mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std


def image_embedding(image_encoder, image: np.ndarray, size, mean, std) -> np.ndarray:
    """[-1, 1] image [B, 3, H, W] -> [B, 1, D] image embedding."""
    return np.asarray(image_encoder(clip_pixels(image, size, mean, std)).image_embeds)[:, None]


def conditioning_latents(vae, image: np.ndarray, position: int, num_frames: int) -> np.ndarray:
    """[-1, 1] image [1, 3, H, W] -> [1, F, C, h, w]: the input's latent at `position`, zeros elsewhere."""
    latent = np.asarray(vae.encode(np.asarray(image, dtype=np.float32)).latent_dist.mode())
    cond = np.zeros((1, num_frames, *latent.shape[1:]), dtype=np.float32)
    cond[0, position] = latent[0]
    return cond
