"""pytest-benchmark timings: every latency stage and the end-to-end samplers.

Not part of the CI suite (pyproject's testpaths is tests/). Run:

    python -m pytest benchmarks/ --benchmark-only --benchmark-json out/bench.json

Model: $REFOCUS_BENCH_MODEL (shipped name or folder, default refocus-tiny), at its
working size, default position and step count; every benchmark is skipped, with
the reason, when it cannot be loaded. Rounds: $REFOCUS_BENCH_ROUNDS per stage
(default 5) and $REFOCUS_BENCH_E2E_ROUNDS end to end (default 2), each after one
warm-up round. Rounds are fixed (pedantic) rather than calibrated because one
call of a full-size model takes tens of seconds on CPU.
The stage callables are the ones `python -m benchmarks.latency` times.
"""
from __future__ import annotations

import os

import pytest

from benchmarks.latency import END_TO_END, STAGES
from refocus_edge.bench.models import working_size

STAGE_ROUNDS = int(os.environ.get("REFOCUS_BENCH_ROUNDS", "5"))
E2E_ROUNDS = int(os.environ.get("REFOCUS_BENCH_E2E_ROUNDS", "2"))


def _run(benchmark, bench_stages, bench_refocuser, name: str, rounds: int, group: str):
    fn, context = bench_stages[name]
    benchmark.group = group
    cfg = bench_refocuser.config
    benchmark.extra_info.update(model=str(bench_refocuser.source), what=STAGES[name],
                                steps=cfg.num_inference_steps, size=list(working_size(bench_refocuser)))
    with context():
        out = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
    assert out is not None


@pytest.mark.parametrize("name", [n for n in STAGES if n not in END_TO_END])
def test_stage(benchmark, bench_stages, bench_refocuser, name):
    _run(benchmark, bench_stages, bench_refocuser, name, STAGE_ROUNDS, "stage")


@pytest.mark.parametrize("name", END_TO_END)
def test_end_to_end(benchmark, bench_stages, bench_refocuser, name):
    _run(benchmark, bench_stages, bench_refocuser, name, E2E_ROUNDS, "end to end")
