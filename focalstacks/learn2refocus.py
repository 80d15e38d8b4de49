"""Loader for the real learn2refocus focal-stack dataset.

Expected layout (scene folders may sit at any depth below the root)::

    <root>/.../FSK_<name>/.../focal_position_0000_frame_0000.jpg
    <root>/.../FSK_<name>/.../focal_position_0001_frame_0000.jpg
    ...
    <root>/.../FSK_<name>/.../focal_position_0008_frame_0000.jpg

Focus position 0 is the near end (iPhone lens position 0.0), 8 the far end,
matching :mod:`focalstacks.lens`.  Scenes missing any position are skipped
with a warning.  Folders named ``FSK_*`` nested inside another scene folder
belong to that outer scene.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

__all__ = ["Learn2RefocusStacks", "Learn2RefocusLayoutError", "find_scenes", "NUM_POSITIONS"]

NUM_POSITIONS = 9
_FRAME_RE = re.compile(r"^focal_position_(\d{4})_frame_0000\.jpe?g$", re.IGNORECASE)
_LAYOUT = (
    "<root>/**/FSK_*/**/focal_position_000{0..8}_frame_0000.jpg "
    "(scene folders named FSK_* anywhere below the root, each holding the 9 focus positions)"
)


class Learn2RefocusLayoutError(FileNotFoundError):
    """No usable learn2refocus scene was found under the given root."""


def _scene_frames(scene_dir: Path) -> dict[int, Path]:
    frames: dict[int, Path] = {}
    for dirpath, dirnames, filenames in os.walk(scene_dir):
        dirnames.sort()
        for fn in sorted(filenames):
            m = _FRAME_RE.match(fn)
            if m:
                frames.setdefault(int(m.group(1)), Path(dirpath) / fn)
    return frames


def find_scenes(root: Union[str, os.PathLike]) -> tuple[list[tuple[str, list[Path]]], list[tuple[str, list[int]]]]:
    """Scan ``root``.

    Returns:
        ``(complete, incomplete)``: ``complete`` is a sorted list of
        ``(relative scene path, [9 frame paths ordered by position])``;
        ``incomplete`` lists ``(relative scene path, missing positions)``.
    """
    root = Path(root)
    complete, incomplete = [], []
    if not root.is_dir():
        return complete, incomplete
    scene_dirs = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        keep = []
        for d in dirnames:
            if d.startswith("FSK_"):
                scene_dirs.append(Path(dirpath) / d)  # do not descend: nested FSK_* belong to it
            else:
                keep.append(d)
        dirnames[:] = keep
    if root.name.startswith("FSK_"):
        scene_dirs = [root]
    for sd in sorted(scene_dirs):
        rel = sd.relative_to(root).as_posix() if sd != root else "."
        frames = _scene_frames(sd)
        missing = [p for p in range(NUM_POSITIONS) if p not in frames]
        if missing:
            incomplete.append((rel, missing))
        else:
            complete.append((rel, [frames[p] for p in range(NUM_POSITIONS)]))
    return complete, incomplete


def _load_frame(path: Path, size: Optional[tuple[int, int]]) -> np.ndarray:
    """Load as uint8 HxWx3; centre-crop to the target aspect, LANCZOS resize to ``size=(H, W)``."""
    with Image.open(path) as im:
        if size is not None:
            # fast JPEG DCT downscaling, keeping >= 2x the target resolution
            im.draft("RGB", (2 * size[1], 2 * size[0]))
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        if size is not None:
            th, tw = int(size[0]), int(size[1])
            w, h = im.size
            if w * th > h * tw:  # too wide -> crop width
                cw, ch = h * tw / th, float(h)
            else:
                cw, ch = float(w), w * th / tw
            left, top = (w - cw) / 2.0, (h - ch) / 2.0
            im = im.resize((tw, th), Image.Resampling.LANCZOS, box=(left, top, left + cw, top + ch))
        return np.asarray(im, dtype=np.uint8)


class Learn2RefocusStacks(Dataset):
    """Real 9-position focal stacks from a learn2refocus dataset root.

    Items: ``{"frames": float32 [9, 3, H, W] in [0, 1] (index 0 = near),
    "scene": scene folder path relative to the root}``.

    Args:
        root: dataset root (searched recursively for ``FSK_*`` folders).
        size: ``(H, W)`` output size (centre crop to that aspect + LANCZOS
            resize) or ``None`` for the native resolution (frames of one scene
            are then resized to the size of its position-0 frame if needed).

    Raises:
        Learn2RefocusLayoutError (a FileNotFoundError) when the root holds no
        complete scene.
    """

    def __init__(self, root: Union[str, os.PathLike], size: Optional[tuple[int, int]] = (128, 128)) -> None:
        self.root = Path(root)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        complete, incomplete = find_scenes(self.root)
        if incomplete:
            listing = "; ".join(f"{rel} (missing positions {miss})" for rel, miss in incomplete)
            warnings.warn(
                f"learn2refocus: skipping {len(incomplete)} incomplete scene(s) under {self.root}: {listing}",
                stacklevel=2,
            )
        if not complete:
            what = "does not exist" if not self.root.is_dir() else "contains no complete scene"
            raise Learn2RefocusLayoutError(
                f"learn2refocus root {str(self.root)!r} {what}; expected layout: {_LAYOUT}"
            )
        self.scenes = complete
        self.skipped = incomplete

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict:
        rel, paths = self.scenes[index]
        frames = [_load_frame(p, self.size) for p in paths]
        if self.size is None:
            h, w = frames[0].shape[:2]
            frames = [
                f if f.shape[:2] == (h, w)
                else np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.LANCZOS))
                for f in frames
            ]
        arr = np.stack(frames).transpose(0, 3, 1, 2)
        return {"frames": torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0), "scene": rel}
