"""Run components as PyTorch modules behind the runtime's adapters.

A target whose artifacts cannot run on this machine (Core ML off macOS), or a
precision no CPU backend runs (bf16), is measured by running the very modules its
artifacts were made from, in the artifacts' precision: `ModuleRunner` is one
component as a runner, and `emulated_refocuser` puts runners behind the runtime's
adapters, giving a refocuser that `sample_focal_stack` runs unchanged. It is also
the exporter driver's default end-to-end gate (export/targets/base.py).
"""
from __future__ import annotations

import copy

import torch

from refocus_edge.runtime.components import IMAGE_ENCODER, UNET, VAE_PREFIX


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


def emulated_refocuser(refocuser, specs, runners: dict, device: str):
    """`refocuser` with its components replaced by `runners` (component name -> feeds ->
    outputs) behind the runtime's adapters: what sample_focal_stack would run on device.
    `device` labels the runners (what they stand for)."""
    from dataclasses import replace

    from refocus_edge.runtime.backends.adapters import ImageEncoderAdapter, UNetAdapter, VaeAdapter
    from refocus_edge.runtime.backends.base import Runner

    wrapped = {n: Runner(specs[n], r, device) for n, r in runners.items()}
    return replace(
        refocuser, notes=[], choices=[],
        unet=UNetAdapter(dict(refocuser.unet.config), {UNET: wrapped[UNET]}),
        vae=VaeAdapter(dict(refocuser.vae.config), {n: r for n, r in wrapped.items() if n.startswith(VAE_PREFIX)}),
        image_encoder=ImageEncoderAdapter(refocuser.image_encoder.config.to_dict(),
                                          {IMAGE_ENCODER: wrapped[IMAGE_ENCODER]}),
    )
