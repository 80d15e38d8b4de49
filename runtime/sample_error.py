"""The sample inputs and the error measure shared by a quantized graph's record (`refocus quantize`
writes ONNX Runtime's error on them) and a backend's load-time check of the same graph on its own
kernels (runtime/backends/backend_openvino.py): both sides must feed the very same arrays."""
from __future__ import annotations

import numpy as np

CORNERS = ("min", "opt", "max")


def sample_feeds(spec) -> list[dict]:
    """The spec's sample inputs at each distinct profile corner, each from its own seeded generator
    (so a caller that skips a corner still gets the same arrays for the others)."""
    feeds, seen = [], set()
    for corner in CORNERS:
        shapes = tuple(spec.input_shapes(corner).items())
        if shapes in seen:
            continue
        seen.add(shapes)
        feeds.append(spec.sample_arrays(np.random.default_rng(0), corner))
    return feeds


def rel_l2(got, ref) -> float:
    """||got - ref|| / ||ref|| in float64 (inf when the shapes differ, NaN stays NaN)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf")
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
