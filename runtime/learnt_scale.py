"""Generate at the scale a model learnt focus blur at, deliver at the size the photo is served.

A lens's blur grows with the image: the same photo served at 448x256 has blur discs twice as wide in
pixels as at 224x128. A small refocuser trained at one size (refocus-tiny*: 128x128) learnt the blur
of that scale and does not carry it to blur several times wider: generated directly at 448x256 the
default's stacks were worse than the input photo copied nine times (LPIPS 0.317 vs 0.279 on the
photo-derived stacks). Generated from the photo shrunk to half (224x128) and brought back to 448x256
here, the same model scores 0.247. A model says so in refocus.json (`generate_scale`; never below its
`fixed_size` short side); the released checkpoint, trained at its own serving size, does not, and
nothing here runs for it. Which share: measured per served size on the photo-derived stacks
(models/refocus-tiny-1step/README.md): half was best or within 0.007 of the best of those tried.

Bringing the frames back keeps the photo's own detail where a frame is as sharp as the photo: the
detail the shrink removed (photo minus its shrunk copy enlarged) is added back in proportion to the
frame's local high-frequency energy against the shrunk photo's, so the input's own frame keeps the
photo's detail and frames whose focus moved away from a region stay soft there. No torch: the thin
runtime runs it too.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from PIL import Image

from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.resize import resize_planes

# Generation sides are multiples of this (pixels): the VAE's factor 8 times the tiny UNet's two
# downsamplings, so every latent side halves twice without a remainder.
GENERATE_MULTIPLE = 32
_EPS = 1e-5  # energy floor: flat regions of the photo have no detail to give back


def generation_size(w: int, h: int, scale: float, min_short_side: int = 0,
                    multiple: int = GENERATE_MULTIPLE) -> tuple[int, int]:
    """(W, H) a model generates at for a photo served at w x h: the served size times `scale`, but never
    a short side below `min_short_side` (the size it learnt at), sides snapped to `multiple`; the served
    size itself when that is no smaller."""
    s = max(scale, min_short_side / min(w, h))
    if s >= 1:
        return w, h
    return (max(multiple, round(w * s / multiple) * multiple), max(multiple, round(h * s / multiple) * multiple))


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window of the last two axes, edges replicated (summed-area table)."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r + 1, r), (r + 1, r)], mode="edge")
    c = p.cumsum(-2).cumsum(-1)
    k = 2 * r + 1
    s = c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]
    return s / (k * k)


def detail_energy(rgb: np.ndarray) -> np.ndarray:
    """Local high-frequency energy of [..., 3, H, W] images: the squared difference of the grey image
    to its 3x3 mean, averaged over 5x5."""
    grey = rgb.mean(-3)
    return _box((grey - _box(grey, 1)) ** 2, 2)


def restore_size(frames: np.ndarray, photo: np.ndarray, photo_small: np.ndarray) -> np.ndarray:
    """Frames generated from `photo_small` ([F, 3, h, w] in [0, 1]) at the photo's size [F, 3, H, W]:
    enlarged (bicubic), plus the photo's detail lost in the shrink, weighted per pixel by how sharp
    each frame is against the shrunk photo (0 where the frame is soft, 1 where it is as sharp).
    `photo` and `photo_small` are [3, H, W] and [3, h, w]."""
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[-2:] != photo_small.shape[-2:]:
        raise InvalidArgumentError(f"frames {list(frames.shape)} must be [F, 3, h, w] at the shrunk photo's "
                                   f"size {list(photo_small.shape[-2:])}")
    size = (photo.shape[-1], photo.shape[-2])
    detail = photo - resize_planes(photo_small, size)
    weight = np.clip(detail_energy(frames) / (detail_energy(photo_small) + _EPS), 0.0, 1.0)
    weight = resize_planes(weight, size, Image.Resampling.BILINEAR)
    out = resize_planes(frames, size) + weight[:, None] * detail[None]
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def sample_at_learnt_scale(sample, rgb: np.ndarray, cfg, size: tuple[int, int]):
    """Run `sample(rgb, cfg)` (float32 H x W x 3 in [0, 1] -> SampleResult with numpy frames) on the photo
    shrunk to `size` (W, H; generation_size), then bring the frames back to the photo's size
    (restore_size). Returns the result, with a note saying so."""
    h, w = rgb.shape[:2]
    photo = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    small = np.clip(resize_planes(photo, size, Image.Resampling.LANCZOS), 0.0, 1.0)
    result = sample(np.ascontiguousarray(small.transpose(1, 2, 0)), cfg)
    t0 = time.perf_counter()
    frames = restore_size(np.asarray(result.frames, dtype=np.float32), photo, small)
    timings = dict(result.timings, restore_size=time.perf_counter() - t0)
    if "total" in timings:
        timings["total"] += timings["restore_size"]
    note = (f"generated at {size[0]}x{size[1]} (generate_scale in refocus.json: the model learnt focus blur at a "
            f"smaller size), frames restored to {w}x{h} with the photo's own detail")
    return replace(result, frames=frames, timings=timings, notes=[*result.notes, note])


__all__ = ["GENERATE_MULTIPLE", "generation_size", "restore_size", "sample_at_learnt_scale", "detail_energy"]
