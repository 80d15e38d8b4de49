"""The one place that names artifacts and derives cache keys.

Everything that must invalidate a cached artifact goes into its key: the source
model's hash, the precision recipe, the shape profile, the tool version and, for
hardware-specific artifacts (TensorRT engines, dispatch timings), the hardware.
A key is a short sha256 of a canonical JSON of those facts, so adding a fact
changes every key and nothing stale can match by accident.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = 1
PRECISIONS = ("fp32", "fp16")
# Artifact kinds: the manifest's artifacts[kind][precision][component] tables.
ONNX = "onnx"
COREML = "coreml"
# ExecuTorch programs (.pte), static-shaped, lowered to XNNPACK (export/targets/target_executorch.py).
EXECUTORCH = "executorch"
# Gate kind (no artifact) of the Core ML conversion-ready rewrites, checked against the originals in fp32.
COREML_REWRITE = "coreml-rewrite"
# The TensorRT-ready int8 twin graphs `refocus quantize` writes (int8 QDQ, zero point 0).
TENSORRT_TWIN = "onnx-tensorrt"
# The OpenVINO form of the int8 graphs of components with attention: symmetric int8 activations
# (OpenVINO's CPU plugin runs attention's activation x activation MatMuls in int8 only from those)
# but uint8 around every Concat (OpenVINO 2026.4 computes signed int8 through a Concat wrongly, so
# it cannot run the twin); runtime/backends/backend_openvino.py.
OPENVINO_INT8 = "onnx-openvino"
# The gates (end-to-end drift, median and worst frame) a twin or OpenVINO form must have passed to run.
TWIN_GATES = ("end_to_end", "end_to_end_worst")


def _digest(facts: dict) -> str:
    canonical = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_hash(folder: Path) -> str:
    """Hash of every weight and config file of a diffusers-layout model folder.

    File names and contents both count, so a retrained or re-configured model
    (or a swapped UNet override) gets a new hash.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not (rel.endswith((".json", ".safetensors")) and not rel.startswith(".")):
            continue
        if rel.startswith(("README", "samples/")):
            continue
        h.update(rel.encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return h.hexdigest()


# ------------------------------------------------------------------ names
def artifact_path(kind: str, component: str, precision: str, extension: str) -> str:
    """Bundle-relative path of a component's artifact of `kind` (an export target's) at `precision`."""
    return f"{kind}/{precision}/{component}{extension}"


def onnx_artifact(component: str, precision: str) -> str:
    """Bundle-relative path of a component's ONNX graph."""
    return artifact_path(ONNX, component, precision, ".onnx")


def onnx_external_data(component: str) -> str:
    """File name (beside the graph) of the weights of a graph over the 2 GB protobuf limit."""
    return f"{component}.onnx.data"


def tensorrt_twin_artifact(component: str, recipe: str) -> str:
    """A component's TensorRT-ready QDQ graph (symmetric activations) of quantization `recipe`."""
    return f"{TENSORRT_TWIN}/{recipe}/{component}.onnx"


def openvino_int8_artifact(component: str, recipe: str) -> str:
    """A component's OpenVINO-form QDQ graph of quantization `recipe` (see OPENVINO_INT8)."""
    return f"{OPENVINO_INT8}/{recipe}/{component}.onnx"


def sensitivity_folder(recipe: str) -> str:
    """Where `refocus quantize` leaves its sensitivity table for `recipe` inside the bundle."""
    return f"quantization/{recipe}"


def coreml_artifact(component: str, precision: str) -> str:
    """A component's Core ML package; `precision` is the recipe name (fp16, fp16-p6, ...)."""
    return artifact_path(COREML, component, precision, ".mlpackage")


def executorch_artifact(component: str, precision: str) -> str:
    """A component's ExecuTorch program; `precision` is the variant (fp32, fp16, int8)."""
    return artifact_path(EXECUTORCH, component, precision, ".pte")


def coreml_chunk_folder(component: str, precision: str) -> str:
    """The folder holding the chunk packages of a component split at block boundaries."""
    return f"coreml/{precision}/{component}"


def coreml_chunk_artifact(component: str, precision: str, index: int) -> str:
    """Chunk `index` (from 0) of a split component."""
    return f"{coreml_chunk_folder(component, precision)}/chunk_{index + 1}.mlpackage"


def profile_facts(spec) -> dict:
    return {"inputs": {t.name: list(t.dims) for t in spec.inputs},
            "profile": {k: list(v) for k, v in sorted(spec.profile.items())}}


def engine_key(model_hash_: str, component: str, precision: str, spec, trt_version: str,
               compute_capability: str) -> str:
    """Cache key of a TensorRT engine: a change in any input means a rebuild, never a stale load."""
    return _digest({"kind": "tensorrt-engine", "model": model_hash_, "component": component,
                    "precision": precision, "shapes": profile_facts(spec), "tensorrt": trt_version,
                    "sm": compute_capability})


def engine_file(component: str, precision: str, key: str) -> str:
    return f"{component}.{precision}.{key}.engine"


def timing_cache_file(trt_version: str, compute_capability: str) -> str:
    return f"timing.trt{trt_version}.sm{compute_capability}.cache"


def hardware_facts() -> dict:
    """What makes a timing measured on this machine invalid on another."""
    facts = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
             "cpus": os.cpu_count(), "system": platform.system()}
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        facts["cpu_model"] = model
    except OSError:
        pass
    return facts


def dispatch_key(bundle_hash: str, versions: dict, hardware: dict | None = None) -> str:
    """Cache key of measured backend timings: bundle content + backend versions + hardware."""
    return _digest({"kind": "dispatch", "bundle": bundle_hash, "versions": versions,
                    "hardware": hardware if hardware is not None else hardware_facts()})


def derived_gate_key(backend: str, precision: str, graph_sha256: str, spec, tolerance: float,
                     versions: dict) -> str:
    """Cache key of a passed load-time parity gate of a precision a backend derives from a graph on
    the machine (OpenVINO's bf16 from the fp32 graph): a new graph, bound, shape profile, backend
    version or CPU checks again."""
    return _digest({"kind": "derived-gate", "backend": backend, "precision": precision, "graph": graph_sha256,
                    "component": spec.name, "tolerance": tolerance, "shapes": profile_facts(spec),
                    "versions": versions, "hardware": hardware_facts()})


def cache_dir() -> Path:
    """Machine-local cache (engines, timings): $REFOCUS_CACHE_DIR or ~/.cache/refocus-edge."""
    env = os.environ.get("REFOCUS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "refocus-edge"
