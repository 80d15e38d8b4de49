"""ONNX Runtime: runs a bundle's ONNX graphs.

Execution provider: $REFOCUS_ORT_PROVIDER if set (e.g. CUDAExecutionProvider, or
OpenVINOExecutionProvider from an onnxruntime-openvino build), else CUDA when this onnxruntime
build has it, else CPU. OpenVINO is not preferred on its own: the openvino backend
(backend_openvino.py) compiles the same graphs with OpenVINO directly, with the precision it
is asked for, and competes in dispatch under its own name, so "onnxruntime" never silently
means OpenVINO. The provider a session actually uses is reported; if ONNX Runtime falls back
from the one asked for, the load fails instead of running silently on something slower.
"""
from __future__ import annotations

import os

import numpy as np

from refocus_edge.runtime.artifacts import ONNX
from refocus_edge.runtime.backends.base import Availability, Backend, BackendUnavailableError, Runner
from refocus_edge.runtime.backends.boundary import torch_facing
from refocus_edge.runtime.backends.threads import thread_budget
from refocus_edge.runtime.importable import importable

PREFERENCE = ("CUDAExecutionProvider", "CPUExecutionProvider")
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _provider(ort) -> str:
    available = ort.get_available_providers()
    wanted = os.environ.get("REFOCUS_ORT_PROVIDER")
    if wanted:
        if wanted not in available:
            raise BackendUnavailableError(f"REFOCUS_ORT_PROVIDER={wanted} but this onnxruntime has only "
                                          f"{', '.join(available)}")
        return wanted
    return next(p for p in PREFERENCE + tuple(available) if p in available)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    artifact = ONNX
    priority = 1

    def availability(self) -> Availability:
        if not importable("onnxruntime"):
            return Availability(False, "package 'onnxruntime' is not installed (pip install onnxruntime)")
        import onnxruntime as ort

        try:
            provider = _provider(ort)
        except BackendUnavailableError as exc:
            return Availability(False, str(exc))
        return Availability(True, f"onnxruntime {ort.__version__}, {provider}",
                            {"onnxruntime": ort.__version__, "provider": provider})

    def supports(self, precision: str) -> bool:
        # A bf16 bundle table points at the fp32 graphs TensorRT builds bf16 engines from;
        # running them here would be fp32 under a bf16 label.
        return precision != "bf16"

    def load(self, bundle, spec, precision: str) -> Runner:
        return torch_facing(self.load_arrays(bundle, spec, precision))

    def load_arrays(self, bundle, spec, precision: str) -> Runner:
        self.require()
        if not self.supports(precision):
            raise BackendUnavailableError(f"{spec.name}: onnxruntime has no {precision} CPU kernels; "
                                          f"{precision} runs on tensorrt (or choose another precision)")
        return array_session_runner(bundle.artifact_path("onnx", precision, spec.name), spec, precision)


def session_runner(path, spec, precision: str, provider: str | None = None) -> Runner:
    """An ONNX Runtime session on `path` behind the Runner interface of `spec`, torch tensors in and out."""
    return torch_facing(array_session_runner(path, spec, precision, provider))


def array_session_runner(path, spec, precision: str, provider: str | None = None) -> Runner:
    """An ONNX Runtime session on `path` behind the Runner interface of `spec`, numpy arrays in and out."""
    import onnxruntime as ort

    provider = provider or _provider(ort)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = thread_budget()
    # The exported graphs are constant-folded already; ORT's own fusions still apply here.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if precision == "fp8":
        # ORT fuses QDQ groups into QLinearConv/QGemm, which have no float8 kernels (the
        # session fails with INVALID_GRAPH); unfused, FP8 QDQ runs as Q/DQ + float ops.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(path), options, providers=[provider])
    used = session.get_providers()[0]
    if used != provider:
        raise BackendUnavailableError(f"{spec.name}: asked onnxruntime for {provider}, it fell back to "
                                      f"{used}; refusing to run on a provider nobody chose")
    types = {i.name: _NP_TYPES.get(i.type, np.float32) for i in session.get_inputs()}
    names = spec.output_names

    def run(feeds):
        arrays = {k: np.ascontiguousarray(np.asarray(v).astype(types[k], copy=False))
                  for k, v in feeds.items() if k in types}
        outs = session.run(names, arrays)
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(names, outs)}

    return Runner(spec, run, f"onnxruntime {used} {precision}")


BACKEND = OnnxRuntimeBackend()
