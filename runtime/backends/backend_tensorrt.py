"""TensorRT: one engine per component, built from the bundle's ONNX graph and cached.

Build: the source graph depends on the precision (source_graph). fp32, fp16 and
bf16 engines are built from the fp32 graph (TensorRT picks reduced-precision
kernels itself when the fp16/bf16 builder flag is set; parsing an fp16 graph
would only pin its casts). int8 and fp8 are explicit quantization: the graph's
Q/DQ nodes say what runs quantized. int8 uses the bundle's TensorRT twin
(artifacts["onnx-tensorrt"]["int8"]: symmetric int8, zero point 0) because the
onnx/int8 graphs carry uint8 activations, which TensorRT rejects; fp8 uses
onnx/fp8 (E4M3) as it is. Either way the build has ONE optimisation profile
spanning the spec's min/opt/max shapes and a persistent timing cache, so a
rebuild for another precision or profile re-times only what is new.

Cache: engines live in cache_dir()/tensorrt under artifacts.engine_key(model
hash, component, precision, profile, TensorRT version, compute capability); a
change in any of those is a different file name, so a stale engine is never
found. Beside each engine a JSON sidecar records the facts that built it and
the engine's sha256; both are checked before an engine is deserialised, so a
renamed or copied file, or one left half-written, is rebuilt instead of run.

Run: TensorRT 10 named-tensor API (set_input_shape / set_tensor_address /
execute_async_v3) on torch CUDA buffers and a private torch stream. When a call
has the same input shapes as the one before, the enqueue is captured once as a
CUDA graph and replayed from then on (the buffers are reused, so the addresses
it recorded stay valid); if capture fails the runner runs plainly and says so
in Runner.device. $REFOCUS_TRT_CUDA_GRAPH=0 turns capture off.

Everything that needs no GPU (profile shapes, keys, sidecar checks, precision
decisions, the cache's reuse-or-rebuild logic) is a plain function below and
unit-tested without tensorrt.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from refocus_edge.runtime import artifacts
from refocus_edge.runtime.artifacts import ONNX, TENSORRT_TWIN, TWIN_GATES
from refocus_edge.runtime.backends.base import Availability, Backend, BackendUnavailableError, Runner
from refocus_edge.runtime.backends.boundary import numpy_facing
from refocus_edge.runtime.bundle import BundleError
from refocus_edge.runtime.publish import cache_entry_lock
from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.importable import importable

MIN_TRT_MAJOR = 10  # execute_async_v3 and the named-tensor API are the only path used here
TRT_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
# Lowest compute capability with native arithmetic in each reduced precision
# (fp16: sm53, the first with fast half math; bf16: Ampere, sm80; int8: sm61, the
# first with the DP4A int8 dot product; fp8 E4M3: Ada/Hopper, sm89).
MIN_CAPABILITY = {"fp16": (5, 3), "bf16": (8, 0), "int8": (6, 1), "fp8": (8, 9)}
# What the GPU lacks below that capability, for the message.
CAPABILITY_FEATURE = {"fp16": "fast fp16 arithmetic", "bf16": "bf16 tensor cores",
                      "int8": "the DP4A int8 dot product", "fp8": "FP8 (E4M3) tensor cores (Ada/Hopper)"}
SIDECAR_FORMAT = 1
# The sidecar fields that must equal the expected facts for a cached engine to be used.
VERIFIED_FIELDS = ("format", "key", "component", "precision", "model_hash", "onnx_sha256",
                   "shapes", "tensorrt", "compute_capability")
GRAPH_ENV = "REFOCUS_TRT_CUDA_GRAPH"


class EngineBuildError(BackendUnavailableError):
    """TensorRT could not parse, build or deserialise a component's engine."""


# ------------------------------------------------------------------ pure logic (no tensorrt)
def capability_string(capability: tuple[int, int]) -> str:
    """(8, 9) -> "8.9", the form used in keys and file names."""
    return f"{int(capability[0])}.{int(capability[1])}"


def profile_shapes(spec) -> dict[str, dict[str, list[int]]]:
    """Per input: the min/opt/max shapes of the spec's profile (lists, so they survive JSON)."""
    bounds = {which: spec.input_shapes(which) for which in ("min", "opt", "max")}
    return {name: {which: list(bounds[which][name]) for which in ("min", "opt", "max")}
            for name in spec.input_names}


def _known(precision: str) -> None:
    if precision not in TRT_PRECISIONS:
        raise InvalidArgumentError(f"TensorRT precision {precision!r} is unknown; "
                                   f"choose one of {', '.join(TRT_PRECISIONS)}")


def precision_problem(precision: str, capability: tuple[int, int]) -> str | None:
    """Why `precision` cannot be built for a GPU of `capability`, or None when it can."""
    _known(precision)
    need = MIN_CAPABILITY.get(precision)
    if need and tuple(int(x) for x in capability) < need:
        return (f"{precision} needs compute capability {need[0]}.{need[1]} or newer "
                f"({CAPABILITY_FEATURE[precision]}), this GPU is {capability_string(capability)}")
    return None


def check_precision(component: str, precision: str, capability: tuple[int, int]) -> None:
    problem = precision_problem(precision, capability)
    if problem:
        raise BackendUnavailableError(f"{component}: TensorRT cannot build {precision} here: {problem}; "
                                      "use fp32 (or another backend)")


def engine_facts(model_hash: str, spec, precision: str, onnx_sha256: str, trt_version: str,
                 compute_capability: str) -> dict:
    """What a cached engine's sidecar must say for the engine to be loaded."""
    key = artifacts.engine_key(model_hash, spec.name, precision, spec, trt_version, compute_capability)
    return {"format": SIDECAR_FORMAT, "key": key, "component": spec.name, "precision": precision,
            "model_hash": model_hash, "onnx_sha256": onnx_sha256, "shapes": profile_shapes(spec),
            "tensorrt": trt_version, "compute_capability": compute_capability}


def sidecar_mismatch(sidecar, expected: dict) -> str | None:
    """Why a sidecar does not vouch for the engine we want (None when it does)."""
    if not isinstance(sidecar, dict):
        return "no readable sidecar"
    for field in VERIFIED_FIELDS:
        if sidecar.get(field) != expected.get(field):
            return f"sidecar {field} is {sidecar.get(field)!r}, expected {expected.get(field)!r}"
    return None


def engine_bytes_mismatch(sidecar: dict, data: bytes) -> str | None:
    """Why the engine file is not the one the sidecar describes (renamed, copied, truncated)."""
    if sidecar.get("engine_bytes") != len(data):
        return f"engine is {len(data)} bytes, sidecar says {sidecar.get('engine_bytes')}"
    if sidecar.get("engine_sha256") != hashlib.sha256(data).hexdigest():
        return "engine sha256 differs from its sidecar"
    return None


def engine_cache_dir() -> Path:
    return artifacts.cache_dir() / "tensorrt"


def cache_paths(root: Path, component: str, precision: str, key: str) -> tuple[Path, Path]:
    engine = Path(root) / artifacts.engine_file(component, precision, key)
    return engine, engine.with_name(engine.name + ".json")


def read_sidecar(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def cached_engine(engine_path: Path, sidecar_path: Path, expected: dict) -> tuple[bytes | None, str]:
    """(engine bytes, "cached") when the cache holds exactly the expected engine, else (None, why not)."""
    if not engine_path.is_file():
        return None, "no cached engine"
    sidecar = read_sidecar(sidecar_path)
    problem = sidecar_mismatch(sidecar, expected)
    if problem:
        return None, problem
    # Read once: the same bytes are hashed here and deserialised by the caller.
    data = engine_path.read_bytes()
    problem = engine_bytes_mismatch(sidecar, data)
    return (None, problem) if problem else (data, "cached")


def _write_atomic(path: Path, data: bytes) -> None:
    # A reader (or a second builder) never sees a half-written file: write aside, then rename.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def builder_flags(precision: str, quantized: bool = True) -> tuple[str, ...]:
    """Names of the trt.BuilderFlag members a `precision` engine is built with.

    int8 and fp8 are explicit quantization: the Q/DQ nodes in the graph fix what runs
    quantized, the flag only permits those kernels. FP16 rides along so the layers the
    recipe kept in float run in half precision, not fp32 (NVIDIA's explicit-quantization
    guidance); TensorRT still times fp32 against them. No calibrator is ever set: implicit
    INT8 calibration (IInt8Calibrator) is deprecated since TensorRT 10.1, and Q/DQ graphs
    carry their scales. `quantized=False` is a component the recipe left wholly in float
    (its table entry is the fp32 graph): INT8 without Q/DQ nodes would put TensorRT in that
    deprecated implicit mode, missing a scale for every tensor, so it gets FP16 alone.
    """
    _known(precision)
    flags = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8", "FP16"),
             "fp8": ("FP8", "FP16")}
    if precision in ("int8", "fp8") and not quantized:
        return ("FP16",)
    return flags[precision]


def source_artifact(bundle, component: str, precision: str) -> tuple[str, str]:
    """(artifact kind, precision table) of the manifest that holds the graph TensorRT builds from.

    Reads the manifest only (no checksums), so every component can be checked before a build.
    """
    _known(precision)
    manifest = bundle.manifest
    if precision == "int8":
        if component in manifest.table(TENSORRT_TWIN, "int8"):
            failed = [g for g in TWIN_GATES if not bundle.gate_passed(TENSORRT_TWIN, "int8", g)]
            if failed:
                raise BundleError(f"{component}: the TensorRT int8 graphs ({TENSORRT_TWIN}/int8) have no passed "
                                  f"{'/'.join(failed)} gate; re-run `refocus quantize --recipe int8`", bundle.root)
            return TENSORRT_TWIN, "int8"
        if component in manifest.table(ONNX, "int8"):
            # Older bundles: only ONNX Runtime's uint8-activation graphs, which TensorRT refuses
            # (it takes int8 QDQ with zero point 0 only).
            raise BundleError(f"{component}: this bundle's int8 graphs use uint8 (asymmetric) activations, which "
                              f"TensorRT cannot build, and it has no TensorRT-ready twin ({TENSORRT_TWIN}/int8); "
                              "re-run `refocus quantize --recipe int8` with this version, or run int8 with the "
                              "onnxruntime backend", bundle.root)
        raise BundleError(f"{component}: the bundle has no int8 graphs; run `refocus quantize --recipe int8` "
                          "first", bundle.root)
    if precision == "fp8":
        if component not in manifest.table(ONNX, "fp8"):
            raise BundleError(f"{component}: the bundle has no fp8 graphs; run `refocus quantize --recipe fp8` "
                              "first", bundle.root)
        return ONNX, "fp8"
    # fp32/fp16/bf16: TensorRT lowers the fp32 graph itself (see the module docstring).
    return ONNX, "fp32"


def source_is_quantized(bundle, component: str, precision: str) -> bool:
    """Whether the graph `precision` builds from holds Q/DQ nodes: False for fp32/fp16/bf16 and for
    the components a quantization recipe kept in float (their table entry is the fp32 graph)."""
    if precision not in ("int8", "fp8"):
        return False
    artifact, table = source_artifact(bundle, component, precision)
    manifest = bundle.manifest
    return manifest.table(artifact, table)[component] != manifest.table(ONNX, "fp32").get(component)


def source_graph(bundle, spec, precision: str) -> tuple[Path, str]:
    """The ONNX graph TensorRT builds `spec`'s `precision` engine from (checksum-verified, external
    weights included) and its sha256 from the manifest."""
    artifact, table = source_artifact(bundle, spec.name, precision)
    path = bundle.artifact_path(artifact, table, spec.name)
    rel = bundle.manifest.table(artifact, table)[spec.name]
    return path, bundle.manifest.files[rel]


def bundle_model_hash(bundle) -> str:
    # The source model's hash names the weights; a bundle without one falls back to its
    # content hash (stricter: any re-export rebuilds).
    return bundle.source.get("hash") or bundle.content_hash


@dataclass
class CachedEngine:
    component: str
    key: str
    path: Path
    built: bool  # False when a cached engine was reused
    seconds: float
    reason: str  # "cached", or why it was (re)built
    data: bytes  # the serialised engine


def ensure_engine(bundle, spec, precision: str, *, trt_version: str, compute_capability: str,
                  build: Callable[[Path], bytes], info: dict | None = None,
                  root: Path | None = None) -> CachedEngine:
    """The cached engine of `spec` if its key and sidecar match, else `build(onnx_path)` and cache it.

    The key holds the precision and the sidecar the source graph's sha256, so an int8 engine
    (built from the twin graph) is never mistaken for an fp16 one built from the fp32 graph.
    """
    start = time.perf_counter()
    onnx_path, onnx_sha = source_graph(bundle, spec, precision)
    expected = engine_facts(bundle_model_hash(bundle), spec, precision, onnx_sha, trt_version,
                            compute_capability)
    root = Path(root) if root is not None else engine_cache_dir()
    engine_path, sidecar_path = cache_paths(root, spec.name, precision, expected["key"])
    root.mkdir(parents=True, exist_ok=True)
    with cache_entry_lock(engine_path):  # one builder per engine: a second process waits, then loads it
        data, reason = cached_engine(engine_path, sidecar_path, expected)
        built = data is None
        if built:
            data = bytes(build(onnx_path))
            sidecar = {**expected, "engine_bytes": len(data), "engine_sha256": hashlib.sha256(data).hexdigest(),
                       "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "build_seconds": round(time.perf_counter() - start, 3), **(info or {})}
            # Engine first, sidecar last: a crash in between leaves a sidecar that does not
            # match the engine, which reads as "rebuild", never as a wrong load.
            _write_atomic(engine_path, data)
            _write_atomic(sidecar_path, json.dumps(sidecar, indent=1, sort_keys=True).encode())
    return CachedEngine(spec.name, expected["key"], engine_path, built, time.perf_counter() - start,
                        reason, data)


def graphs_enabled() -> bool:
    return os.environ.get(GRAPH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


# ------------------------------------------------------------------ TensorRT (GPU only)
def _import_trt():
    import tensorrt as trt

    return trt


@dataclass(frozen=True)
class _Gpu:
    index: int
    name: str
    capability: tuple[int, int]

    @property
    def cc(self) -> str:
        return capability_string(self.capability)


def _gpu() -> _Gpu:
    import torch

    index = torch.cuda.current_device()
    return _Gpu(index, torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))


def _logger(trt):
    """A TensorRT logger that keeps errors (for our messages) and prints nothing."""

    class _Recorder(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg).strip().splitlines()[0] if str(msg).strip() else "")

        def last(self) -> str:
            return self.errors[-1] if self.errors else "no error message from TensorRT"

    return _Recorder()


def _parser_error(error) -> str:
    try:
        return f"node {error.node_name() or error.node()}: {error.desc()}"
    except Exception:  # older bindings: the error only prints
        text = str(error).strip().splitlines()
        return text[0] if text else "unknown parser error"


def _load_timing_cache(config, path: Path):
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    cache = config.create_timing_cache(data)
    if cache is None and data:  # unreadable (e.g. from a broken write): start afresh
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)


def _save_timing_cache(config, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time, and what another build saved since this one loaded the file is merged
        # in (combine skips entries of another TensorRT or GPU), so overlapping builds lose no timings.
        with cache_entry_lock(path):
            try:
                on_disk = path.read_bytes()
            except OSError:
                on_disk = b""
            saved = config.create_timing_cache(on_disk) if on_disk else None
            if saved is not None:
                cache.combine(saved, True)
            _write_atomic(path, bytes(cache.serialize()))
    except OSError:  # a read-only cache only costs re-timing next build
        pass


def _set_precision_flags(trt, builder, config, spec, precision: str, gpu: _Gpu, quantized: bool = True) -> None:
    names = builder_flags(precision, quantized)
    missing = [n for n in names if not hasattr(trt.BuilderFlag, n)]
    if missing:
        # The flags exist throughout TensorRT 10 (FP8 since 8.6); TensorRT 11 removed them in
        # favour of strongly typed networks, which this weakly typed build does not use.
        raise BackendUnavailableError(f"{spec.name}: tensorrt {trt.__version__} has no BuilderFlag "
                                      f"{', '.join(missing)}, needed for {precision} engines; "
                                      "use a TensorRT 10 release that has it, or another precision")
    if precision == "fp16" and not getattr(builder, "platform_has_fast_fp16", True):
        # Only where fp16 is the point: for int8/fp8 the FP16 flag merely permits half
        # kernels for the float layers, and TensorRT's timing picks fp32 where that is faster.
        raise BackendUnavailableError(f"{spec.name}: TensorRT reports no fast fp16 on {gpu.name}; use fp32")
    for name in names:
        config.set_flag(getattr(trt.BuilderFlag, name))


def _build_engine(trt, onnx_path: Path, spec, precision: str, gpu: _Gpu, quantized: bool = True) -> bytes:
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{spec.name}: TensorRT cannot parse {onnx_path.name} ({errors or logger.last()}); "
                               "use the onnxruntime backend or re-export with another opset")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    unknown = sorted(t.name for t in inputs if t.name not in spec.input_names)
    if unknown:
        raise BundleError(f"{spec.name}: the ONNX graph has inputs {unknown} that the manifest's spec does not "
                          f"name ({spec.input_names}); re-export the bundle", onnx_path)

    config = builder.create_builder_config()
    _set_precision_flags(trt, builder, config, spec, precision, gpu, quantized)

    # One profile covering every shape the runtime may send (check_inputs enforces the range).
    shapes = profile_shapes(spec)
    dynamic = [t for t in inputs if any(d < 0 for d in tuple(t.shape))]
    if dynamic:
        profile = builder.create_optimization_profile()
        for t in dynamic:
            s = shapes[t.name]
            profile.set_shape(t.name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)

    timing_path = engine_cache_dir() / artifacts.timing_cache_file(trt.__version__, gpu.cc)
    _load_timing_cache(config, timing_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{spec.name}: TensorRT failed to build the {precision} engine ({logger.last()}); "
                               "use the onnxruntime backend or another precision")
    _save_timing_cache(config, timing_path)
    return bytes(serialized)


def _torch_dtype(trt, dtype) -> "torch.dtype":
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise EngineBuildError(f"engine tensor type {dtype} is not supported by this runner")
    return table[dtype]


class _Execution:
    """One engine's execution context, buffers, stream and (once shapes repeat) CUDA graph."""

    def __init__(self, trt, engine, spec, gpu: _Gpu, use_graph: bool, on_graph_failure: Callable[[str], None]):
        self.engine, self.spec, self.gpu = engine, spec, gpu
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineBuildError(f"{spec.name}: TensorRT could not create an execution context "
                                   "(out of GPU memory?); free GPU memory or use another backend")
        import torch

        self.device = torch.device("cuda", gpu.index)
        self.stream = torch.cuda.Stream(device=self.device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        # An exporter may drop an input the graph does not use; every output must be there.
        if not set(self.inputs) <= set(spec.input_names) or set(self.outputs) != set(spec.output_names):
            raise BundleError(f"{spec.name}: the engine's tensors (inputs {self.inputs}, outputs {self.outputs}) "
                              f"do not match the manifest's spec; re-export the bundle")
        self.use_graph, self.on_graph_failure = use_graph, on_graph_failure
        self.shapes: dict | None = None
        self.buffers: dict = {}  # name -> torch CUDA tensor
        self.graph = None
        self.graph_failed = False

    def _bind(self, shapes: dict) -> None:
        """New input shapes: fresh buffers and addresses; any captured graph points at the old ones."""
        import torch

        self.graph, self.shapes, self.buffers = None, None, {}
        for name in self.inputs:
            if not self.context.set_input_shape(name, shapes[name]):
                raise InvalidArgumentError(f"{self.spec.name}: TensorRT rejected shape {list(shapes[name])} for "
                                           f"input '{name}'; it is outside the engine's profile")
            self.buffers[name] = torch.empty(shapes[name], dtype=self.dtypes[name], device=self.device)
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineBuildError(f"{self.spec.name}: output '{name}' has unresolved shape {list(shape)}")
            self.buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
        for name, buf in self.buffers.items():
            self.context.set_tensor_address(name, buf.data_ptr())
        self.shapes = shapes

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineBuildError(f"{self.spec.name}: TensorRT execution failed; run with another backend")

    def _capture(self) -> None:
        # Only after one plain run at these shapes: TensorRT does its deferred per-shape
        # setup on the first enqueue, which must not happen inside a capture.
        import torch

        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self._enqueue()
        except Exception as exc:  # any capture failure: run plainly from now on, visibly
            self.graph_failed = True
            text = str(exc).strip().splitlines()
            self.on_graph_failure(f"{type(exc).__name__}: {text[0] if text else ''}")
            return
        self.graph = graph

    def __call__(self, feeds: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
        import torch

        shapes = {n: tuple(feeds[n].shape) for n in self.inputs}
        repeated = shapes == self.shapes
        with torch.no_grad(), torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if not repeated:
                self._bind(shapes)
            for name in self.inputs:
                self.buffers[name].copy_(feeds[name].to(self.dtypes[name]))
            if repeated and self.use_graph and self.graph is None and not self.graph_failed:
                self._capture()
            if self.graph is not None:
                self.graph.replay()
            else:
                self._enqueue()
            # .cpu() copies on this stream and waits for it (a new tensor: the buffers are reused).
            return {n: self.buffers[n].float().cpu() for n in self.spec.output_names}


class TensorRTBackend(Backend):
    name = "tensorrt"
    artifact = ONNX
    # Behind onnxruntime in the untimed tie-break: a first load may spend minutes building.
    priority = 2

    def supports(self, precision: str) -> bool:
        # An onnx precision this backend has no build for (a future recipe) is skipped by
        # dispatch instead of failing at load.
        return precision in TRT_PRECISIONS

    def availability(self) -> Availability:
        if not importable("tensorrt"):
            return Availability(False, "package 'tensorrt' is not installed "
                                       "(pip install tensorrt, on a machine with an NVIDIA GPU)")
        if not importable("torch"):
            return Availability(False, "package 'torch' is not installed; this backend runs TensorRT on "
                                       "torch CUDA buffers (pip install 'refocus-edge[tensorrt]')")
        import torch

        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device or driver"
            return Availability(False, f"no CUDA GPU visible to PyTorch ({why}); TensorRT needs an NVIDIA GPU")
        try:
            trt = _import_trt()
        except Exception as exc:  # a broken install (missing libnvinfer, driver mismatch)
            return Availability(False, f"package 'tensorrt' is installed but does not import ({exc}); reinstall it")
        major = int(str(trt.__version__).split(".")[0])
        if major < MIN_TRT_MAJOR:
            return Availability(False, f"tensorrt {trt.__version__} is too old; this backend needs "
                                       f"TensorRT {MIN_TRT_MAJOR} or newer")
        gpu = _gpu()
        return Availability(True, f"TensorRT {trt.__version__} on {gpu.name} (compute capability {gpu.cc})",
                            {"tensorrt": trt.__version__, "gpu": gpu.name, "compute_capability": gpu.cc})

    def _engine(self, trt, gpu: _Gpu, bundle, spec, precision: str) -> CachedEngine:
        check_precision(spec.name, precision, gpu.capability)
        quantized = source_is_quantized(bundle, spec.name, precision)
        return ensure_engine(bundle, spec, precision, trt_version=trt.__version__, compute_capability=gpu.cc,
                             build=lambda path: _build_engine(trt, path, spec, precision, gpu, quantized),
                             info={"gpu": gpu.name, "builder_flags": list(builder_flags(precision, quantized))})

    def load_arrays(self, bundle, spec, precision: str) -> Runner:
        return numpy_facing(self.load(bundle, spec, precision))  # torch computes; numpy at the boundary

    def load(self, bundle, spec, precision: str) -> Runner:
        self.require()
        trt = _import_trt()
        gpu = _gpu()
        cached = self._engine(trt, gpu, bundle, spec, precision)
        logger = _logger(trt)
        engine = trt.Runtime(logger).deserialize_cuda_engine(cached.data)
        cached.data = b""  # the engine holds its own copy; do not keep a second one alive
        if engine is None:
            raise EngineBuildError(f"{spec.name}: TensorRT cannot deserialise {cached.path} ({logger.last()}); "
                                   "delete it to rebuild")
        use_graph = graphs_enabled()
        base = f"tensorrt {trt.__version__} {gpu.name} sm{gpu.cc} {precision}"
        device = f"{base}, " + ("CUDA graph on repeated shapes" if use_graph else f"CUDA graph off (${GRAPH_ENV})")
        runner = None

        def graph_failed(why: str) -> None:
            runner.device = f"{base}, CUDA graph capture failed ({why}): plain execution"

        execution = _Execution(trt, engine, spec, gpu, use_graph, graph_failed)
        runner = Runner(spec, execution, device)
        return runner


BACKEND = TensorRTBackend()


def build_engines(bundle, precision: str, progress=True) -> list[dict]:
    """Build (or reuse) every component's engine ahead of time; used by `refocus export tensorrt`.

    `progress`: True writes one line per step to stderr, a callable receives the lines,
    False is silent. Returns per component: name, key, path, built, seconds, reason.
    """
    BACKEND.require()
    trt = _import_trt()
    gpu = _gpu()
    specs = bundle.specs
    for spec in specs.values():  # fail before minutes of building, not after
        check_precision(spec.name, precision, gpu.capability)
        source_artifact(bundle, spec.name, precision)
    say = progress if callable(progress) else (
        (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None))
    results = []
    for name, spec in specs.items():
        say(f"tensorrt: {name} {precision} on {gpu.name} ...")
        cached = BACKEND._engine(trt, gpu, bundle, spec, precision)
        cached.data = b""
        say(f"tensorrt: {name} {'built' if cached.built else 'cached'} in {cached.seconds:.1f} s "
            f"({cached.path.name})")
        results.append({"name": name, "key": cached.key, "path": str(cached.path), "built": cached.built,
                        "seconds": round(cached.seconds, 3), "reason": cached.reason})
    return results
