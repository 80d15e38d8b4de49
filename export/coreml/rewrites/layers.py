"""Pieces both rewrites need: shapes as constants and a group norm Core ML keeps at rank 3."""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn


def static_shape(x: torch.Tensor) -> tuple[int, ...]:
    """The shape as Python ints, so jit.trace records constants instead of aten::size.

    The int() conversion is exactly what the tracer warns about; here it is the intent
    (Core ML packages have static shapes), so that one warning is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return tuple(int(s) for s in x.shape)


def group_norm(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """`norm` applied to x [N, C, ...], computed on [N, G, C/G * rest].

    Same statistics as nn.GroupNorm (per sample and group, over the group's channels and
    every remaining axis, biased variance); flattening each group to one axis keeps the
    reduction at rank 3, where coremltools lowers aten::group_norm through rank 5.

    Each group is first divided by s = max(1, max |x|): GroupNorm(x) equals
    (y - mean y) / sqrt(var y + eps / s^2) for y = x / s, exactly, for any s > 0. In
    fp16 the squares of the raw activations overflow (65504) once |x - mean| > 256,
    which the VAE encoder's mid block reaches on ordinary photos (measured: 286 on
    refocus-tiny); the squares of y never exceed 1."""
    shape = static_shape(x)
    n, c = shape[0], shape[1]
    groups = int(norm.num_groups)
    y = x.reshape(n, groups, math.prod(shape[1:]) // groups)
    scale = y.abs().amax(dim=2, keepdim=True).clamp_min(1.0)
    y = y / scale
    centred = y - y.mean(dim=2, keepdim=True)
    var = (centred * centred).mean(dim=2, keepdim=True)
    y = (centred * torch.rsqrt(var + (float(norm.eps) / scale) / scale)).reshape(shape)
    if norm.affine:
        affine = (1, c) + (1,) * (len(shape) - 2)
        y = y * norm.weight.reshape(affine) + norm.bias.reshape(affine)
    return y
