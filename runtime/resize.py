"""Working-resolution policy: what size the model sees, and getting the photo there.

Three policies: a pixel budget with sides snapped to a multiple (the reference
rule, which may stretch the aspect slightly to hit the multiples); the photo's
own shape, for models trained small (a short side of at least `min_short_side`,
the largest that fits the budget, a centre crop of at most a few percent to the
snapped aspect instead of a stretch, and a crop to `max_aspect` for panoramas);
or a fixed working size reached by a centre crop to the target aspect and a resize.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from refocus_edge.runtime.errors import InvalidArgumentError


@dataclass(frozen=True)
class ResolutionPolicy:
    """max_pixels/multiple: the reference budget rule; with min_short_side (and max_aspect), the
    photo's own shape under that budget; fixed=(W, H) overrides both."""

    max_pixels: int = 500_000
    multiple: int = 64
    fixed: tuple[int, int] | None = None
    min_short_side: int | None = None
    max_aspect: float | None = None  # long / short side; wider photos are centre-cropped to it

    def __post_init__(self) -> None:
        if not _is_pos_int(self.multiple):
            raise InvalidArgumentError(
                f"resolution multiple must be a positive integer, got {self.multiple!r}"
            )
        if self.fixed is not None:
            if len(self.fixed) != 2 or not all(_is_pos_int(v) for v in self.fixed):
                raise InvalidArgumentError(
                    f"fixed working size must be two positive integers (W, H), got {self.fixed!r}"
                )
            if any(v % self.multiple for v in self.fixed):
                # The model downsamples by this factor; other sizes would fail deep inside it.
                raise InvalidArgumentError(
                    f"fixed working size {self.fixed[0]}x{self.fixed[1]} must have sides that are "
                    f"multiples of {self.multiple}; pick e.g. "
                    f"{_snap(self.fixed[0], self.multiple)}x{_snap(self.fixed[1], self.multiple)}"
                )
            object.__setattr__(self, "fixed", (int(self.fixed[0]), int(self.fixed[1])))
        elif not _is_pos_int(self.max_pixels) or self.max_pixels < self.multiple**2:
            # Below multiple**2 even the smallest legal size is over budget: no answer exists.
            raise InvalidArgumentError(
                f"max_pixels must be an integer >= {self.multiple ** 2} ({self.multiple}x{self.multiple}), "
                f"got {self.max_pixels!r}"
            )
        elif self.min_short_side is not None:
            m, s = self.multiple, self.min_short_side
            if not _is_pos_int(s) or s % m:
                raise InvalidArgumentError(f"min_short_side must be a positive multiple of {m}, got {s!r}")
            if self.max_aspect is not None and not (isinstance(self.max_aspect, (int, float)) and self.max_aspect >= 1):
                raise InvalidArgumentError(f"max_aspect (long / short side) must be >= 1, got {self.max_aspect!r}")
            if s * s > self.max_pixels:
                raise InvalidArgumentError(f"min_short_side {s} needs {s * s:,} px, over max_pixels "
                                           f"{self.max_pixels:,}; raise the budget or lower the side")

    def describe(self) -> str:
        if self.fixed is not None:
            w, h = self.fixed
            g = math.gcd(w, h)
            return f"fixed {w}x{h}, centre crop to {w // g}:{h // g} then resize"
        if self.min_short_side is not None:
            aspect = f", aspect at most {self.max_aspect:g}:1" if self.max_aspect else ""
            return (f"own shape: short side >= {self.min_short_side}, under {self.max_pixels:,} px, sides multiples "
                    f"of {self.multiple}{aspect}")
        return f"pixel budget {self.max_pixels:,} px, sides multiples of {self.multiple}"


def _is_pos_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0


def _snap(side: float, multiple: int) -> int:
    return max(1, round(side / multiple)) * multiple


def target_size(w: int, h: int, policy: ResolutionPolicy) -> tuple[int, int]:
    """Working (w, h) for a w x h photo under `policy`."""
    if not (_is_pos_int(w) and _is_pos_int(h)):
        raise InvalidArgumentError(f"image size must be positive integers, got {w}x{h}")
    if policy.fixed is not None:
        return policy.fixed
    if policy.min_short_side is not None:
        return _own_shape(w, h, policy)
    # Reference rule, step by step: snap both sides at scale s; while over
    # budget shrink s by 1 % and snap again. Terminates: at the latest both
    # sides reach `multiple`, and multiple**2 <= max_pixels is validated.
    s = min(1.0, math.sqrt(policy.max_pixels / (w * h)))
    while True:
        tw, th = _snap(w * s, policy.multiple), _snap(h * s, policy.multiple)
        if tw * th <= policy.max_pixels:
            return tw, th
        s *= 0.99


def _own_shape(w: int, h: int, policy: ResolutionPolicy) -> tuple[int, int]:
    """The largest short side from min_short_side up (in multiples, not above the photo's own unless
    needed to reach the minimum) whose long side, snapped at the photo's aspect (capped at
    max_aspect), fits the budget; the long side is shortened when even the minimum does not fit."""
    m, budget = policy.multiple, policy.max_pixels
    short, long = min(w, h), max(w, h)
    aspect = long / short if policy.max_aspect is None else min(long / short, policy.max_aspect)
    ceiling = max(policy.min_short_side, _snap(short, m))
    best = policy.min_short_side
    side = best
    while side <= ceiling:
        if side * max(side, _snap(side * aspect, m)) <= budget:
            best = side
        side += m
    long_side = max(best, min(_snap(best * aspect, m), budget // best // m * m))
    return (long_side, best) if w >= h else (best, long_side)


def fit_photo(rgb: np.ndarray, policy: ResolutionPolicy) -> tuple[np.ndarray, str]:
    """Resize (and for a fixed size, centre-crop) float RGB to the working size.

    Returns float32 H x W x 3 in [0, 1] and a one-line note of what was done.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype.kind != "f":
        raise InvalidArgumentError(
            f"fit_photo expects a float H x W x 3 array, got {getattr(rgb, 'dtype', type(rgb))} "
            f"{getattr(rgb, 'shape', '')}"
        )
    h, w = rgb.shape[:2]
    tw, th = target_size(w, h, policy)
    box = (0.0, 0.0, float(w), float(h))
    crop_note = ""
    if policy.fixed is not None or policy.min_short_side is not None:
        # own shape: a crop to the snapped aspect (a few percent) rather than stretching the blur discs
        box = _centre_box(w, h, tw / th)
        cw, ch = box[2] - box[0], box[3] - box[1]
        if (cw, ch) != (w, h):
            crop_note = f"centre-cropped to {cw:.0f}x{ch:.0f}, "
    if (tw, th) == (w, h) and not crop_note:
        return np.ascontiguousarray(rgb, dtype=np.float32), f"kept at {w}x{h} ({policy.describe()})"

    # Pillow's LANCZOS handles downscaling with a properly widened kernel. The crop goes in as the
    # resize box, so a fractional crop stays exact.
    planes = resize_planes(rgb.transpose(2, 0, 1), (tw, th), Image.Resampling.LANCZOS, box=box)
    out = np.ascontiguousarray(np.clip(planes.transpose(1, 2, 0), 0.0, 1.0), dtype=np.float32)
    note = f"{crop_note}resized {w}x{h} -> {tw}x{th} ({policy.describe()})"
    return out, note


def resize_planes(planes: np.ndarray, size: tuple[int, int], method=Image.Resampling.BICUBIC,
                  box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Resize float [..., H, W] planes to (W, H) (optionally from a crop `box` of them), each as a 32-bit
    float ("F") image: no 8-bit rounding. Returns float32 [..., size[1], size[0]]."""
    flat = planes.reshape(-1, *planes.shape[-2:])
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(p, dtype=np.float32)).resize(size, method, box=box))
           for p in flat]
    return np.stack(out).reshape(*planes.shape[:-2], size[1], size[0])


def _centre_box(w: int, h: int, aspect: float) -> tuple[float, float, float, float]:
    """The largest centred box of the given aspect (w/h) inside a w x h image."""
    if w / h > aspect:
        cw = h * aspect
        return ((w - cw) / 2, 0.0, (w + cw) / 2, float(h))
    ch = w / aspect
    return (0.0, (h - ch) / 2, float(w), (h + ch) / 2)
