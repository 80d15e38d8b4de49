"""Write a bundle atomically: everything goes into a hidden sibling folder, the
manifest (with a sha256 per file) is written last, and only then is the folder
renamed into place (Manifest.write, runtime/manifest.py, writes it). An interrupted or failed export leaves no half bundle and
keeps an earlier bundle at the same path intact."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from refocus_edge.runtime.errors import OutputExistsError


@contextmanager
def staged_bundle(out: Path, force: bool):
    """Yield a staging folder; on success it replaces `out`, on any error it is removed."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError("already exists; pass --force to replace it", out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError("exists and is not a folder", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)
