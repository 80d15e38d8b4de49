"""Write a bundle atomically: everything goes into a hidden sibling folder, the manifest (with a
sha256 per file; Manifest.write in runtime/manifest.py) is written last, and only then is the
folder published (runtime/publish.py). An interrupted or failed export leaves no half bundle and
keeps an earlier bundle at the same path intact; two exports to one path cannot interleave."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from refocus_edge.runtime.errors import OutputExistsError
from refocus_edge.runtime.publish import output_lock, publishing, recover


@contextmanager
def staged_bundle(out: Path, force: bool):
    """Yield a staging folder; on success it replaces `out` at once, on any error it is removed
    (runtime/publish.py: one writer per bundle, all or nothing at every instant)."""
    out = Path(out)
    with output_lock(out):
        recover(out)
        if out.exists() and not out.is_dir():
            raise OutputExistsError("exists and is not a folder", out)
        if out.exists() and not force:
            raise OutputExistsError("already exists; pass --force to replace it", out)
        with publishing(out) as stage:
            yield stage
