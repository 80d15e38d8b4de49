"""pytest-benchmark timings of every stage on every backend of a bundle.

Not part of the CI suite (pyproject's testpaths is tests/). Run:

    REFOCUS_BENCH_BUNDLE=out/bundle python -m pytest benchmarks/test_bench_backends.py \
        --benchmark-only --benchmark-json out/bench_backends.json

Bundle: $REFOCUS_BENCH_BUNDLE (write one with `refocus export onnx --model
refocus-tiny --out out/bundle --precision fp32 fp16`); without it every benchmark
is skipped with that reason. Runs: torch fp32 plus every available backend and
precision the bundle has artifacts for (benchmarks.backends.plan_bench), each
loaded with its backend named explicitly. One benchmark group per stage, so
pytest-benchmark's table puts the backends of a stage side by side. Rounds:
$REFOCUS_BENCH_ROUNDS per stage (default 5), $REFOCUS_BENCH_E2E_ROUNDS end to
end (default 2), after one warm-up round. The stage callables are the ones
`python -m benchmarks.backends` times; drift and per-backend peak memory need
fresh processes and LPIPS, so only that command reports them.
"""
from __future__ import annotations

import os

import pytest

from refocus_edge.bench.backends import END_TO_END, BackendBenchConfig, Job, load_for_job, plan_bench, stage_callables, stage_what

STAGE_ROUNDS = int(os.environ.get("REFOCUS_BENCH_ROUNDS", "5"))
E2E_ROUNDS = int(os.environ.get("REFOCUS_BENCH_E2E_ROUNDS", "2"))
BUNDLE = os.environ.get("REFOCUS_BENCH_BUNDLE")
SEED = 0


def _plan():
    """The plan, or the reason there is none (parametrization happens at collection time)."""
    from refocus_edge.runtime.errors import RefocusError

    if not BUNDLE:
        return None, ("set REFOCUS_BENCH_BUNDLE to a bundle (refocus export onnx --model refocus-tiny "
                      "--out out/bundle --precision fp32 fp16)")
    try:
        return plan_bench(BackendBenchConfig(bundle=BUNDLE, baseline=False)), None
    except RefocusError as exc:
        return None, f"REFOCUS_BENCH_BUNDLE={BUNDLE}: {exc}"


PLAN, WHY_NOT = _plan()


def _params(end_to_end: bool):
    if PLAN is None:
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=WHY_NOT), id="no-bundle")]
    stages = [s for s in stage_what(PLAN.decode_chunks) if (s in END_TO_END) == end_to_end]
    return [pytest.param(job.key, stage, id=f"{job.key}-{stage}") for job in PLAN.jobs for stage in stages]


_loaded: dict = {}


def _stages(key: str) -> tuple[object, dict]:
    """(refocuser, stage callables) of one run, loaded once per session."""
    if key not in _loaded:
        backend, precision = key.split("/")
        try:
            refocuser = load_for_job(PLAN.model, Job("backend", backend, precision), PLAN.is_bundle)
        except Exception as exc:  # a backend that fails to load skips its benchmarks, with the reason
            _loaded[key] = exc
        else:
            _loaded[key] = (refocuser, stage_callables(refocuser, PLAN.size, PLAN.position, SEED, PLAN.steps))
    if isinstance(_loaded[key], Exception):
        pytest.skip(f"{key} cannot be loaded: {type(_loaded[key]).__name__}: {_loaded[key]}")
    return _loaded[key]


def _run(benchmark, key: str, stage: str, rounds: int):
    from refocus_edge.runtime.fast_attention import single_token_cross_attention

    refocuser, fns = _stages(key)
    benchmark.group = stage
    benchmark.extra_info.update(run=key, what=stage_what(PLAN.decode_chunks)[stage], bundle=str(PLAN.model),
                                size=list(PLAN.size), steps=PLAN.steps,
                                devices=sorted({c.device for c in refocuser.choices}))
    # As in benchmarks.backends: the shortcut every exported UNet carries (no-op for backend adapters).
    with single_token_cross_attention(refocuser.unet):
        out = benchmark.pedantic(fns[stage], rounds=rounds, warmup_rounds=1, iterations=1)
    assert out is not None


@pytest.mark.parametrize("key,stage", _params(end_to_end=False))
def test_stage(benchmark, key, stage):
    _run(benchmark, key, stage, STAGE_ROUNDS)


@pytest.mark.parametrize("key,stage", _params(end_to_end=True))
def test_end_to_end(benchmark, key, stage):
    _run(benchmark, key, stage, E2E_ROUNDS)
