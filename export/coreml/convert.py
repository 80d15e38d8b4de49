"""One PyTorch module -> one Core ML mlprogram, its inputs and outputs named and
described from the component spec.

Traced with torch.jit.trace: the rewrites read shapes as Python ints, so the
trace is a static-shape graph, which is what Core ML packages are. mlprogram,
iOS 17 / macOS 14 (the first with constexpr_* weight decompression and fp16
I/O on the Neural Engine). fp16 packages take and return fp16 tensors, so no
cast sits at either end of the graph on the device.
"""
from __future__ import annotations

import importlib.metadata
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from refocus_edge.runtime.errors import InvalidArgumentError

LICENCE = "Apache-2.0 (Refocus Edge); the weights' own licence is the source model's"


@dataclass(frozen=True)
class TensorIO:
    """A package input or output: name, static shape, description."""

    name: str
    shape: tuple[int, ...]
    description: str = ""


@contextmanager
def coremltools_logs(level: int, *loggers: str):
    """Raise coremltools' loggers to `level` for a block (the export's own output stays readable)."""
    found = [logging.getLogger(n) for n in (loggers or ("coremltools",))]
    before = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(found, before):
            lg.setLevel(old)


def require_coremltools():
    # Off macOS, importing coremltools warns that its prediction libraries are missing and
    # that this torch is newer than it was tested with; conversion needs neither.
    try:
        with coremltools_logs(logging.ERROR):
            import coremltools as ct
    except ImportError as exc:
        raise InvalidArgumentError("Core ML export needs the package 'coremltools' "
                                   "(pip install 'refocus-edge[coreml]')") from exc
    return ct


def trace(module: torch.nn.Module, example: tuple[torch.Tensor, ...]):
    with torch.no_grad(), warnings.catch_warnings():
        # The rewrites turn shapes into constants on purpose; the tracer warns about each.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # jit.trace is deprecated in favour of torch.export, but coremltools' torch.export
        # path rejects the SVD modules (issue text) and the trace path is its mature one.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(module.eval(), example, check_trace=False, strict=False)


def convert(module: torch.nn.Module, inputs: list[TensorIO], outputs: list[TensorIO], precision: str,
            metadata: dict[str, str], description: str):
    """Trace and convert; return the MLModel (not yet saved)."""
    ct = require_coremltools()
    example = tuple(torch.randn(t.shape) for t in inputs)
    traced = trace(module, example)
    dtype = np.float16 if precision == "fp16" else np.float32
    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(
            traced,
            inputs=[ct.TensorType(name=t.name, shape=t.shape, dtype=dtype) for t in inputs],
            outputs=[ct.TensorType(name=t.name, dtype=dtype) for t in outputs],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS17,
            compute_precision=compute,
            skip_model_load=True,  # cannot load (compile) off macOS; the spec is all we need
        )
    describe(model, inputs, outputs, metadata, description)
    return model


def describe(model, inputs: list[TensorIO], outputs: list[TensorIO], metadata: dict[str, str],
             description: str) -> None:
    model.short_description = description
    model.author = "Refocus Edge"
    model.license = LICENCE
    model.version = importlib.metadata.version("refocus-edge")
    for t in inputs:
        model.input_description[t.name] = t.description or t.name
    for t in outputs:
        model.output_description[t.name] = t.description or t.name
    for key, value in metadata.items():
        model.user_defined_metadata[key] = str(value)
