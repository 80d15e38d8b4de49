"""One call from a focal stack to what every depth-of-field feature starts from: the all-in-focus
image, a depth map in focus-index units and its confidence.

`refocus edit` (reading a stack folder) and `refocus run` (its viewer layers, straight after
sampling) both go through :func:`analyse_stack`, so the all-in-focus.png and depth.png they write
for the same frames are the same images.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

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
    """
    # Imported here, not at module import: callers that only build pages stay light.
    from .all_in_focus import all_in_focus
    from .depth import depth_from_focus

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
