"""OpenVINO: compiles a bundle's ONNX graphs for Intel CPUs (and GPUs/NPUs) with the `openvino`
package (`pip install 'refocus-edge[openvino]'`), numpy arrays in and out.

Precisions, each from a graph the bundle already holds:
  * fp32: onnx/fp32 compiled with INFERENCE_PRECISION_HINT f32. The hint is set explicitly
    because OpenVINO's CPU plugin otherwise runs bf16 by default on CPUs with AVX-512 BF16 or
    AMX, which is not what the fp32 gate measured;
  * bf16: the same fp32 graph (or the bundle's bf16 table, which `refocus quantize --recipe bf16`
    points at those graphs) compiled with the bf16 hint, offered only where the device lists BF16
    in OPTIMIZATION_CAPABILITIES. No export ever ran this, so it gates itself at load: its outputs
    against the gated fp32 graph's on the spec's sample inputs at the min/opt/max shapes, within
    the spec's bf16 tolerance (runtime/components.py); a failure is a load error, which dispatch
    reports and skips. Passed gates are remembered per graph, OpenVINO version and device;
  * int8: a QDQ graph of `refocus quantize --recipe int8` as it is (OpenVINO folds the Q/DQ pairs
    into int8 kernels); its float parts (normalisations, softmax, element-wise work between the int8
    kernels) run at bf16 where the device lists BF16, else f32: on the full-size int8 UNet, on an
    AMX CPU, the bf16 hint cut the profiled call from 8.99 s to 7.23 s, and the int8 rounding it adds
    to is 20x larger than bf16's (the load-time check below holds the result either way). For a
    component with attention it takes the recipe's OpenVINO form (artifacts["onnx-openvino"]:
    symmetric int8 activations, uint8 around Concats) when the bundle holds one whose end-to-end gates
    passed, else the uint8-activation graph ONNX Runtime runs. Why a form of its own:
      - OpenVINO's CPU plugin runs a MatMul of two activations (attention's QK^T and AV) in int8 only
        from signed symmetric int8; with uint8 activations those stay f32 (17 % of the full-size
        int8 UNet call);
      - the TensorRT twin (symmetric int8 everywhere) is not usable: OpenVINO 2026.4.1 computes
        signed int8 that passes through a Concat wrongly (a 6-node graph Concat -> Q -> DQ -> Conv is
        0.41 off ONNX Runtime relative to its largest output; the tiny test UNet 0.86, the default
        student's 0.19 against 0.11), and the UNet's skip connections are Concats. The OpenVINO form
        keeps those tensors uint8 (tests/test_quantize.py holds both graphs against ONNX Runtime).
    The runner's device names the form it runs. Each int8 graph checks itself at load: its error
    against the fp32 graph (rel. L2 on the spec's sample inputs, OpenVINO on both) must be within
    INT8_SLACK of the error `refocus quantize` recorded for ONNX Runtime on the same graph and inputs,
    which its LPIPS gates measured; a miss is a load error (dispatch skips it, visibly). Passes are
    remembered like the bf16 gate's.

Shapes: each call's input shapes get their own static compile (reshaped from the graph, which is
dynamic over the spec's profile), cached per runner; static CPU kernels measured ~2x faster than
the dynamic graph on the default student's UNet. The opt shapes are compiled at load, so a graph
OpenVINO cannot compile fails the load, not the first call. Compiled blobs are cached on disk
(OpenVINO's CACHE_DIR, under runtime.artifacts.cache_dir()), so later runs skip most of a compile.

Device: $REFOCUS_OPENVINO_DEVICE (CPU, GPU, NPU, ...; default CPU). Only the CPU is tested here.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from refocus_edge.runtime import artifacts
from refocus_edge.runtime.artifacts import ONNX, OPENVINO_INT8, TWIN_GATES
from refocus_edge.runtime.backends.base import Availability, Backend, BackendUnavailableError, Runner
from refocus_edge.runtime.backends.boundary import torch_facing
from refocus_edge.runtime.backends.threads import thread_budget
from refocus_edge.runtime.importable import importable

DEVICE_ENV = "REFOCUS_OPENVINO_DEVICE"
INSTALL = "pip install 'refocus-edge[openvino]'"
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT per precision (int8: int8_hint)
MAX_SHAPES = 4  # static compiles kept per runner (the sampler uses one or two shapes per component)
# An int8 graph's error against fp32 here may be this much of ONNX Runtime's on the same graph, plus
# INT8_FLOOR: int8 kernels round differently (measured within 1.15x on correct graphs), while the
# miscomputed twin was 2.3-11x.
INT8_SLACK, INT8_FLOOR = 1.5, 0.01
# Which int8 graph this backend runs; a change re-times dispatch (it enters the timing key).
INT8_FORM = ("openvino form (symmetric int8, uint8 around Concats) when gated, else uint8 activations; "
             "float parts at bf16 where the device lists BF16")


def device() -> str:
    return os.environ.get(DEVICE_ENV, "CPU").strip().upper() or "CPU"


@functools.lru_cache(maxsize=4)
def device_facts(name: str) -> dict:
    """What this OpenVINO sees of `name`: version, device model, capabilities and its default
    inference precision. All of it enters the dispatch timing key (through `versions`): a CPU whose
    default is bf16 times differently from one whose default is f32. Raises when it is absent."""
    import openvino as ov

    core = ov.Core()
    present = core.available_devices
    if not any(d == name or d.startswith(name + ".") for d in present):
        raise BackendUnavailableError(f"OpenVINO has no {name} device here (it sees {', '.join(present) or 'none'})")
    caps = [str(c) for c in core.get_property(name, "OPTIMIZATION_CAPABILITIES")]
    return {"openvino": ov.get_version().split("-")[0], "device": name, "int8_graphs": INT8_FORM,
            "device_name": str(core.get_property(name, "FULL_DEVICE_NAME")),
            "capabilities": " ".join(caps),
            "default_precision": core.get_property(name, "INFERENCE_PRECISION_HINT").to_string()}


class OpenVinoBackend(Backend):
    name = "openvino"
    artifact = ONNX
    priority = 2

    def availability(self) -> Availability:
        if not importable("openvino"):
            return Availability(False, f"package 'openvino' is not installed ({INSTALL})")
        try:
            facts = device_facts(device())
        except Exception as exc:  # a missing device, or a broken install: say which
            return Availability(False, f"{type(exc).__name__}: {exc}")
        bf16 = ", bf16" if self.supports("bf16") else " (no bf16 on this device)"
        return Availability(True, f"openvino {facts['openvino']}, {facts['device']} {facts['device_name']}, "
                                  f"fp32, int8{bf16}", facts)

    def supports(self, precision: str) -> bool:
        if precision == "bf16":  # a device capability, not a graph: ask the device
            try:
                return importable("openvino") and "BF16" in device_facts(device())["capabilities"].split()
            except Exception:
                return False
        # fp16 graphs would run with f32 arithmetic on CPUs without native fp16 (a fp16 label on
        # fp32 work); fp8 has no OpenVINO CPU kernels.
        return precision in HINTS

    def precisions(self, bundle) -> list[str]:
        have = super().precisions(bundle)
        if "fp32" in have and "bf16" not in have and self.supports("bf16"):
            have.append("bf16")  # derived from the fp32 graphs on this machine
        return have

    def gate_passed(self, bundle, precision: str, component: str) -> bool:
        if precision == "bf16":  # the graph it compiles is the fp32 one; the bf16 gate runs at load
            return bundle.gate_passed(ONNX, "fp32", component)
        if precision == "int8":
            kind, _ = int8_source(bundle, component)
            return kind == OPENVINO_INT8 or bundle.gate_passed(ONNX, "int8", component)
        return super().gate_passed(bundle, precision, component)

    def load(self, bundle, spec, precision: str) -> Runner:
        return torch_facing(self.load_arrays(bundle, spec, precision))

    def load_arrays(self, bundle, spec, precision: str) -> Runner:
        self.require()
        if not self.supports(precision):
            why = ("this device lists no BF16 in OPTIMIZATION_CAPABILITIES" if precision == "bf16"
                   else f"openvino runs fp32, bf16 and int8 here, not {precision}")
            raise BackendUnavailableError(f"{spec.name}: {why}")
        if precision == "int8":
            kind, form = int8_source(bundle, spec.name)
            path = bundle.artifact_path(kind, "int8", spec.name)
            runner = compiled_runner(path, spec, precision, form)
            expected = bundle.manifest.quantization.get("int8", {}).get("sample_rel_l2", {}).get(kind, {}).get(spec.name)
            if expected is not None:  # bundles quantized before session 25 hold no expectation
                check_int8(runner, lambda: compiled_runner(bundle.artifact_path(ONNX, "fp32", spec.name), spec, "fp32"),
                           spec, bundle.manifest.files.get(bundle.manifest.table(kind, "int8")[spec.name], str(path)),
                           float(expected))
            return runner
        table = precision if precision != "bf16" or "bf16" in bundle.precisions(ONNX) else "fp32"
        path = bundle.artifact_path(ONNX, table, spec.name)
        runner = compiled_runner(path, spec, precision)
        if precision == "bf16":
            # the fp32 reference is compiled only when no recorded pass exists (it doubled every bf16 load)
            check_against_fp32(runner, lambda: compiled_runner(path, spec, "fp32"), spec, bundle.manifest.files.get(
                bundle.manifest.table(ONNX, table)[spec.name], str(path)))
        return runner


def int8_source(bundle, component: str) -> tuple[str, str]:
    """(artifact kind, form) of the int8 graph this backend runs for `component`: the OpenVINO form
    when the bundle holds one for it whose end-to-end gates passed (module docstring: why), else the
    uint8-activation graph. Reads the manifest only."""
    if component in bundle.manifest.table(OPENVINO_INT8, "int8") and all(
            bundle.gate_passed(OPENVINO_INT8, "int8", g) for g in TWIN_GATES):
        return OPENVINO_INT8, "openvino form: symmetric int8, uint8 around Concats"
    return ONNX, "uint8 activations"


def int8_hint() -> str:
    """The inference precision of an int8 graph's float parts: bf16 where the device lists BF16."""
    try:
        return "bf16" if "BF16" in device_facts(device())["capabilities"].split() else "f32"
    except Exception:
        return "f32"


def compile_config(precision: str) -> dict:
    # One model cache folder per precision and hint: OpenVINO 2026.4's cache key leaves out
    # INFERENCE_PRECISION_HINT, so a bf16 compile of a graph already compiled at f32 in the same
    # folder imported the f32 blob and computed wrong results (max relative error 0.43 against a
    # fresh bf16 compile of the tiny image encoder on an AMX CPU; tests/test_backend_openvino.py).
    hint = int8_hint() if precision == "int8" else HINTS[precision]
    return {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": thread_budget(),
            "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(artifacts.cache_dir() / "openvino" / f"{precision}-{hint}")}


class _StaticCompiles:
    """One graph, compiled for each distinct set of input shapes it is called with."""

    def __init__(self, path, spec, precision: str):
        import openvino as ov

        self.ov, self.core, self.spec = ov, ov.Core(), spec
        self.model = self.core.read_model(str(path))
        self.config, self.dev = compile_config(precision), device()
        self.types = {n: self.model.input(n).get_element_type().to_dtype() for n in spec.input_names}
        self.requests: dict[tuple, object] = {}
        self.dynamic, self.static_failure = None, ""

    def request(self, shapes: tuple):
        if self.dynamic is not None:
            return self.dynamic
        if shapes not in self.requests:
            if len(self.requests) >= MAX_SHAPES:
                self.requests.pop(next(iter(self.requests)))  # the oldest shape goes
            model = self.model.clone()
            model.reshape({n: self.ov.PartialShape(list(s)) for n, s in zip(self.spec.input_names, shapes)})
            try:
                self.requests[shapes] = self.core.compile_model(model, self.dev, self.config).create_infer_request()
            except Exception as exc:
                # OpenVINO 2026.4's CPU plugin failed the static compile of int8 UNets whose embedding
                # Gemms were quantized (an empty edge after fusing a dequantize; graphs quantized since
                # session 24 keep those float) yet compiles the dynamic graph: run that one for every
                # shape, and say so in the runner's device.
                self.static_failure = _first_line(exc)
                self.dynamic = self.core.compile_model(self.model, self.dev, self.config).create_infer_request()
                return self.dynamic
        return self.requests[shapes]

    def __call__(self, feeds: dict) -> dict:
        names = self.spec.input_names
        arrays = {n: np.ascontiguousarray(np.asarray(feeds[n]).astype(self.types[n], copy=False)) for n in names}
        request = self.request(tuple(arrays[n].shape for n in names))
        result = request.infer(arrays)
        # copied: the request's output buffers are overwritten by its next call
        return {n: np.array(result[n], dtype=np.float32) for n in self.spec.output_names}


def compiled_runner(path, spec, precision: str, form: str = "") -> Runner:
    """`path` compiled by OpenVINO behind the Runner interface of `spec`, numpy arrays in and out;
    `form` (which int8 graph it is) goes into the runner's device."""
    try:
        run = _StaticCompiles(path, spec, precision)
        run.request(tuple(spec.input_shapes("opt")[n] for n in spec.input_names))
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(f"{spec.name}: OpenVINO could not compile {path.name} at {precision}: "
                                      f"{_first_line(exc)}") from None
    note = f" (dynamic shapes: static compile failed: {run.static_failure})" if run.dynamic is not None else ""
    form = f" ({form})" if form else ""
    return Runner(spec, run, f"openvino {run.dev} {precision}{form}{note}")


def _first_line(exc: Exception) -> str:
    """The message of an OpenVINO error without its C++ source locations ("Exception from
    src/...cpp:117:" lines), which say nothing to a user."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip() and not x.startswith("Exception from")]
    return " ".join(lines[-2:]) if lines else type(exc).__name__


# ------------------------------------------------------------------ the int8 load-time check
def check_int8(runner: Runner, make_reference: Callable[[], Runner], spec, graph_sha: str, expected: float) -> float:
    """Hold an int8 compile to ONNX Runtime's recorded error on the same graph (module docstring):
    rel. L2 of its outputs against the fp32 graph's (`make_reference()`, compiled only when no pass
    is recorded) on runtime.sample_error's inputs, the worst corner. Raises BackendUnavailableError
    naming both errors when it is over INT8_SLACK x expected + INT8_FLOOR."""
    from refocus_edge.runtime.sample_error import rel_l2, sample_feeds

    bound = INT8_SLACK * expected + INT8_FLOOR
    key = artifacts.derived_gate_key("openvino", "int8", graph_sha, spec, bound, device_facts(device()))
    record = artifacts.cache_dir() / "openvino" / "gates" / f"{spec.name}.int8.{key}.json"
    if (passed := _recalled(record, "rel_l2")) is not None:
        return passed
    reference, name, worst = make_reference(), spec.output_names[0], 0.0
    try:
        for feeds in sample_feeds(spec):
            err = rel_l2(runner(feeds)[name], reference(feeds)[name])
            if not err <= worst:  # NaN included
                worst = err
    finally:
        reference.close()
    if not worst <= bound:
        runner.close()
        raise BackendUnavailableError(
            f"{spec.name}: openvino int8 computes this graph differently from ONNX Runtime: rel. L2 to the fp32 "
            f"graph {worst:.3g}, ONNX Runtime's {expected:.3g} (bound {bound:.3g}); run int8 on onnxruntime, or "
            "another precision")
    _remember(record, {"rel_l2": worst, "expected": expected, "bound": bound})
    return worst


# ------------------------------------------------------------------ the bf16 load-time gate
def max_rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref|, the export gates' metric (export/parity.py), in numpy."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf")
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def _gate_record(graph_sha: str, spec) -> Path:
    key = artifacts.derived_gate_key("openvino", "bf16", graph_sha, spec, spec.tolerance("bf16"),
                                     device_facts(device()))
    return artifacts.cache_dir() / "openvino" / "gates" / f"{spec.name}.bf16.{key}.json"


def check_against_fp32(runner: Runner, make_reference: Callable[[], Runner], spec, graph_sha: str) -> float:
    """Gate a bf16 compile against the fp32 compile of the same (gated) graph (`make_reference()`, built
    only when needed), at the profile's min/opt/max shapes; a pass is recorded so that later loads on
    this machine skip the check and the fp32 compile.
    Raises BackendUnavailableError naming the error and the bound when it fails."""
    record = _gate_record(graph_sha, spec)
    if (passed := _recalled(record, "max_rel_error")) is not None:
        return passed
    reference = make_reference()
    rng, worst, where = np.random.default_rng(0), 0.0, ""
    seen = set()
    for corner in ("min", "opt", "max"):
        shapes = spec.input_shapes(corner)
        if tuple(shapes.items()) in seen:
            continue
        seen.add(tuple(shapes.items()))
        feeds = spec.sample_arrays(rng, corner)
        name = spec.output_names[0]
        err = max_rel_error(runner(feeds)[name], reference(feeds)[name])
        if not err <= worst:  # NaN included
            worst, where = err, f"{corner} shapes {dict(shapes)}"
    reference.close()
    bound = spec.tolerance("bf16")
    if not worst <= bound:
        runner.close()
        raise BackendUnavailableError(f"{spec.name}: openvino bf16 failed its parity gate: max_rel_error "
                                      f"{worst:.3g} > {bound:.3g} against the fp32 graph at {where}")
    _remember(record, {"max_rel_error": worst, "bound": bound, "at": where})
    return worst


def _recalled(record: Path, field: str) -> float | None:
    """A load-time check's remembered pass (its measured value), or None."""
    try:
        return float(json.loads(record.read_text())[field])
    except (OSError, ValueError, KeyError):
        return None


def _remember(record: Path, facts: dict) -> None:
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(facts))
    except OSError:  # a read-only cache only costs the check again next time
        pass


BACKEND = OpenVinoBackend()
