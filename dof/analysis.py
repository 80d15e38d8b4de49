"""One call from a focal stack to what every depth-of-field feature starts from: the all-in-focus
image, a depth map in focus-index units and its confidence.

`refocus edit` (reading a stack folder) and `refocus run` (its viewer layers, straight after
sampling) both go through :func:`analyse_stack`, so the all_in_focus.png and depth.png they write
for the same frames are the same images.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from refocus_edge.runtime.errors import InvalidArgumentError

from .all_in_focus import all_in_focus
from .bokeh import NUM_POSITIONS
from .depth import depth_from_focus

__all__ = ["StackAnalysis", "analyse_stack"]


@dataclass
class StackAnalysis:
    """Result of :func:`analyse_stack`.

    Attributes:
        aif: [3, H, W] all-in-focus image, float32 in [0, 1].
        depth: [H, W] depth in focus-index units (0 = near plane .. 8 = far plane); the edge-aware
            hole-filled map when depth from focus made one, else the raw refined index.
        confidence: [H, W] depth confidence in [0, 1].
        depth_source: "filled" or "index", which of the two ``depth`` is.
        timings: seconds per stage ("all_in_focus", "depth").
    """

    aif: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    depth_source: str
    timings: dict


@torch.no_grad()
def analyse_stack(frames: torch.Tensor) -> StackAnalysis:
    """All-in-focus fusion and depth from focus of a stack [9, 3, H, W] (float in [0, 1], near first).

    The fusion is computed once and handed to depth from focus, which uses it as its edge guide
    (the focus volume is the expensive part of both stages).

    Raises InvalidArgumentError for anything but a finite floating-point [9, 3, H, W] stack with
    H, W >= 2 (depth is reported in units of this stack's 9 focus positions).
    """
    _check_stack(frames)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    fused = all_in_focus(frames)
    timings["all_in_focus"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = depth_from_focus(frames, aif=fused)
    timings["depth"] = time.perf_counter() - t0
    filled = res.filled
    return StackAnalysis(
        aif=torch.as_tensor(fused.image).float().clamp(0, 1),
        depth=torch.as_tensor(filled if filled is not None else res.index).float(),
        confidence=torch.as_tensor(res.confidence).float().clamp(0, 1),
        depth_source="filled" if filled is not None else "index",
        timings=timings,
    )


def _check_stack(frames) -> None:
    # Checked here, with the project's typed errors, rather than left to the focus measure's
    # ValueError: a NaN frame would otherwise come out as a NaN depth map that fails much later.
    if not isinstance(frames, torch.Tensor):
        raise InvalidArgumentError(f"frames must be a torch tensor [{NUM_POSITIONS}, 3, H, W], "
                                   f"got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[0] != NUM_POSITIONS or frames.shape[1] != 3 \
            or frames.shape[2] < 2 or frames.shape[3] < 2:
        raise InvalidArgumentError(f"frames must be [{NUM_POSITIONS}, 3, H, W] with H, W >= 2 "
                                   f"(near focus first), got {list(frames.shape)}")
    if not frames.is_floating_point():
        raise InvalidArgumentError(f"frames must be floating point in [0, 1], got {frames.dtype}; "
                                   "divide uint8 frames by 255")
    if not bool(torch.isfinite(frames).all()):
        raise InvalidArgumentError("frames hold NaN or infinite values; a focal stack must be finite")
