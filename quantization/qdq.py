"""Write QDQ (QuantizeLinear/DequantizeLinear) ONNX graphs with ONNX Runtime's quantizer.

Calibration runs once per component: activation ranges are computed from the
recorded calibration feeds and kept in a JSON cache beside the work, so the
sensitivity scan can write dozens of partially quantized graphs (one unit on
at a time) in well under a second each without recalibrating.

Weights: per-channel symmetric where the recipe says so; activations per
tensor, with the recipe's type and symmetry. Only the recipe's op types
(convolutions and matrix products) are quantized: normalisations, softmax and
the elementwise glue stay float, which is what both ONNX Runtime's fused
integer kernels and TensorRT's explicit-quantization fusions expect.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from refocus_edge.runtime.artifacts import onnx_external_data


@contextlib.contextmanager
def _quiet_quantizer():
    """ONNX Runtime's quantizer logs advice through the root logger; the CLI's stderr is the user's."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _vectorised_float8_checks():
    """ONNX Runtime's quantizer (1.2x-1.3x) re-checks every float8 initializer for NaN bytes each
    time it adds one, in a Python loop over bytes: quadratic in the weights, hours for a UNet.
    The same check (an E4M3FN byte is NaN when its low 7 bits are all set) done with numpy keeps
    its meaning and takes milliseconds; the original is restored afterwards."""
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel

    original = ONNXModel._check_init

    def check(self, init, test=None):
        if init.data_type == onnx.TensorProto.FLOAT8E4M3FN and init.HasField("raw_data"):
            if np.any((np.frombuffer(init.raw_data, dtype=np.uint8) & 127) == 127):
                raise ValueError(f"Initializer {init.name!r} has nan.")
        return init

    ONNXModel._check_init = check
    try:
        yield
    finally:
        ONNXModel._check_init = original


class _Reader:
    """ONNX Runtime CalibrationDataReader over recorded feeds (torch tensors -> numpy)."""

    def __init__(self, feeds: list[dict], input_names: list[str]):
        self.feeds, self.names = feeds, input_names
        self.window, self.i = feeds, 0

    def get_next(self):
        if self.i >= len(self.window):
            return None
        item = self.window[self.i]
        self.i += 1
        return {n: np.ascontiguousarray(item[n].numpy().astype(np.float32)) for n in self.names}

    def __len__(self):
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int):
        # Strided calibration: the calibrator sees one feed at a time and folds it into its
        # running ranges/histograms, so memory stays at one call's activations, not all of them.
        self.window, self.i = self.feeds[start_index:end_index], 0


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, name)


def _has_external_data(path: Path) -> bool:
    return path.with_name(onnx_external_data(path.stem)).is_file()


def quantize_graph(source: Path, out: Path, recipe, *, nodes: list[str] | None = None,
                   exclude: list[str] = (), cache: Path,
                   feeds: list[dict] | None = None, input_names: list[str] | None = None,
                   activation_type: str | None = None, uint8_concats: bool = False) -> Path:
    """Quantize `nodes` (None: every node of the recipe's op types but `exclude`) of the fp32 graph `source`;
    the embedding layers of units.always_float stay float either way.

    The first call for a component needs `feeds`: it calibrates and fills `cache`;
    later calls reuse the cached ranges. `activation_type` overrides the recipe's
    (the TensorRT twin of an int8 graph uses symmetric int8 activations). `uint8_concats` gives the
    float tensors that enter or leave a Concat asymmetric uint8 ranges whatever the activation type
    (the OpenVINO form, runtime/backends/backend_openvino.py: OpenVINO 2026.4's CPU plugin computes
    signed int8 through a Concat wrongly).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    if nodes is not None and not nodes:
        raise ValueError("quantize_graph: an empty node list would quantize everything; pass None")
    from refocus_edge.quantization.units import always_float

    # The layers every QDQ graph keeps float (units.py says why), whatever the caller asked for. Only
    # "every node" needs the graph read for their names; a node list (a sensitivity scan's, one call per
    # unit) is filtered as it is.
    if nodes is None:
        import onnx

        graph = onnx.load(str(source), load_external_data=False).graph
        exclude = list(dict.fromkeys([*exclude, *(n.name for n in graph.node if always_float(n.name))]))
    else:
        nodes = [n for n in nodes if not always_float(n)]
        if not nodes:
            raise ValueError("quantize_graph: every node asked for stays float (quantization/units.py always_float)")
    act = activation_type or recipe.activation_type
    symmetric = recipe.activation_symmetric or act == "QInt8"
    overrides = concat_overrides(source) if uint8_concats else {}
    reader = _Reader(feeds, input_names) if feeds is not None and not cache.is_file() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    large = _has_external_data(source)
    fp8 = "FLOAT8" in act or "FLOAT8" in recipe.weight_type
    with _quiet_quantizer(), contextlib.redirect_stdout(io.StringIO()), \
            (_vectorised_float8_checks() if fp8 else contextlib.nullcontext()):  # its calibrators print()
        quantize_static(
            str(source), str(out), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types), per_channel=recipe.per_channel,
            reduce_range=False, activation_type=_quant_type(act), weight_type=_quant_type(recipe.weight_type),
            nodes_to_quantize=list(nodes) if nodes is not None else None,
            nodes_to_exclude=list(exclude) or None,
            calibrate_method=getattr(CalibrationMethod, recipe.calibration_method),
            calibration_cache_path=str(cache), use_external_data_format=large,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                           # Percentile calibration: clip the top 0.001 % of |activation|.
                           "CalibPercentile": 99.999, "CalibStridedMinMax": 1,
                           **({"TensorQuantOverrides": overrides} if overrides else {})},
        )
    if not large:
        compact_names(out)
    return out


def has_attention(source: Path) -> bool:
    """Whether the graph multiplies two activations (a MatMul with no constant input: attention)."""
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    constant = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return any(n.op_type == "MatMul" and not (set(n.input) & constant) for n in graph.node)


def concat_overrides(source: Path) -> dict:
    """ONNX Runtime TensorQuantOverrides giving every float tensor in or out of a Concat of `source`
    an asymmetric uint8 range (shape arithmetic's integer Concats are left alone)."""
    import onnx
    from onnxruntime.quantization import QuantType

    model = onnx.load(str(source), load_external_data=False)
    graph = onnx.shape_inference.infer_shapes(model).graph  # tensor types (the weights are not needed)
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({i.name: i.data_type for i in graph.initializer})
    tensors = {t for n in graph.node if n.op_type == "Concat" and types.get(n.output[0]) == onnx.TensorProto.FLOAT
               for t in (*n.input, *n.output) if t}
    return {t: [{"quant_type": QuantType.QUInt8, "symmetric": False}] for t in sorted(tensors)}


def compact_names(path: Path) -> None:
    """Shorten the quantizer's long intermediate tensor and node names (a third of a small
    graph's bytes); graph inputs, outputs and initializer data are untouched."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping)}"
        return mapping[name]

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        node.doc_string = ""
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
    for info in graph.value_info:
        info.name = short(info.name)
    onnx.save(model, str(path))


def quantized_node_count(path: Path) -> int:
    """QuantizeLinear nodes in a graph: 0 means nothing was quantized."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
