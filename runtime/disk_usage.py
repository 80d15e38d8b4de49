"""Bytes on disk of files and folders (bundles, Core ML packages, graphs with external data)."""
from __future__ import annotations

from pathlib import Path

MIB = 2 ** 20


def disk_bytes(*paths) -> int:
    """Total size of the files among `paths`, folders counted recursively; each file counts once
    even when paths overlap, and a missing path counts 0."""
    files = set()
    for path in map(Path, paths):
        if path.is_file():
            files.add(path.resolve())
        elif path.is_dir():
            files.update(p.resolve() for p in path.rglob("*") if p.is_file())
    return sum(f.stat().st_size for f in files)


def disk_mib(*paths) -> float:
    return disk_bytes(*paths) / MIB
