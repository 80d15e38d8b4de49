"""Synthetic focal-stack datasets with fixed seed splits.

Splits (:data:`SYNTHETIC_SPLITS`) map a dataset index ``i`` to a scene seed:

* ``"train"``:   seed = i,              i in [0, 1_000_000)
* ``"heldout"``: seed = 10_000_000 + i, i in [0, 256)  -- never used for training

The ranges are disjoint by construction; keep them fixed so that held-out
numbers stay comparable across runs.

:class:`SyntheticFocalStacks` renders on the fly; :func:`render_cache` renders
a split once into a uint8 ``.npy`` file (``[count, 9, H, W, 3]``) with sidecar
files for depth (``<stem>.depth.npy``, float16 ``[count, H, W]``) and metadata
(``<stem>.json``) which :class:`CachedFocalStacks` reads back via memory
mapping.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .lens import LensConfig
from .render import render_layers
from .scenes import make_scene

__all__ = [
    "SeedRange",
    "SYNTHETIC_SPLITS",
    "split_seed",
    "render_stack",
    "SyntheticFocalStacks",
    "render_cache",
    "CachedFocalStacks",
]


@dataclass(frozen=True)
class SeedRange:
    """Seeds ``start, start + 1, ..., start + count - 1``."""

    start: int
    count: int

    def seed(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} outside [0, {self.count})")
        return self.start + int(index)

    def __contains__(self, seed: int) -> bool:
        return self.start <= seed < self.start + self.count

    @property
    def stop(self) -> int:
        return self.start + self.count


SYNTHETIC_SPLITS: dict[str, SeedRange] = {
    "train": SeedRange(start=0, count=1_000_000),
    "heldout": SeedRange(start=10_000_000, count=256),
}


def split_seed(split: str, index: int) -> int:
    """Scene seed of item ``index`` of a split."""
    try:
        rng = SYNTHETIC_SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SYNTHETIC_SPLITS)}") from None
    return rng.seed(index)


def render_stack(seed: int, size: tuple[int, int] = (128, 128), cfg: LensConfig = LensConfig()):
    """``(frames [9,H,W,3] float32 in [0,1], depth [H,W] float32 diopters)`` for a seed."""
    scene = make_scene(seed, size, cfg)
    return render_layers(scene.layers, cfg), scene.depth_diopters


def _to_item(frames_hwc: np.ndarray, seed: Optional[int], depth: Optional[np.ndarray]) -> dict:
    f = np.asarray(frames_hwc)
    if f.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(f.transpose(0, 3, 1, 2))).float().div_(255.0)
    else:
        t = torch.from_numpy(np.ascontiguousarray(f.transpose(0, 3, 1, 2), dtype=np.float32))
    item = {"frames": t}
    if depth is not None:
        item["depth"] = torch.from_numpy(np.asarray(depth, dtype=np.float32).copy())
    if seed is not None:
        item["seed"] = int(seed)
    return item


def _item_index(index, length: int) -> int:
    """A dataset index (negative ones count from the end) checked against ``length``; IndexError outside."""
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index


class SyntheticFocalStacks(Dataset):
    """On-the-fly rendered focal stacks.

    Items: ``{"frames": float32 [9, 3, H, W] in [0, 1], "depth": float32 [H, W]
    diopters, "seed": int}``.  Item ``i`` always uses seed
    ``SYNTHETIC_SPLITS[split].start + i`` (deterministic, worker-safe).

    Args:
        split: ``"train"`` or ``"heldout"``.
        size: ``(H, W)``.
        length: number of items (default: the whole split); must not exceed it.
        cfg: lens configuration.
    """

    def __init__(
        self,
        split: str = "train",
        size: tuple[int, int] = (128, 128),
        length: Optional[int] = None,
        cfg: LensConfig = LensConfig(),
    ) -> None:
        if split not in SYNTHETIC_SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SYNTHETIC_SPLITS)}")
        self.split = split
        self.size = (int(size[0]), int(size[1]))
        self.cfg = cfg
        total = SYNTHETIC_SPLITS[split].count
        self.length = total if length is None else int(length)
        if not 0 <= self.length <= total:
            raise ValueError(f"length {length} outside [0, {total}] for split {split!r}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        index = _item_index(index, self.length)
        seed = split_seed(self.split, index)
        frames, depth = render_stack(seed, self.size, self.cfg)
        return _to_item(frames, seed, depth)


def _sidecars(path: Path) -> tuple[Path, Path]:
    base = path.with_suffix("") if path.suffix == ".npy" else path
    return base.parent / (base.name + ".depth.npy"), base.parent / (base.name + ".json")


def render_cache(
    split: str,
    count: int,
    size: tuple[int, int] = (128, 128),
    path: Union[str, os.PathLike] = "focalstacks_cache.npy",
    cfg: LensConfig = LensConfig(),
    progress: bool = True,
) -> Path:
    """Render the first ``count`` items of ``split`` into ``path``.

    Writes a uint8 ``.npy`` of shape ``[count, num_positions, H, W, 3]``
    (written through a memory map, then renamed into place, so a crash never
    leaves a truncated file under ``path``), plus ``<stem>.depth.npy``
    (float16 ``[count, H, W]``) and ``<stem>.json`` (split, seeds, size, lens).

    Returns:
        ``Path(path)``.
    """
    from tqdm.auto import tqdm

    if split not in SYNTHETIC_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SYNTHETIC_SPLITS)}")
    count = int(count)
    if not 0 < count <= SYNTHETIC_SPLITS[split].count:
        raise ValueError(f"count must be in [1, {SYNTHETIC_SPLITS[split].count}], got {count}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    H, W = int(size[0]), int(size[1])
    depth_path, meta_path = _sidecars(path)
    tmp = path.parent / (path.name + ".partial.npy")
    tmp_d = path.parent / (depth_path.name + ".partial.npy")
    frames_mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, cfg.num_positions, H, W, 3))
    depth_mm = np.lib.format.open_memmap(tmp_d, mode="w+", dtype=np.float16, shape=(count, H, W))
    try:
        for i in tqdm(range(count), desc=f"render {split}", unit="stack", disable=not progress):
            frames, depth = render_stack(split_seed(split, i), (H, W), cfg)
            frames_mm[i] = np.round(frames * 255.0).astype(np.uint8)
            depth_mm[i] = depth
        frames_mm.flush()
        depth_mm.flush()
    finally:
        del frames_mm, depth_mm
    os.replace(tmp, path)
    os.replace(tmp_d, depth_path)
    meta = {
        "split": split,
        "seed_start": SYNTHETIC_SPLITS[split].start,
        "count": count,
        "size": [H, W],
        "lens": asdict(cfg),
        "frames_layout": "N,focus,H,W,RGB uint8 (focus index 0 = near)",
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return path


class CachedFocalStacks(Dataset):
    """Focal stacks read from a :func:`render_cache` file (or any uint8
    ``[N, F, H, W, 3]`` ``.npy``) through ``np.load(mmap_mode="r")``.

    Items: ``{"frames": float32 [F, 3, H, W] in [0, 1]}`` plus ``"depth"``
    when the ``<stem>.depth.npy`` sidecar exists and ``"seed"`` when the
    ``<stem>.json`` metadata exists.
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        self.frames = np.load(self.path, mmap_mode="r")
        if self.frames.ndim != 5 or self.frames.shape[-1] != 3:
            raise ValueError(f"{self.path}: expected an [N, F, H, W, 3] array, got shape {self.frames.shape}")
        depth_path, meta_path = _sidecars(self.path)
        self.depth = np.load(depth_path, mmap_mode="r") if depth_path.exists() else None
        if self.depth is not None and self.depth.shape != (self.frames.shape[0],) + self.frames.shape[2:4]:
            self.depth = None
        self.meta = json.loads(meta_path.read_text()) if meta_path.exists() else None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __getitem__(self, index: int) -> dict:
        index = _item_index(index, len(self))
        seed = None if self.meta is None else int(self.meta["seed_start"]) + index
        depth = None if self.depth is None else self.depth[index]
        return _to_item(self.frames[index], seed, depth)
