"""How a benchmark records what it measured: the command line that reproduces it, and its result
folder's JSON (everything) and Markdown (the table) files."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path


def command_line(module: str, argv=None) -> str:
    """`OMP_NUM_THREADS=N python -m benchmarks.<module> ARGS`, as it was run."""
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return prefix + f"python -m benchmarks.{module} " + shlex.join(argv if argv is not None else sys.argv[1:])


def write_results(out: Path | None, stem: str, res: dict, markdown: str) -> None:
    """`out/<stem>.json` and `out/<stem>.md` (nothing without `out`), then the table on stdout."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
        (out / f"{stem}.md").write_text(markdown)
    print(markdown)
