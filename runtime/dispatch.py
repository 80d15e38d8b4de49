"""Which backend runs each component.

Order of authority: the `--backend` flag, then $REFOCUS_BACKEND, then "auto".
An explicit backend is used for every component or the load fails with its
reason: no silent substitution. "auto" times every candidate (backend x
precision with an artifact in the bundle and a passed parity gate; torch is the
reference and always qualifies) on the spec's sample inputs, a few warm calls
each, once per machine: the timings are cached under a key of bundle contents +
backend versions + hardware (runtime/artifacts.py). A candidate that fails to
load is skipped with a visible warning and the next fastest is used.
"""
from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refocus_edge.runtime.artifacts import cache_dir, dispatch_key
from refocus_edge.runtime.publish import cache_entry_lock
from refocus_edge.runtime.backends import get_backend, registry
from refocus_edge.runtime.backends.base import BackendUnavailableError
from refocus_edge.runtime.errors import InvalidArgumentError

ENV_VAR = "REFOCUS_BACKEND"
WARM_CALLS, TIMED_CALLS = 2, 3


class BackendFallbackWarning(UserWarning):
    """A backend could not be loaded and a slower one is used instead."""


@dataclass
class Choice:
    component: str
    backend: str
    precision: str
    device: str
    reason: str
    timings_ms: dict = field(default_factory=dict)  # "backend/precision" -> ms, or an error string

    @property
    def note(self) -> str:
        """The line a run records for this choice (and `refocus run` logs as its backend line instead)."""
        return f"{self.component}: {self.backend} ({self.device}): {self.reason}"


def requested_backend(flag: str | None = None) -> str:
    name = flag or os.environ.get(ENV_VAR) or "auto"
    if name != "auto":
        get_backend(name)  # raises a one-line error for an unknown name
    return name


def candidates(bundle, component: str, precision: str | None = None) -> list[tuple[str, str]]:
    """(backend, precision) pairs that have an artifact for `component` and passed its gate."""
    out = []
    for name, backend in registry().items():
        if backend.artifact == "torch":
            if precision in (None, "fp32"):
                out.append((name, "fp32"))
            continue
        for prec in backend.precisions(bundle):
            if precision not in (None, prec):
                continue
            if backend.gate_passed(bundle, prec, component):
                out.append((name, prec))
    return out


def _time_runner(runner, spec, arrays: bool) -> float:
    if arrays:
        feeds = spec.sample_arrays(np.random.default_rng(0), "opt")
    else:
        import torch

        feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "opt")
    for _ in range(WARM_CALLS):
        runner(feeds)
    times = []
    for _ in range(TIMED_CALLS):
        t0 = time.perf_counter()
        runner(feeds)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _versions() -> dict:
    out = {}
    for name, backend in registry().items():
        state = backend.availability()
        out[name] = state.versions if state.available else "unavailable"
    return out


def _timing_cache_path(bundle) -> Path:
    return cache_dir() / "dispatch" / f"{dispatch_key(bundle.content_hash, _versions())}.json"


def _read_timings(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save(path, table) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two writers never share a temp file
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a read-only home must not stop a run
        warnings.warn(f"could not cache backend timings at {path}: {exc}", BackendFallbackWarning)


def load_runners(bundle, requested: str = "auto", precision: str | None = None,
                 components: list[str] | None = None, arrays: bool = False):
    """-> ({component: Runner}, [Choice]) for every component of `bundle` (or those named): runners of
    numpy arrays with `arrays` (the thin runtime), else of torch tensors. The timings are shared: a
    runner's currency changes only its boundary's conversions."""
    specs = bundle.specs

    def load(backend, spec, prec):
        return backend.load_arrays(bundle, spec, prec) if arrays else backend.load(bundle, spec, prec)

    names = components or list(specs)
    runners, choices = {}, []
    if requested != "auto":
        backend = get_backend(requested)
        backend.require()
        for name in names:
            prec = precision or ("fp32" if backend.artifact == "torch" else
                                 next(iter(backend.precisions(bundle)), "fp32"))
            if backend.artifact != "torch" and not backend.gate_passed(bundle, prec, name):
                raise BackendUnavailableError(
                    f"{name}: the bundle has no {backend.artifact} {prec} artifact that passed its parity gate")
            runner = load(backend, specs[name], prec)
            runners[name] = runner
            choices.append(Choice(name, requested, prec, runner.device, "requested explicitly"))
        return runners, choices

    cache_path = _timing_cache_path(bundle)
    # One measurer per bundle and machine: a second process waits, then reads the table.
    with cache_entry_lock(cache_path):
        table = _read_timings(cache_path)
        changed = False
        for name in names:
            spec = specs[name]
            cands = candidates(bundle, name, precision)
            if not cands:
                raise InvalidArgumentError(f"{name}: no backend can run it here (precision {precision or 'any'})")
            timings = table.setdefault(name, {})
            loaded = {}
            for backend_name, prec in cands:
                key = f"{backend_name}/{prec}"
                if key in timings:
                    continue
                backend = get_backend(backend_name)
                state = backend.availability()
                if not state.available:
                    timings[key] = f"unavailable: {state.reason}"
                    changed = True
                    continue
                try:
                    runner = load(backend, spec, prec)
                    timings[key] = _time_runner(runner, spec, arrays)
                    loaded[key] = runner
                except Exception as exc:  # any load/run failure: skip it, visibly
                    timings[key] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    warnings.warn(f"{name}: backend {key} skipped ({timings[key]})", BackendFallbackWarning)
                changed = True
            ranked = sorted((t, k) for k, t in timings.items() if isinstance(t, (int, float))
                            and tuple(k.split("/")) in cands)
            for rank, (ms, key) in enumerate(ranked):
                backend_name, prec = key.split("/")
                runner = loaded.get(key)
                if runner is None:
                    try:
                        runner = load(get_backend(backend_name), spec, prec)
                    except Exception as exc:
                        warnings.warn(f"{name}: backend {key} failed to load ({type(exc).__name__}: {exc}); "
                                      "falling back to the next fastest", BackendFallbackWarning)
                        continue
                others = ", ".join(f"{k} {t:.1f} ms" for t, k in ranked if k != key)
                reason = f"fastest measured ({ms:.1f} ms" + (f" vs {others})" if others else ")")
                if rank:
                    reason += f"; {ranked[0][1]} failed to load"
                runners[name] = runner
                choices.append(Choice(name, backend_name, prec, runner.device, reason, dict(timings)))
                break
            else:
                raise BackendUnavailableError(f"{name}: every backend failed ({timings})")
            for key, runner in loaded.items():
                if runners[name] is not runner:
                    runner.close()
        if changed:
            _save(cache_path, table)
    return runners, choices
