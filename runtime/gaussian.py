"""Gaussian taps: the one definition the depth-of-field measures and the guided decoder's photo
re-blur bank share (runtime is the lower layer, so it lives here)."""

from __future__ import annotations

import math

import torch


def gaussian_taps(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps of standard deviation `sigma` px, radius ceil(3 sigma) (at least 1)."""
    radius = max(1, int(math.ceil(3.0 * float(sigma))))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (taps / taps.sum()).to(dtype=dtype, device=device)
