"""Fixtures of the pytest-benchmark timings (benchmarks/test_bench_latency.py).

$REFOCUS_BENCH_MODEL names the model (a shipped name or a folder; default
refocus-tiny). A model that cannot be loaded skips every benchmark with the
reason, so that `pytest benchmarks/` never fails for want of weights.
"""
from __future__ import annotations

import os

import pytest

DEFAULT_BENCH_MODEL = "refocus-tiny"


@pytest.fixture(scope="session")
def bench_model_name() -> str:
    return os.environ.get("REFOCUS_BENCH_MODEL", DEFAULT_BENCH_MODEL)


@pytest.fixture(scope="session")
def bench_refocuser(bench_model_name):
    from refocus_edge.runtime.errors import RefocusError
    from refocus_edge.runtime.loading import load_refocuser

    try:
        return load_refocuser(bench_model_name)
    except RefocusError as exc:
        pytest.skip(f"benchmark model {bench_model_name!r} cannot be loaded ({exc}); set REFOCUS_BENCH_MODEL "
                    "to a shipped model name or a model folder")


@pytest.fixture(scope="session")
def bench_stages(bench_refocuser) -> dict:
    """name -> (fn, context factory), inputs prepared once (benchmarks.latency.stage_callables)."""
    from benchmarks.latency import stage_callables

    return stage_callables(bench_refocuser)
