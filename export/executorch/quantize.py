"""int8 programs: XNNPACK's quantizer through PyTorch's PT2E flow, calibrated on recorded calls.

    torch.export -> the XNNPACK rewrites (rewrites.py) -> prepare_pt2e(XNNPACKQuantizer) -> run the
    calibration feeds -> convert_pt2e -> torch.export again -> lowered like any other program (lower.py).

The rewrites come first: the quantizer then sees the temporal convolutions as the 2-D ones they
become (and quantizes them), and the quantized graph is not rewritten again (XNNPACK's layout pass
failed on group norms rewritten between quantize/dequantize pairs).

Weights: per-channel symmetric int8; activations: per-tensor int8 from the observed ranges. The
calibration feeds are the calls the model's own sampler makes on calibration photos
(export/calibration.py, the same data `refocus quantize` calibrates ONNX graphs on), split
into single items when the program runs one item per call (runtime/program_shapes.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from refocus_edge.export.executorch.lower import explain


@dataclass(frozen=True)
class Int8Config:
    per_channel: bool = True
    # XNNPACK's quantizer annotates convolutions and linears and, with `all_ops`, also the
    # elementwise adds/muls and concatenations between them (fewer float<->int8 conversions, more drift).
    ops: str = "conv-linear"  # "conv-linear" | "all"

    def to_json(self) -> dict:
        return {"scheme": "PT2E static int8 (XNNPACKQuantizer), weights per-channel symmetric, "
                          "activations per-tensor", "per_channel": self.per_channel, "ops": self.ops}


def _quantizer(cfg: Int8Config):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    qconfig = get_symmetric_quantization_config(is_per_channel=cfg.per_channel)
    quantizer = XNNPACKQuantizer()
    if cfg.ops == "all":
        return quantizer.set_global(qconfig)
    for op in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):  # XNNPACK has no int8 conv3d
        quantizer.set_operator_type(op, qconfig)
    return quantizer


def split_items(feeds: dict, names: list[str], per_item: bool) -> list[tuple]:
    """A recorded call as program argument tuples: one per item when the program runs one item a call."""
    if not per_item:
        return [tuple(feeds[n] for n in names)]
    count = feeds[names[0]].shape[0]
    return [tuple(feeds[n][i:i + 1] for n in names) for i in range(count)]


def quantize_int8(exported, example: tuple, calibration: list[tuple], component: str,
                  cfg: Int8Config = Int8Config()):
    """`exported` (the float program, already rewritten for XNNPACK: lower.py) with int8 weights and
    activations, as an ExportedProgram ready to lower."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise explain(component, "int8 calibration", ValueError("no calibration calls were recorded for it"))
    try:
        with torch.no_grad():
            prepared = prepare_pt2e(exported.module(), _quantizer(cfg))
            for args in calibration:
                prepared(*args)
            converted = convert_pt2e(prepared)
            return torch.export.export(converted, example, strict=False)
    except Exception as exc:
        raise explain(component, "int8 quantization (PT2E)", exc) from exc
