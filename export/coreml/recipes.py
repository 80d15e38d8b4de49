"""Core ML precision and weight-compression recipes.

A recipe is a compute precision (fp16 or fp32) plus an optional weight
compression of the UNet:

  w8  8-bit linear weights, symmetric, one scale per output channel;
  p6  6-bit palettization (64-entry k-means look-up table per tensor);
  p4  4-bit palettization (16 entries per tensor).

Only the UNet is compressed: it holds 92% of the full-size model's weights
(1.5 B of 1.6 B parameters), and the VAE decoder is where 8-bit error shows as
visible blotches in the frames. The compression is done in PyTorch with
coremltools.optimize.torch, so the compressed PyTorch module holds exactly the
weights the converter writes into the package (the export checks that it did),
and the drift those weights cause is measured by running that module.

Per-tensor look-up tables (not per-channel groups) because grouped palettization
needs iOS 18, and the packages target iOS 17 / macOS 14.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from refocus_edge.runtime.component_names import UNET
from refocus_edge.runtime.errors import InvalidArgumentError

if TYPE_CHECKING:  # imported where used: the CLI reads this module's names without torch
    import torch

COMPRESSIONS = {"w8": 8, "p6": 6, "p4": 4}  # name -> bits per weight
PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class CoreMLRecipe:
    precision: str = "fp16"
    compress: str | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise InvalidArgumentError(f"Core ML precision must be one of {', '.join(PRECISIONS)}, "
                                       f"got {self.precision!r}")
        if self.compress is not None and self.compress not in COMPRESSIONS:
            raise InvalidArgumentError(f"--compress must be one of {', '.join(COMPRESSIONS)}, got {self.compress!r}")

    @property
    def name(self) -> str:
        """The bundle's precision key for these packages: fp16, fp32, fp16-w8, fp16-p6, ..."""
        return self.precision if self.compress is None else f"{self.precision}-{self.compress}"

    def weight_bits(self, component: str) -> int:
        if self.compress is not None and component == UNET:
            return COMPRESSIONS[self.compress]
        return 16 if self.precision == "fp16" else 32

    def compresses(self, component: str) -> bool:
        return self.compress is not None and component == UNET


def compress_module(module: torch.nn.Module, recipe: CoreMLRecipe) -> torch.nn.Module:
    """A compressed copy of `module` per `recipe` (the original is left untouched).

    The copy computes with the de-compressed weights (LUT entries or int8 x scale) and
    carries coremltools' compression metadata, from which the converter emits
    constexpr_lut_to_dense / constexpr_affine_dequantize ops holding the same values.
    """
    import torch

    from refocus_edge.export.coreml.convert import coremltools_logs

    if recipe.compress is None:
        return module
    try:
        from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig
        from coremltools.optimize.torch.quantization import PostTrainingQuantizer, PostTrainingQuantizerConfig
    except ImportError as exc:
        raise InvalidArgumentError("Core ML weight compression needs the package 'coremltools' "
                                   "(pip install 'refocus-edge[coreml]')") from exc
    target = copy.deepcopy(module).float().eval()
    # optimize.torch logs a line per tensor at INFO through its own logger and handler.
    with coremltools_logs(logging.WARNING, "coremltools", "coremltools.optimize.torch"), torch.no_grad():
        if recipe.compress == "w8":
            cfg = PostTrainingQuantizerConfig.from_dict({"global_config": {
                "weight_dtype": "int8", "granularity": "per_channel", "quantization_scheme": "symmetric"}})
            return PostTrainingQuantizer(target, cfg).compress()
        cfg = PostTrainingPalettizerConfig.from_dict({"global_config": {
            "n_bits": COMPRESSIONS[recipe.compress], "granularity": "per_tensor"}})
        return PostTrainingPalettizer(target, cfg).compress()
