"""Per-pixel focus measure of every frame of a focal stack, plus the small filters the package shares.

The measure is the energy of the modified Laplacian (Nayar & Nakagawa's sum-modified-Laplacian, squared)
on luminance, averaged over a small Gaussian window. Why these choices:

* The modified Laplacian adds the *absolute* second differences along x and y, so the two directions of a
  saddle-shaped texture cannot cancel as they do in the ordinary Laplacian.
* Squaring before aggregating turns the measure into local high-frequency energy: defocus (a disk
  blur) removes high frequencies, so the in-focus frame of a textured patch has by far the largest
  energy, and ratios between frames grow quickly with blur, which makes the soft selection decisive.
* The window is deliberately small (sigma ~1 px): a wide window spreads the strong response of a sharp
  occlusion edge onto the blurred background beside it, which is exactly what causes halos in an
  all-in-focus fusion. Wider aggregation, where wanted, is edge-aware and happens later (the guided
  filter of the depth module's focus volume).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from refocus_edge.runtime.gaussian import gaussian_taps

__all__ = [
    "LUMA_WEIGHTS", "luminance", "modified_laplacian", "gaussian_blur", "box_mean", "focus_measure", "focus_confidence",
]

#: Rec. 601 luma weights; sharpness lives mostly in luminance, and one channel is three times cheaper.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a tensor [F, 3, H, W], got {shape}")
    if frames.shape[0] < 1 or frames.shape[2] < 2 or frames.shape[3] < 2:
        raise ValueError(f"frames need F >= 1 and H, W >= 2, got {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be floating point in [0, 1], got dtype {frames.dtype}")
    # float32 even for half inputs: the measure is a squared difference of small numbers.
    return frames.float()


def luminance(frames: torch.Tensor) -> torch.Tensor:
    """[F, 3, H, W] -> [F, H, W] Rec. 601 luma."""
    frames = _check_frames(frames)
    w = torch.tensor(LUMA_WEIGHTS, dtype=frames.dtype, device=frames.device)
    return torch.einsum("fchw,c->fhw", frames, w)


def modified_laplacian(lum: torch.Tensor, step: int = 1) -> torch.Tensor:
    """|2I - I(x-s) - I(x+s)| + |2I - I(y-s) - I(y+s)| for [N, H, W] images (replicated borders).

    Replicated (not zero) borders: a zero border would be a fake step edge that makes every frame look
    sharp along the image boundary.
    """
    if lum.ndim != 3:
        raise ValueError(f"expected [N, H, W], got {tuple(lum.shape)}")
    s = int(step)
    if s < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    p = F.pad(lum[:, None], (s, s, s, s), mode="replicate")[:, 0]
    c = p[:, s:-s, s:-s]
    dxx = (2 * c - p[:, s:-s, : -2 * s] - p[:, s:-s, 2 * s:]).abs()
    dyy = (2 * c - p[:, : -2 * s, s:-s] - p[:, 2 * s:, s:-s]).abs()
    return dxx + dyy


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, H, W] maps with conv2d (reflected borders); sigma <= 0 is identity.

    Reflection keeps the mean level at the border (zero padding would make every border pixel look
    less textured than it is).
    """
    if x.ndim != 3:
        raise ValueError(f"expected [N, H, W], got {tuple(x.shape)}")
    if sigma <= 0:
        return x
    k = gaussian_taps(float(sigma), x.dtype, x.device)
    r = k.numel() // 2
    h, w = x.shape[-2:]
    # Reflect padding needs pad < size; replicate is the fallback for tiny images.
    mode = "reflect" if r < min(h, w) else "replicate"
    n = x.shape[0]
    # The maps go in as the channels of one image with a depthwise (groups=N) convolution: on CPU this
    # is ~10x faster than a batch of single-channel images through the same 1-channel kernel.
    y = F.pad(x[None], (r, r, r, r), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    return y[0]


#: up to this radius box sums are 2r+1 shifted adds; above it, differenced prefix sums (O(1) per pixel).
#: cumsum is slow on CPU (~4x an add), so the adds win for small windows (measured at 512x512).
_SHIFT_MAX_RADIUS = 4


def _box_sum_axis(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Sums of the samples within +-r along ``dim`` of [N, H, W], clipped at the borders."""
    n = x.shape[dim]
    if r <= _SHIFT_MAX_RADIUS:
        # Zero padding: the padded samples add nothing, so border windows sum only pixels inside.
        p = F.pad(x, (0, 0, r, r) if dim == 1 else (r, r, 0, 0))
        out = p.narrow(dim, 0, n).clone()
        for i in range(1, 2 * r + 1):
            out += p.narrow(dim, i, n)
        return out
    c = torch.cumsum(x, dim)
    size = list(c.shape)
    size[dim] = r + 1
    first = c.new_zeros(size)
    size[dim] = r
    last = c.narrow(dim, n - 1, 1).expand(*size)
    cp = torch.cat([first, c, last], dim)  # cp[j] = prefix sum up to j - r - 1; 0 before, total after
    return cp.narrow(dim, 2 * r + 1, n) - cp.narrow(dim, 0, n)


def _window_counts(n: int, r: int, device) -> torch.Tensor:
    i = torch.arange(n, device=device)
    return ((i + r + 1).clamp_max(n) - (i - r).clamp_min(0)).float()


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window of [N, H, W] maps, averaging only pixels inside the image.

    Border-normalised, as the guided filter needs (no darkening along the image border), separable,
    and O(1) per pixel for large radii (prefix sums), so the wide aggregation windows of depth from
    focus cost about as much as small ones. For prefix sums each map's mean is subtracted first and
    added back: it keeps the float32 running sums small, so their differences stay accurate.
    """
    if x.ndim != 3:
        raise ValueError(f"expected [N, H, W], got {tuple(x.shape)}")
    r = int(radius)
    if r <= 0:
        return x
    h, w = x.shape[-2:]
    m = x.mean((1, 2), keepdim=True) if r > _SHIFT_MAX_RADIUS else None
    s = _box_sum_axis(_box_sum_axis(x if m is None else x - m, r, 1), r, 2)
    count = _window_counts(h, r, x.device)[:, None] * _window_counts(w, r, x.device)[None, :]
    s = s / count.to(s.dtype)
    return s if m is None else s + m


def focus_measure(frames: torch.Tensor, sigma: float = 1.0, step: int = 1) -> torch.Tensor:
    """Focus measure of every frame: Gaussian-windowed energy of the modified Laplacian of luminance.

    Args:
        frames: [F, 3, H, W] float in [0, 1].
        sigma: standard deviation (px) of the aggregation window; small on purpose (see module doc).
        step: pixel step of the second differences (1 suits the blur sizes of 128-512 px stacks).

    Returns:
        [F, H, W] float32, >= 0; larger means sharper.
    """
    ml = modified_laplacian(luminance(frames), step)
    return gaussian_blur(ml * ml, sigma).clamp_min_(0.0)


def focus_confidence(log_focus: torch.Tensor, texture_floor: float = 1e-4) -> torch.Tensor:
    """How decisive each pixel's focus curve is: [F, H, W] log focus measures -> [H, W] in [0, 1].

    peakedness x texture gate:

    * peakedness = (1 - mean/peak) / (1 - 1/F) of the measure over frames: 0 when every frame is
      equally sharp (textureless, or noise only), 1 when a single frame holds all the energy. The ratio
      is taken relative to the peak in the log domain, so no exp overflows.
    * gate = peak / (peak + texture_floor): a pixel whose *sharpest* frame has almost no high-frequency
      energy carries no depth or selection information, however peaked its curve looks.
    """
    if log_focus.ndim != 3:
        raise ValueError(f"expected [F, H, W], got {tuple(log_focus.shape)}")
    n = log_focus.shape[0]
    peak_log = log_focus.max(0).values
    if n == 1:
        peaked = torch.ones_like(peak_log)
    else:
        ratio = torch.exp(log_focus - peak_log[None]).mean(0)  # in [1/F, 1]
        peaked = ((1.0 - ratio) / (1.0 - 1.0 / n)).clamp(0.0, 1.0)
    peak = torch.exp(peak_log)
    gate = peak / (peak + texture_floor)
    return (peaked * gate).clamp_(0.0, 1.0)
