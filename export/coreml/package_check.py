"""Verify a saved Core ML package without a Mac: read its spec back from disk.

Checks (each failure raises PackageSpecError naming the package and the problem):
  * it is an mlprogram for the iOS 17 opset (CoreML7) or later;
  * inputs and outputs are exactly the expected names, static shapes and dtype;
  * no value anywhere in the program has rank > 5 (Core ML's limit);
  * every op is in the set this project has seen Core ML run (SUPPORTED_OPS):
    a new op type appearing after a diffusers or coremltools upgrade is
    reported, not shipped blind.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from refocus_edge.runtime.disk_usage import disk_bytes
from refocus_edge.runtime.errors import RefocusError

MAX_RANK = 5
# MIL ops of the iOS 15-17 opsets used by conversion-ready SVD modules and CLIP
# (coremltools.converters.mil.mil.ops.defs); all run on CPU/GPU, most on the ANE.
SUPPORTED_OPS = frozenset({
    "const", "constexpr_lut_to_dense", "constexpr_affine_dequantize", "cast",
    "conv", "linear", "matmul", "einsum", "add", "sub", "mul", "real_div", "pow", "sqrt", "rsqrt",
    "exp", "sin", "cos", "tanh", "sigmoid", "silu", "gelu", "softmax", "erf", "inverse", "square",
    "layer_norm", "instance_norm", "batch_norm", "reduce_mean", "reduce_sum", "reduce_max",
    "reshape", "transpose", "concat", "split", "slice_by_index", "slice_by_size", "squeeze",
    "expand_dims", "tile", "gather", "pad", "upsample_nearest_neighbor", "identity", "select",
    "maximum", "minimum", "clip", "abs", "floor", "ceil", "range_1d", "shape", "fill",
    "relu", "pixel_shuffle",  # the tiny and photo-guided decoders (runtime/tiny_decoder.py), iOS 15 ops
    "avg_pool", "upsample_bilinear",  # the lens stack's focus-depth head (runtime/lens_stack.py), iOS 15 ops
})


class PackageSpecError(RefocusError):
    """A converted package does not have the interface or op set the bundle promises."""


@dataclass
class PackageReport:
    path: Path
    opset: str
    ops: Counter = field(default_factory=Counter)
    max_rank: int = 0
    weight_bytes: int = 0
    compressed_ops: int = 0

    def to_json(self) -> dict:
        return {"opset": self.opset, "ops": sum(self.ops.values()), "op_types": sorted(self.ops),
                "max_rank": self.max_rank, "weight_bytes": self.weight_bytes,
                "compressed_weight_ops": self.compressed_ops}


def _io(features) -> dict[str, tuple[tuple[int, ...], str]]:
    import coremltools as ct

    enum = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    return {f.name: (tuple(int(d) for d in f.type.multiArrayType.shape), enum.Name(f.type.multiArrayType.dataType))
            for f in features}


def _walk(block, report: PackageReport) -> None:
    for op in block.operations:
        report.ops[op.type] += 1
        if op.type.startswith("constexpr"):
            report.compressed_ops += 1
        for out in op.outputs:
            t = out.type
            if t.HasField("tensorType"):
                report.max_rank = max(report.max_rank, int(t.tensorType.rank))
        for nested in op.blocks:
            _walk(nested, report)


def _weights_bytes(path: Path) -> int:
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    return disk_bytes(weights)


def check_package(path: Path, inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]],
                  dtype: str) -> PackageReport:
    """Read `path`'s spec and check it; `dtype` is FLOAT16 or FLOAT32 for every input and output."""
    import coremltools as ct

    path = Path(path)
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:  # a corrupt or partial package
        raise PackageSpecError(f"cannot read the package spec ({exc})", path) from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise PackageSpecError(f"is a {spec.WhichOneof('Type')}, not an mlprogram", path)
    main = spec.mlProgram.functions["main"]
    report = PackageReport(path=path, opset=main.opset)
    if not main.opset.startswith("CoreML") or int(main.opset[len("CoreML"):]) < 7:
        raise PackageSpecError(f"opset {main.opset}, expected CoreML7 (iOS 17) or later", path)
    for kind, got, want in (("inputs", _io(spec.description.input), inputs),
                            ("outputs", _io(spec.description.output), outputs)):
        if set(got) != set(want):
            raise PackageSpecError(f"{kind} are {sorted(got)}, expected {sorted(want)}", path)
        for name, (shape, got_dtype) in got.items():
            if tuple(shape) != tuple(want[name]):
                raise PackageSpecError(f"{kind[:-1]} '{name}' has shape {list(shape)}, "
                                       f"expected {list(want[name])}", path)
            if got_dtype != dtype:
                raise PackageSpecError(f"{kind[:-1]} '{name}' is {got_dtype}, expected {dtype}", path)
    _walk(main.block_specializations[main.opset], report)
    if report.max_rank > MAX_RANK:
        raise PackageSpecError(f"a tensor of rank {report.max_rank} (Core ML allows {MAX_RANK})", path)
    unknown = sorted(set(report.ops) - SUPPORTED_OPS)
    if unknown:
        raise PackageSpecError(f"ops outside the supported set: {', '.join(unknown)}", path)
    report.weight_bytes = _weights_bytes(path)
    return report
