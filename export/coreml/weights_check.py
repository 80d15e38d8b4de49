"""Check that a converted package holds exactly the compressed weights of the PyTorch
module it came from, so the drift measured by running that module in PyTorch is the
drift of the package.

Every constexpr_* op (a look-up table or an int8 tensor with its scales) is
decompressed from the converted program and compared with the module's parameter
of the same name. coremltools names a weight constant after the parameter's
dotted path with dots replaced by underscores, plus a suffix.
"""
from __future__ import annotations

import numpy as np
import torch

from refocus_edge.runtime.errors import RefocusError


class CompressedWeightsError(RefocusError):
    """A package's compressed weights differ from the PyTorch module's."""


def _constexpr_values(model) -> dict[str, np.ndarray]:
    program = model._mil_program  # present on a freshly converted model
    out = {}
    for op in program.functions["main"].operations:
        if op.op_type.startswith("constexpr"):
            out[op.name] = np.asarray(op.materialized_val_inference(), dtype=np.float32)
    return out


def check_compressed_weights(model, module: torch.nn.Module, precision: str, what: str) -> int:
    """Raise CompressedWeightsError unless every compressed constant matches its parameter.

    Returns how many were checked (at least one, or the compression did not happen)."""
    values = _constexpr_values(model)
    if not values:
        raise CompressedWeightsError(f"{what}: the package has no compressed weights; the compression "
                                     "metadata did not reach the converter")
    params = {name.replace(".", "_"): p.detach().float() for name, p in module.named_parameters()}
    by_length = sorted(params, key=len, reverse=True)
    # fp16 packages store the dequantised values in fp16; allow that rounding and no more.
    rtol = 2 ** -10 if precision == "fp16" else 1e-6
    for op_name, value in values.items():
        match = next((n for n in by_length if op_name.startswith(n)), None)
        if match is None:
            raise CompressedWeightsError(f"{what}: compressed constant '{op_name}' matches no parameter")
        ref = params[match].numpy()
        if ref.size != value.size:
            raise CompressedWeightsError(f"{what}: '{op_name}' has {value.size} values, parameter "
                                         f"'{match}' has {ref.size}")
        ref = ref.reshape(value.shape)
        err = float(np.abs(value - ref).max())
        scale = float(np.abs(ref).max()) or 1.0
        if err > rtol * scale:
            raise CompressedWeightsError(f"{what}: '{op_name}' differs from parameter '{match}' by {err:.3g} "
                                         f"(allowed {rtol * scale:.3g})")
    return len(values)
