"""The few array operations the sampler loop, the decode and the backend adapters need, for numpy
arrays and torch tensors alike.

The loop is written once (runtime/euler_loop.py): on numpy arrays in the thin runtime
(bundles on ONNX Runtime, Core ML, ...), on torch tensors when a PyTorch model samples.
Arithmetic and slicing are the same on both; concatenation, clipping and casts are not, so
they live here. torch is imported only when a tensor comes in, i.e. when it is loaded already.
"""
from __future__ import annotations

import numpy as np


def is_numpy(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic))


def concat(parts: list, axis: int):
    if is_numpy(parts[0]):
        return np.concatenate(parts, axis=axis)
    import torch

    return torch.cat(parts, dim=axis)


def zeros_like(x):
    if is_numpy(x):
        return np.zeros_like(x)
    import torch

    return torch.zeros_like(x)


def clip01(x):
    return np.clip(x, 0, 1) if is_numpy(x) else x.clamp(0, 1)


def as_float32(x, like):
    """`x` (an array, tensor or number) as float32 in `like`'s kind: numpy array or torch tensor."""
    if is_numpy(like):
        return np.asarray(x, dtype=np.float32)
    import torch

    return torch.as_tensor(x, dtype=torch.float32)


def per_sample(values, batch: int):
    """A scalar or [batch] vector as a contiguous [batch] vector (the UNet's timestep input)."""
    flat = values.reshape(-1)
    if flat.shape[0] != 1:
        return flat
    if is_numpy(flat):
        return np.repeat(flat, batch)
    return flat.expand(batch).contiguous()


def is_floating(x) -> bool:
    return x.dtype.kind == "f" if is_numpy(x) else x.is_floating_point()


def sum_is_finite(x) -> bool:
    """Whether the float32 sum of `x` is finite (one reduction: any NaN or inf makes it NaN/inf)."""
    if is_numpy(x):
        total = x.sum(dtype=np.float32) if x.dtype.itemsize < 4 else x.sum()
        return bool(np.isfinite(total))
    import torch

    total = x.sum(dtype=torch.float32) if x.element_size() < 4 else x.sum()
    return bool(torch.isfinite(total))


def non_finite(x) -> int:
    """How many values of `x` are NaN or +-inf."""
    if is_numpy(x):
        return int((~np.isfinite(x)).sum())
    import torch

    return int((~torch.isfinite(x)).sum())


def size(x) -> int:
    return int(x.size) if is_numpy(x) else x.numel()
