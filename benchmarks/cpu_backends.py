"""Per-component latency of the CPU backends on one bundle, interleaved, and what dispatch picks
(issue 21 items 2 and 3: the shipped edge config is the default student on the fastest gated
backend and precision of this machine, chosen by dispatch).

Every (backend, precision) that can run a component here is loaded once: torch fp32 (the
reference), onnxruntime at each gated precision it supports, openvino fp32, bf16 (where the CPU has
it) and int8. Then, per component, rounds: in each round every candidate runs one call on the same
spec sample inputs at the opt shapes, in a rotated order, so that a change in the machine's load
(2 shared cores) lands on all of them alike; median and min over the rounds after warm-up calls.
All runners are numpy-facing (the thin runtime's currency; torch converts at its boundary).

Dispatch: `load_runners(bundle, "auto")` with a fresh timing cache, exactly what `refocus run` and
`refocus backends --model` do, over every gated precision in the bundle; its per-component choice
and reason are recorded. Give the int8 bundle of `refocus quantize --recipe int8` (which also holds
the fp32 graphs) to have int8 compete.

    OMP_NUM_THREADS=1 python -m benchmarks.cpu_backends --model BUNDLE --rounds 9 \\
        --out benchmarks/results/openvino-tiny
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.recording import command_line, write_results


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def _load_all(bundle, name: str, backends: list[str]) -> tuple[dict, dict]:
    """(candidate -> runner, candidate -> why it was not loaded) for one component."""
    from refocus_edge.runtime.backends import get_backend
    from refocus_edge.runtime.dispatch import candidates

    spec, runners, skipped = bundle.specs[name], {}, {}
    for backend_name, prec in candidates(bundle, name):
        if backend_name not in backends:
            continue
        backend, key = get_backend(backend_name), f"{backend_name}/{prec}"
        state = backend.availability()
        if not state.available:
            skipped[key] = state.reason
            continue
        t0 = time.perf_counter()
        try:
            runners[key] = (backend.load_arrays(bundle, spec, prec), time.perf_counter() - t0)
        except Exception as exc:  # recorded, not fatal: the table says which and why
            skipped[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return runners, skipped


def measure(bundle, backends: list[str], rounds: int, warmup: int) -> dict:
    out = {}
    for name, spec in bundle.specs.items():
        runners, skipped = _load_all(bundle, name, backends)
        feeds = spec.sample_arrays(np.random.default_rng(0), "opt")
        keys = list(runners)
        for key in keys:
            for _ in range(warmup):
                runners[key][0](feeds)
        times = {k: [] for k in keys}
        for r in range(rounds):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotated: no fixed first or last
                t0 = time.perf_counter()
                runners[key][0](feeds)
                times[key].append((time.perf_counter() - t0) * 1000)
        out[name] = {"ms_median": {k: statistics.median(v) for k, v in times.items()},
                     "ms_min": {k: min(v) for k, v in times.items()},
                     "load_s": {k: runners[k][1] for k in keys},
                     "devices": {k: runners[k][0].device for k in keys}, "skipped": skipped}
        for runner, _ in runners.values():
            runner.close()
    return out


def dispatch_choice(bundle) -> list[dict]:
    """What auto dispatch picks per component, measured afresh (a temporary timing cache)."""
    from refocus_edge.runtime.dispatch import load_runners

    with tempfile.TemporaryDirectory() as cache:
        before = os.environ.get("REFOCUS_CACHE_DIR")
        os.environ["REFOCUS_CACHE_DIR"] = cache
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runners, choices = load_runners(bundle, "auto", None, arrays=True)
        finally:
            if before is None:
                os.environ.pop("REFOCUS_CACHE_DIR")
            else:
                os.environ["REFOCUS_CACHE_DIR"] = before
    for r in runners.values():
        r.close()
    return [{"component": c.component, "backend": c.backend, "precision": c.precision, "device": c.device,
             "reason": c.reason, "timings_ms": c.timings_ms} for c in choices] + \
        [{"warning": str(w.message)} for w in caught]


def report(res: dict) -> str:
    keys = list(dict.fromkeys(k for comp in res["components"].values() for k in comp["ms_median"]))
    lines = [f"# CPU backends per component: {res['bundle']}", "", f"Command: `{res['command']}`", "",
             f"Machine: {res['cpu']}, {res['threads']} thread(s); openvino {res['versions'].get('openvino', '-')}, "
             f"onnxruntime {res['versions'].get('onnxruntime', '-')}, torch {res['versions'].get('torch', '-')}",
             f"Load: start `{res['uptime_start']}`; end `{res['uptime_end']}`", "",
             f"Median ms of {res['rounds']} interleaved rounds (after {res['warmup']} warm-up calls), opt shapes:", "",
             "| component | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, comp in res["components"].items():
        cells = [f"{comp['ms_median'][k]:.1f}" if k in comp["ms_median"] else "-" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Dispatch (`--backend auto`, fresh timing cache, every gated precision):", "",
              "| component | picked | reason |", "|---|---|---|"]
    for c in res["dispatch"]:
        if "warning" in c:
            lines.append(f"| (warning) | | {c['warning']} |")
        else:
            lines.append(f"| {c['component']} | {c['backend']}/{c['precision']} | {c['reason']} |")
    skipped = {f"{n}: {k}": why for n, comp in res["components"].items() for k, why in comp["skipped"].items()}
    if skipped:
        lines += ["", "Not measured:", ""] + [f"- {k}: {v}" for k, v in skipped.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a bundle (an int8 one has int8 compete too)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "openvino"])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-dispatch", action="store_true", help="skip the dispatch run")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from refocus_edge.runtime.artifacts import hardware_facts
    from refocus_edge.runtime.backends import get_backend
    from refocus_edge.runtime.bundle import open_bundle

    bundle = open_bundle(args.model)
    res = {"command": command_line("cpu_backends", argv), "bundle": str(bundle.root),
           "cpu": hardware_facts().get("cpu_model", ""), "threads": torch.get_num_threads(),
           "versions": {n: v for b in args.backends for n, v in get_backend(b).availability().versions.items()},
           "openvino_facts": get_backend("openvino").availability().versions,
           "rounds": args.rounds, "warmup": args.warmup, "uptime_start": _uptime()}
    res["components"] = measure(bundle, args.backends, args.rounds, args.warmup)
    res["uptime_mid"] = _uptime()
    res["dispatch"] = [] if args.no_dispatch else dispatch_choice(bundle)
    res["uptime_end"] = _uptime()
    write_results(args.out, "cpu_backends", res, report(res))


if __name__ == "__main__":
    main()
