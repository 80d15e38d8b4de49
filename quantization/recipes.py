"""The quantization recipes `refocus quantize --recipe` knows, described once.

A recipe says what is quantized (which components, which op types), to what
(weight and activation types), how activations are calibrated, and what the
result must meet end to end (LPIPS drift against the fp32 model, median and
worst frame). Three kinds:

* "qdq": static QuantizeLinear/DequantizeLinear ONNX graphs (int8, fp8), the
  format ONNX Runtime fuses into integer kernels and TensorRT reads as explicit
  quantization;
* "float": reduced-precision float graphs or engines (fp16, bf16);
* "coreml": Core ML weight compression (w8, p6, p4), delegated to the Core ML
  exporter, whose emulated gate runs the compressed weights in PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from refocus_edge.export.drift_budget import QUANTIZED_DRIFT_LPIPS
from refocus_edge.runtime.component_names import component_family
from refocus_edge.runtime.errors import InvalidArgumentError

QDQ_COMPONENTS = ("unet", "vae_encoder", "vae_decoder", "image_encoder")


@dataclass(frozen=True)
class QuantRecipe:
    name: str
    kind: str  # "qdq" | "float" | "coreml"
    summary: str
    # qdq: ONNX Runtime QuantType names ("QUInt8", "QInt8", "QFLOAT8E4M3FN").
    weight_type: str = ""
    activation_type: str = ""
    activation_symmetric: bool = False
    per_channel: bool = True
    calibration_method: str = "MinMax"  # ONNX Runtime CalibrationMethod name
    op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
    # Component families quantized ("vae_decoder" covers every decode chunk size).
    components: tuple[str, ...] = QDQ_COMPONENTS
    # A second, TensorRT-ready graph per component (symmetric int8 activations: TensorRT
    # takes only zero-point-0 int8 QDQ, while ONNX Runtime's x86 kernels want uint8).
    tensorrt_activation_type: str = ""
    # A third, OpenVINO-ready graph for the components with attention: this activation type, but
    # uint8 around Concats (runtime/artifacts.py OPENVINO_INT8 says why).
    openvino_activation_type: str = ""
    # End-to-end LPIPS (alex) drift against the fp32 model: (median frame, worst frame).
    drift_budget: tuple[float, float] = QUANTIZED_DRIFT_LPIPS
    # A block quantized alone may drift this much (median frame) before it stays in float.
    unit_budget: float = 0.004
    # The scan grows the keep list until the drift is within this fraction of the budget, not
    # just within it: the scan sees a few held-out photos, and the budget must also hold on
    # photos it never saw (the benchmark measures on a disjoint set). The gates use the budget.
    scan_headroom: float = 0.85
    backends: tuple[str, ...] = ("onnxruntime", "tensorrt")
    coreml_compress: str = ""  # coreml: the Core ML exporter's compression name
    notes: tuple[str, ...] = field(default_factory=tuple)

    def scan_target(self) -> tuple[float, float]:
        """The (median, worst) drift the sensitivity scan aims for: the budget less its headroom."""
        return (self.drift_budget[0] * self.scan_headroom, self.drift_budget[1] * self.scan_headroom)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


RECIPES: dict[str, QuantRecipe] = {r.name: r for r in (
    QuantRecipe(
        "int8", "qdq", "static INT8 QDQ: per-channel symmetric int8 weights, calibrated uint8 activations",
        weight_type="QInt8", activation_type="QUInt8", activation_symmetric=False,
        calibration_method="Percentile", tensorrt_activation_type="QInt8", openvino_activation_type="QInt8",
        notes=("ONNX Runtime's x86 integer kernels (VNNI/AMX) fuse uint8-activation QDQ; the "
               "symmetric int8 twin under artifacts['onnx-tensorrt'] is what TensorRT builds from",
               "the UNet's OpenVINO form under artifacts['onnx-openvino'] (symmetric int8, uint8 around "
               "Concats) lets OpenVINO run attention's MatMuls in int8")),
    QuantRecipe(
        "fp8", "qdq", "FP8 (E4M3) QDQ weights and activations for TensorRT on sm89+ GPUs",
        weight_type="QFLOAT8E4M3FN", activation_type="QFLOAT8E4M3FN", activation_symmetric=True,
        per_channel=False, calibration_method="Distribution", backends=("tensorrt", "onnxruntime"),
        # The UNet only, as NVIDIA's TensorRT diffusion demo does for FP8: the VAE and image encoder
        # run once per stack (the UNet runs every step), and with every component in E4M3 the
        # student drifted 0.031-0.040 (median frame) however many of the blocks that drift least
        # alone went back to float (measured 2026-11-22: the 3 mantissa bits add up everywhere).
        components=("unet",),
        notes=("ONNX Runtime runs FP8 QDQ on CPU without fused kernels (emulation: slow, exact "
               "rounding), which is how its drift is measured without a GPU",
               "UNet only; the VAE and image encoder stay in the bundle's fp32 graphs (fp16 engines on "
               "TensorRT)")),
    QuantRecipe("fp16", "float", "fp16 graphs (ONNX Runtime, Core ML) and fp16 TensorRT engines"),
    QuantRecipe("bf16", "float", "bf16 TensorRT engines (Ampere and newer), built from the fp32 graphs",
                backends=("tensorrt",),
                notes=("no CPU backend runs bf16 graphs; the gate runs the PyTorch modules in bf16 "
                       "(the same rounding of weights and activations a bf16 engine applies)",)),
    QuantRecipe("w8", "coreml", "Core ML: 8-bit linear (symmetric per-channel) UNet weights, fp16 compute",
                coreml_compress="w8", backends=("coreml",)),
    QuantRecipe("p6", "coreml", "Core ML: 6-bit palettized UNet weights (k-means LUT), fp16 compute",
                coreml_compress="p6", backends=("coreml",)),
    QuantRecipe("p4", "coreml", "Core ML: 4-bit palettized UNet weights (k-means LUT), fp16 compute",
                coreml_compress="p4", backends=("coreml",)),
)}


# The default edge recipe, what `refocus quantize` writes without --recipe: on the 4-step student
# it meets the drift budget on held-out photos the scan never saw, is more than 3x smaller than
# fp32 and faster end to end through ONNX Runtime on this CPU, and the same bundle carries the
# TensorRT twin (benchmarks/results/quantization). fp8 quantizes the UNet only and runs unfused
# (slower) on CPUs; fp16/bf16 are 2x smaller at most; w8/p6/p4 are Core ML only.
DEFAULT_RECIPE = "int8"


def get_recipe(name: str) -> QuantRecipe:
    if name not in RECIPES:
        raise InvalidArgumentError(f"unknown quantization recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def quantized_components(recipe: QuantRecipe, component_names) -> list[str]:
    """The bundle components a qdq recipe quantizes (decoder chunk sizes expand)."""
    out = []
    for name in component_names:
        if component_family(name) in recipe.components:
            out.append(name)
    return out
