"""What every backend provides.

A backend turns one component's artifact (a PyTorch module, an ONNX graph, a
TensorRT engine, a Core ML package) into a `Runner`: a callable taking the
spec's inputs by name and returning the spec's outputs by name. `load` gives a
runner of torch tensors (the PyTorch sampler, export and quantization use it),
`load_arrays` one of numpy arrays (the thin runtime: runtime/array_sampler.py).
Backends whose own currency is numpy (ONNX Runtime, Core ML) implement
`load_arrays` and adapt to torch at their boundary for `load`; the torch and
TensorRT backends do the reverse (runtime/backends/boundary.py). The adapters in
runtime/backends/adapters.py put the PyTorch call signatures back on top of
runners of either kind, so the sampling loop never knows which backend it runs.

A backend module `runtime/backends/backend_<name>.py` registers itself by
defining `BACKEND`, an instance of a `Backend` subclass; nothing else lists them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from refocus_edge.runtime.errors import RefocusError


class BackendUnavailableError(RefocusError):
    """A backend cannot run here (package, hardware or artifact missing); the message says why."""


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str  # why not, or what it will run on
    versions: dict = field(default_factory=dict)


class Runner:
    """One loaded component. `device` says what it actually runs on (e.g. the ORT provider)."""

    def __init__(self, spec, fn: Callable[[dict], dict], device: str, check_inputs: bool = True):
        self.spec, self._fn, self.device, self._check = spec, fn, device, check_inputs

    def __call__(self, feeds: dict) -> dict:
        if self._check:
            self.spec.check_inputs(feeds)
        return self._fn(feeds)

    def close(self) -> None:
        self._fn = None


class Backend:
    name: str = ""
    artifact: str = ""  # the bundle artifact kind it loads: "torch", "onnx", "coreml"
    priority: int = 100  # tie-break when timings are unknown: lower first

    def availability(self) -> Availability:
        """Cheap check (no model loading); heavy packages are only looked up, not imported."""
        raise NotImplementedError

    def supports(self, precision: str) -> bool:
        """Whether this backend can run a bundle precision at all (bf16 graphs have no CPU
        kernels in ONNX Runtime, for one); dispatch skips the pairs it cannot."""
        return True

    def precisions(self, bundle) -> list[str]:
        """The precisions this backend can run `bundle`'s artifacts at here: by default the bundle's
        own tables of its artifact kind that it supports. A backend that derives a precision from
        another table on the machine (OpenVINO's bf16 from the fp32 graphs) adds it."""
        return [p for p in bundle.precisions(self.artifact) if self.supports(p)]

    def gate_passed(self, bundle, precision: str, component: str) -> bool:
        """Whether `component`'s artifact at `precision` passed its parity gate: the export's or
        quantization's record in the manifest. A derived precision answers for the artifact it is
        built from and checks itself when it loads."""
        return bundle.gate_passed(self.artifact, precision, component)

    def load(self, bundle, spec, precision: str) -> Runner:
        """Load `spec`'s artifact from `bundle` (a runtime.bundle.Bundle): a runner of torch tensors."""
        raise NotImplementedError

    def load_arrays(self, bundle, spec, precision: str) -> Runner:
        """The same component as a runner of numpy arrays (runtime/backends/boundary.py converts
        where the backend computes on torch tensors)."""
        raise NotImplementedError

    def require(self) -> Availability:
        state = self.availability()
        if not state.available:
            raise BackendUnavailableError(f"backend '{self.name}' is unavailable here: {state.reason}")
        return state
