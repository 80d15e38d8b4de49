"""Core ML: runs a bundle's Core ML packages (coreml/<recipe>/<component>.mlpackage, or a
folder of chunk packages run in sequence), macOS only.

Core ML's runtime is part of macOS, so on any other system this backend is
unavailable whatever is installed (coremltools imports on Linux but cannot
predict). Compute units: $REFOCUS_COREML_COMPUTE_UNITS (ALL, CPU_ONLY,
CPU_AND_GPU, CPU_AND_NE), default ALL, letting Core ML place each layer on the
Neural Engine, GPU or CPU. Feeds are numpy arrays in the dtype each package
input declares (float32, or float16 for packages exported with fp16 I/O);
outputs come back as float32 numpy arrays named as the spec names them (`load_arrays`,
the thin runtime), or as CPU torch tensors through the torch boundary (`load`).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform

import numpy as np

from refocus_edge.runtime.artifacts import COREML
from refocus_edge.runtime.backends.base import Availability, Backend, BackendUnavailableError, Runner
from refocus_edge.runtime.backends.boundary import torch_facing
from refocus_edge.runtime.backends.chain import ChainRunner
from refocus_edge.runtime.bundle import BundleError, resolve_inside
from refocus_edge.runtime.importable import importable
from refocus_edge.runtime.errors import InvalidArgumentError

MACOS_ONLY = "Core ML runs only on macOS"
UNITS_ENV = "REFOCUS_COREML_COMPUTE_UNITS"
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
# Core ML multi-array element types (ArrayFeatureType.ArrayDataType names) -> numpy.
_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "DOUBLE": np.float64, "INT32": np.int32}


def on_macos() -> bool:
    return platform.system() == "Darwin"


def compute_units() -> str:
    units = os.environ.get(UNITS_ENV, "ALL").strip().upper()
    if units not in COMPUTE_UNITS:
        raise InvalidArgumentError(f"${UNITS_ENV}={units!r} is not one of {', '.join(COMPUTE_UNITS)}")
    return units


def numpy_type(data_type_name: str):
    """numpy dtype of a Core ML multi-array type name; float32 for anything else (Core ML converts)."""
    return _NP_TYPES.get(data_type_name, np.float32)


def _input_types(spec, ct) -> dict:
    """Input name -> numpy dtype, read from the package's model description."""
    enum = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    out = {}
    for item in spec.description.input:
        name = enum.Name(item.type.multiArrayType.dataType) if item.type.HasField("multiArrayType") else ""
        out[item.name] = numpy_type(name)
    return out


class CoreMLBackend(Backend):
    name = "coreml"
    artifact = COREML
    priority = 3

    def availability(self) -> Availability:
        if not on_macos():
            return Availability(False, f"{MACOS_ONLY} (this is {platform.system() or 'an unknown system'})")
        if not importable("coremltools"):
            return Availability(False, "package 'coremltools' is not installed (pip install coremltools)")
        try:
            units = compute_units()
        except InvalidArgumentError as exc:
            return Availability(False, str(exc))
        version = importlib.metadata.version("coremltools")
        return Availability(True, f"coremltools {version}, macOS {platform.mac_ver()[0]}, compute units {units}",
                            {"coremltools": version, "macos": platform.mac_ver()[0], "compute_units": units})

    def load(self, bundle, spec, precision: str) -> Runner:
        return torch_facing(self.load_arrays(bundle, spec, precision))

    def load_arrays(self, bundle, spec, precision: str) -> Runner:
        if not on_macos():
            raise BackendUnavailableError(f"{spec.name}: {MACOS_ONLY}, this machine runs "
                                          f"{platform.system() or 'another system'}; use the onnxruntime "
                                          "or tensorrt backend")
        self.require()
        import coremltools as ct

        bundle.artifact_path(COREML, precision, spec.name)  # checks every file of it, chunks included
        units = compute_units()
        packages = package_table(bundle, precision, spec)
        pieces = [_PackageRunner(ct, resolve_inside(bundle.root, p["path"]), units) for p in packages]
        try:
            run = ChainRunner(pieces, spec.output_names)
        except ValueError as exc:
            raise BundleError(f"{spec.name}: its Core ML packages do not fit together ({exc}); "
                              "re-export the bundle", bundle.root) from None
        label = f"coreml {units} {precision}" + (f", {len(pieces)} chunks" if len(pieces) > 1 else "")
        return Runner(spec, run, label)


def package_table(bundle, precision: str, spec) -> list[dict]:
    """The packages that make up `spec`'s component, in call order, from the manifest.

    One entry for a whole component; several for a UNet split at block boundaries,
    each with the named tensors it reads and writes (the chunk interface)."""
    entry = bundle.manifest.coreml.get(precision, {}).get(spec.name)
    if not entry or not entry.get("packages"):
        return [{"path": bundle.manifest.table(COREML, precision)[spec.name]}]
    return entry["packages"]


class _PackageRunner:
    """One package: feeds by name (cast to the package's declared types, shapes checked) -> outputs."""

    def __init__(self, ct, path, units: str):
        self.path = path
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units))
        spec = self.model.get_spec()
        self.types = _input_types(spec, ct)
        self.shapes = {i.name: tuple(int(d) for d in i.type.multiArrayType.shape) for i in spec.description.input}
        self.input_names = list(self.types)
        self.output_names = [o.name for o in spec.description.output]

    def __call__(self, feeds):
        for name, shape in self.shapes.items():
            got = tuple(feeds[name].shape)
            if got != shape:
                # Core ML packages have static shapes: say which export would fit this call.
                raise InvalidArgumentError(f"{self.path.name}: input '{name}' has shape {list(got)}, the package "
                                           f"was built for {list(shape)}; export with --resolution matching the "
                                           "photo's working size")
        arrays = {k: np.ascontiguousarray(np.asarray(feeds[k]).astype(self.types[k], copy=False))
                  for k in self.input_names}
        result = self.model.predict(arrays)
        return {n: np.asarray(result[n], dtype=np.float32) for n in self.output_names}


BACKEND = CoreMLBackend()
