"""Where distillation's input photos come from.

Distillation needs inputs, not ground truth: each sample is one frame of a
focal stack at its focal position. Three sources, named by one string:

  "synthetic"       the project's renderer, training split (never the held-out one);
  PATH.npy          a rendered training cache (training/train_tiny.py data);
  DIR               a learn2refocus dataset root (FSK_*/.../focal_position_000k_frame_0000.jpg).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from refocus_edge.runtime.errors import InvalidArgumentError


class FocalStackSource:
    """Indexable focal stacks: item i -> float32 [9, 3, H, W] in [0, 1]."""

    def __init__(self, spec: str, size: tuple[int, int]):
        self.spec, self.size = str(spec), (int(size[0]), int(size[1]))  # size = (W, H)
        w, h = self.size
        path = Path(self.spec).expanduser()
        if self.spec == "synthetic":
            from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

            self._data = SyntheticFocalStacks("train", size=(h, w))
            self.kind = "synthetic focal stacks (training split, rendered on the fly)"
            self._get = lambda i: self._data[i]["frames"]
        elif path.suffix == ".npy":
            if not path.is_file():
                raise InvalidArgumentError(f"{path}: no such focal-stack cache; render one with "
                                           "`python -m training.train_tiny data`")
            cache = np.load(path, mmap_mode="r")
            if cache.ndim != 5 or cache.shape[1] != 9 or cache.shape[-1] != 3:
                raise InvalidArgumentError(f"{path}: expected uint8 [N, 9, H, W, 3], got {cache.shape}")
            if cache.shape[2:4] != (h, w):
                raise InvalidArgumentError(f"{path}: stacks are {cache.shape[3]}x{cache.shape[2]}, "
                                           f"the teacher works at {w}x{h}")
            self._data = cache
            self.kind = f"rendered focal-stack cache {path} ({len(cache)} stacks)"
            self._get = lambda i: torch.from_numpy(np.array(self._data[i])).permute(0, 3, 1, 2).float() / 255
        elif path.is_dir():
            from refocus_edge.focalstacks.learn2refocus import Learn2RefocusStacks, Learn2RefocusLayoutError

            try:
                self._data = Learn2RefocusStacks(path, size=(h, w))
            except Learn2RefocusLayoutError as exc:
                raise InvalidArgumentError(str(exc)) from None
            self.kind = f"learn2refocus dataset {path} ({len(self._data)} scenes)"
            self._get = lambda i: self._data[i]["frames"]
        else:
            raise InvalidArgumentError(f"--data {self.spec!r}: expected 'synthetic', a .npy focal-stack "
                                       "cache or a learn2refocus dataset folder")

    def __len__(self) -> int:
        return len(self._data)

    def frames(self, index: int) -> torch.Tensor:
        return self._get(int(index) % len(self))

    def input_image(self, index: int, position: int) -> torch.Tensor:
        """[1, 3, H, W] in [-1, 1]: the frame at `position` of stack `index`, as the sampler takes it."""
        return self.frames(index)[position:position + 1] * 2 - 1


def larger_size_data(spec: str) -> str:
    """The source of stacks at a larger training size (--sizes): a stack cache (.npy) holds one size
    only, so there the synthetic renderer's training split (the same scenes at the same indices); a
    dataset folder or "synthetic" is read at any size."""
    return "synthetic" if str(spec).endswith(".npy") else spec


def check_larger_size(size: tuple[int, int], working: tuple[int, int], factor: int) -> None:
    """A --sizes size must be latent-aligned and hold a working-size crop (each draw is one)."""
    w, h = size
    if w % factor or h % factor or w < working[0] or h < working[1]:
        raise InvalidArgumentError(f"--sizes {w}x{h}: sides must be multiples of {factor} and at least the "
                                   f"working size {working[0]}x{working[1]} (its stacks are cut to that size)")
