"""The depth colour map shared by every depth image and legend (`refocus edit`, `refocus run`).

One map, near (focus index 0) warm yellow to far (index 8) cool blue, so a depth.png, the viewers'
depth views and their legends all read the same way. numpy only: the page builders use the legend
without importing torch.
"""
from __future__ import annotations

import numpy as np

from refocus_edge.runtime.errors import InvalidArgumentError

__all__ = ["DEPTH_COLOURS", "colorize_depth", "legend_gradient"]

#: Focus positions of a stack (as refocus_edge.dof.bokeh.NUM_POSITIONS; repeated so this module stays torch-free).
_NUM_POSITIONS = 9
#: Depth colour map anchors, near (index 0) to far (index 8): warm to cool.
DEPTH_COLOURS = np.array(
    [(252, 232, 100), (250, 145, 45), (214, 56, 64), (124, 40, 140), (40, 62, 170)], dtype=np.float32)


def colorize_depth(index, num_positions: int = _NUM_POSITIONS) -> np.ndarray:
    """Focus-index map [H, W] -> uint8 [H, W, 3]: near (0) warm yellow .. far (last) cool blue.

    Values outside 0..num_positions - 1 (infinities included) take the end colours; NaN is refused, as
    it has no place on the scale (a NaN cast to an integer index gives an arbitrary colour).
    """
    if isinstance(num_positions, bool) or not isinstance(num_positions, int) or num_positions < 2:
        raise InvalidArgumentError(f"num_positions must be an integer >= 2, got {num_positions!r}")
    index = np.asarray(index, dtype=np.float32)
    if np.isnan(index).any():
        raise InvalidArgumentError("depth map holds NaN values, which have no colour on the near..far "
                                   "scale; compute it from a finite stack (refocus_edge.dof.analysis.analyse_stack)")
    t = np.clip(index / float(num_positions - 1), 0.0, 1.0)
    pos = t * (len(DEPTH_COLOURS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(DEPTH_COLOURS) - 2)
    frac = (pos - lo)[..., None]
    rgb = DEPTH_COLOURS[lo] * (1 - frac) + DEPTH_COLOURS[lo + 1] * frac
    return (rgb + 0.5).astype(np.uint8)


def legend_gradient() -> str:
    """CSS ``linear-gradient`` left (near) to right (far) through the map's anchors, for a legend bar.

    The anchors are evenly spaced in the map, so an evenly spaced CSS gradient reproduces it exactly.
    """
    n = len(DEPTH_COLOURS)
    stops = ", ".join(f"rgb({int(r)}, {int(g)}, {int(b)}) {100.0 * i / (n - 1):g}%"
                      for i, (r, g, b) in enumerate(DEPTH_COLOURS))
    return f"linear-gradient(to right, {stops})"
