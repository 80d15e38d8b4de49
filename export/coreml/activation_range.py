"""fp16's range check of the Core ML export: the largest activation a module produces.

Core ML packages compute in fp16 unless told otherwise; a component whose activations
leave fp16's safe range is converted for fp32 compute instead (export/coreml/packages.py).
"""
from __future__ import annotations

import torch

# Largest activation magnitude accepted for fp16 compute: fp16 overflows at 65504, and the
# sums inside convolutions and matmuls need headroom above their outputs. (Normalisations
# are range-safe by construction: export/coreml/rewrites/layers.py:group_norm.)
FP16_SAFE_MAX = 2.0 ** 12


@torch.no_grad()
def activation_max(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[float, tuple]:
    """(largest |value| any submodule outputs on `example` in fp32, the module's outputs as a
    tuple): the fp16 range check, and the output shapes from the same run."""
    peak = [0.0]

    def hook(_mod, _inp, out):
        for t in (out if isinstance(out, tuple) else (out,)):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                peak[0] = max(peak[0], float(t.detach().abs().max()))

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        outputs = module.float()(*example)
    finally:
        for h in handles:
            h.remove()
    return peak[0], outputs if isinstance(outputs, tuple) else (outputs,)
