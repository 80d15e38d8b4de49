"""Benchmark stages that may need most of the machine's memory run in child processes watched from
the parent: the child's resident memory (VmRSS) is sampled every 0.2 s and the child is killed past
a limit or a timeout, so the machine (24 GB, shared) never goes into OOM, and the stage it reached,
its peak and its time are recorded either way. A child reports each stage as one JSON line on
stdout (`stage`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def stage(name: str, **facts) -> None:
    """One JSON line per stage on stdout, read by the watching parent, with this process's peak RSS."""
    from refocus_edge.bench.timing import peak_rss_mib

    print(json.dumps({"stage": name, "peak_rss_mib": round(peak_rss_mib()), **facts}), flush=True)


def watch(module: str, argv: list[str], limit_mib: float, timeout_s: float, log: Path) -> dict:
    """Run `python -m module argv` as a child, sampling its RSS; kill it past the limit or the
    timeout. Its stderr goes to `log` (a pipe nobody reads could fill and stall it)."""
    t0 = time.perf_counter()
    with open(log, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", module, *argv],
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    stages: list[dict] = []

    def read() -> None:  # a thread: the child's stage lines, while this one samples its memory
        for line in proc.stdout:
            if line.startswith("{"):
                stages.append(json.loads(line))
                print(line.strip(), flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak, killed = 0.0, ""
    while proc.poll() is None:
        peak = max(peak, rss_mib(proc.pid))
        if peak > limit_mib:
            proc.kill()
            killed = f"killed at {peak / 1024:.1f} GiB resident (limit {limit_mib / 1024:.0f} GiB)"
        elif time.perf_counter() - t0 > timeout_s:
            proc.kill()
            killed = f"killed after {timeout_s:.0f} s (timeout)"
        time.sleep(0.2)
    reader.join(timeout=10)
    err = log.read_text(errors="replace")
    failure = "" if proc.returncode == 0 or killed else (err.strip().splitlines() or ["?"])[-1][:500]
    return {"stages": stages, "peak_rss_mib_sampled": round(peak), "returncode": proc.returncode,
            "killed": killed, "error": failure, "wall_s": round(time.perf_counter() - t0, 1)}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return str(os.getloadavg())
