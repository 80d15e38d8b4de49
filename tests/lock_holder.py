"""Another process holding an output folder's writer lock, for the concurrent-writer tests."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def lock_held_elsewhere(dest: Path, seconds: float = 60):
    """Yield the pid of a fresh process that holds `dest`'s lock for `seconds` (killed on exit)."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from refocus_edge.runtime.publish import output_lock
        with output_lock({str(dest)!r}):
            print("locked", flush=True)
            time.sleep({seconds})
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
