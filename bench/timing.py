"""Wall-clock and memory measurement shared by `refocus bench` and the recorded benchmarks."""
from __future__ import annotations

import resource
import statistics
import time


def timed(fn, repeats: int, warmup: int) -> tuple[dict, object]:
    """Median/min/max seconds of `repeats` calls after `warmup` untimed ones, and the last output."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": repeats}, out


def peak_rss_mib() -> float:
    """Process-wide RSS high-water mark since the process started (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
