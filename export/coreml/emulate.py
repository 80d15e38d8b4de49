"""Run what a Core ML bundle contains, in PyTorch, on a machine that cannot run Core ML.

Each package is converted from a PyTorch module (a conversion-ready rewrite,
possibly compressed, possibly a chain of UNet chunks). Running those same modules
in the package's precision through the runtime's adapters gives a refocuser that
`sample_focal_stack` runs unchanged: this is how the export measures the
end-to-end drift of fp16 and compressed packages, and how a chunk chain (runtime/backends/chain.py) is checked against the whole UNet.
"""
from __future__ import annotations

import copy

import torch
from refocus_edge.runtime.components import IMAGE_ENCODER, UNET, VAE_PREFIX


# Largest activation magnitude accepted for fp16 compute: fp16 overflows at 65504, and the
# sums inside convolutions and matmuls need headroom above their outputs. (Normalisations
# are range-safe by construction: export/coreml/rewrites/layers.py:group_norm.)
FP16_SAFE_MAX = 2.0 ** 12


class ModuleRunner:
    """spec feeds -> spec outputs through a flat PyTorch module in `dtype`."""

    def __init__(self, module: torch.nn.Module, input_names: list[str], output_names: list[str],
                 dtype: torch.dtype = torch.float32):
        # A copy in another dtype: .to() works in place, and the fp32 module is reused.
        self.module = (module if dtype == torch.float32 else copy.deepcopy(module).to(dtype)).eval()
        self.input_names, self.output_names, self.dtype = list(input_names), list(output_names), dtype

    @torch.no_grad()
    def __call__(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.module(*(feeds[n].to(self.dtype) for n in self.input_names))
        out = out if isinstance(out, tuple) else (out,)
        return {n: o.float() for n, o in zip(self.output_names, out)}


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


def emulated_refocuser(refocuser, specs, runners: dict, label: str):
    """`refocuser` with its components replaced by `runners` (component name -> feeds ->
    outputs) behind the runtime's adapters: what sample_focal_stack would run on device."""
    from dataclasses import replace

    from refocus_edge.runtime.backends.adapters import ImageEncoderAdapter, UNetAdapter, VaeAdapter
    from refocus_edge.runtime.backends.base import Runner

    wrapped = {n: Runner(specs[n], r, f"coreml-emulated {label}") for n, r in runners.items()}
    return replace(
        refocuser, notes=[], choices=[],
        unet=UNetAdapter(dict(refocuser.unet.config), {UNET: wrapped[UNET]}),
        vae=VaeAdapter(dict(refocuser.vae.config), {n: r for n, r in wrapped.items() if n.startswith(VAE_PREFIX)}),
        image_encoder=ImageEncoderAdapter(refocuser.image_encoder.config.to_dict(),
                                          {IMAGE_ENCODER: wrapped[IMAGE_ENCODER]}),
    )
