"""Converting a runner's currency at its boundary: numpy arrays <-> torch tensors.

A backend computes in its own currency: ONNX Runtime and Core ML take and return numpy
arrays, the torch and TensorRT backends torch tensors. The thin runtime feeds numpy arrays
(runtime/array_sampler.py), the PyTorch sampler, export and quantization torch tensors; these
wrappers give either side the runner it needs, converting only at the edge. torch is imported
only by the wrapper that is called with or returns tensors.
"""
from __future__ import annotations

import numpy as np

from refocus_edge.runtime.backends.base import Runner


class _Facing(Runner):
    """`inner` behind a conversion of feeds and outputs; the inner runner checks the inputs."""

    def __init__(self, inner: Runner, convert_in, convert_out):
        self.inner, self._in, self._out = inner, convert_in, convert_out
        super().__init__(inner.spec, self._run, inner.device, check_inputs=False)

    @property
    def device(self) -> str:  # the inner runner's, which may change (TensorRT's CUDA graph note)
        return self.inner.device

    @device.setter
    def device(self, value: str) -> None:
        self.inner.device = value

    def _run(self, feeds: dict) -> dict:
        outs = self.inner({k: self._in(v) for k, v in feeds.items()})
        return {k: self._out(v) for k, v in outs.items()}

    def close(self) -> None:
        self.inner.close()
        super().close()


def _tensor_to_array(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _array_to_tensor(a):
    import torch

    a = np.asarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())  # torch tensors are writable


def numpy_facing(torch_runner: Runner) -> Runner:
    """A runner of torch tensors as one of numpy arrays (CPU float32 out, whatever device it ran on)."""
    return _Facing(torch_runner, _array_to_tensor, lambda t: _tensor_to_array(t.float()))


def torch_facing(array_runner: Runner) -> Runner:
    """A runner of numpy arrays as one of torch tensors (CPU tensors out)."""
    return _Facing(array_runner, _tensor_to_array, _array_to_tensor)
