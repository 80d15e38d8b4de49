"""The per-component gate of an ExecuTorch program: the .pte run by `executorch.runtime` exactly as
the backend runs it (one item per call), against the PyTorch component. A program that fails to
load or run fails its gate (value inf, the error as the detail), so the export raises ParityError."""
from __future__ import annotations

import math

from refocus_edge.export.parity import GateResult, component_gate
from refocus_edge.runtime.artifacts import EXECUTORCH
from refocus_edge.runtime.backends.base import BackendUnavailableError
from refocus_edge.runtime.program_shapes import program_spec


def _failed(spec, variant, metric: str, threshold: float, what: str, exc: Exception) -> GateResult:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return GateResult(spec.name, EXECUTORCH, variant.name, metric, math.inf, threshold, f"{what}: {first}")


def program_gate(job, variant, spec, path) -> GateResult:
    from refocus_edge.runtime.backends.backend_executorch import program_runner

    int8 = variant.recipe == "int8"
    if int8:
        from refocus_edge.export.executorch.int8_gate import int8_budget

        metric, threshold = "lpips_alex_median_frame", int8_budget()[0]
    else:
        metric, threshold = "max_rel_error", spec.tolerance(variant.precision)
    try:
        runner = program_runner(path, spec, variant.name)
    except BackendUnavailableError as exc:
        return _failed(spec, variant, metric, threshold, "the program does not load", exc)
    try:
        if int8:
            from refocus_edge.export.executorch.int8_gate import int8_component_gate

            return int8_component_gate(job, variant, spec, runner)
        # At the profile's min/opt/max item counts (the working size is the program's own).
        gate = component_gate(program_spec(spec), EXECUTORCH, variant.precision, job.reference[spec.name], runner)
        gate.precision = variant.name
        return gate
    except Exception as exc:  # a program that loads but cannot run is a failed gate, not a crash
        return _failed(spec, variant, metric, threshold, "the program failed to run", exc)
    finally:
        runner.close()
