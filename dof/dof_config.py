"""The depth-of-field renderer's settings and the project's lens, without torch: `refocus run` and
`refocus edit` build and check them before any work (and a run without torch still can).
The renderer itself is :mod:`refocus_edge.dof.bokeh`, which re-exports these names."""
from __future__ import annotations

import math
from dataclasses import dataclass

from refocus_edge.runtime.errors import InvalidArgumentError

__all__ = ["NUM_POSITIONS", "LENS_MAX_BLUR_FRACTION", "lens_radius_per_step", "DofConfig"]

#: Focus positions of a stack: index 0 (near, 20 D) .. 8 (far, 0 D).
NUM_POSITIONS = 9
#: The project's synthetic lens: blur radius, as a fraction of the width, across the whole 20 D range.
LENS_MAX_BLUR_FRACTION = 0.05


def lens_radius_per_step(width: int, max_blur_fraction: float = LENS_MAX_BLUR_FRACTION,
                         num_positions: int = NUM_POSITIONS) -> float:
    """Blur radius (px) per focus-index step at strength 1 for an image `width` px wide.

    ``max_blur_fraction * width * |delta D| / range`` with one step = range / (num_positions - 1),
    i.e. ``0.05 * width / 8`` for the default lens (3.2 px per step at 512 px).
    """
    return float(max_blur_fraction) * float(width) / float(num_positions - 1)


@dataclass(frozen=True)
class DofConfig:
    """Rendering parameters of :func:`render_dof`.

    Attributes:
        radius_per_step: blur radius in pixels per focus-index step at strength 1; None = the project's
            lens, ``max_blur_fraction * W / 8`` (see :func:`lens_radius_per_step`).
        max_blur_fraction: lens parameter used when radius_per_step is None (0.05, as the renderer).
        slice_radius_step: largest blur-radius difference (px) between neighbouring depth slices;
            smaller = smoother blur gradients on slanted surfaces, more slices.
        max_slices: cap on the number of depth slices (each costs one FFT blur).
        linear_light: blur sRGB-decoded (linear) values; False blurs the stored values, as the
            synthetic renderer does.
        highlight_threshold: sRGB value (mean over channels) above which pixels count as clipped
            highlights.
        highlight_gain: factor applied to a fully saturated pixel before blurring (ramping up from 1
            at the threshold); 1 disables the boost.
        highlight_max_size: diameter of the largest saturated spot (fraction of the shorter image side)
            still treated as a light and boosted; larger or elongated clipped areas are bright
            surfaces and are left alone.
        flip_foreground: rotate asymmetric apertures by 180 degrees in front of the focus plane.
        lowres_min_radius: slices blurred by at least 2x this radius (px) are blurred on a 2x (4x at
            4x the radius) downsampled canvas, with the kernel still >= this radius there; the blur
            hides the lost resolution and the FFTs get 4-16x cheaper. None = always full resolution.
    """

    radius_per_step: float | None = None
    max_blur_fraction: float = LENS_MAX_BLUR_FRACTION
    slice_radius_step: float = 1.0
    max_slices: int = 16
    linear_light: bool = True
    highlight_threshold: float = 0.95
    highlight_gain: float = 4.0
    highlight_max_size: float = 0.04
    flip_foreground: bool = True
    lowres_min_radius: float | None = 8.0

    def __post_init__(self) -> None:
        if self.radius_per_step is not None and not (_finite(self.radius_per_step) and self.radius_per_step >= 0):
            raise InvalidArgumentError(f"radius_per_step must be a number >= 0 or None, got {self.radius_per_step!r}")
        if not (_finite(self.max_blur_fraction) and self.max_blur_fraction >= 0):
            raise InvalidArgumentError(f"max_blur_fraction must be >= 0, got {self.max_blur_fraction!r}")
        if not (_finite(self.slice_radius_step) and self.slice_radius_step > 0):
            raise InvalidArgumentError(f"slice_radius_step must be > 0 px, got {self.slice_radius_step!r}")
        if isinstance(self.max_slices, bool) or not isinstance(self.max_slices, int) or self.max_slices < 3:
            raise InvalidArgumentError(f"max_slices must be an integer >= 3, got {self.max_slices!r}")
        if not (_finite(self.highlight_threshold) and 0 < self.highlight_threshold < 1):
            raise InvalidArgumentError(f"highlight_threshold must be in (0, 1), got {self.highlight_threshold!r}")
        if not (_finite(self.highlight_gain) and self.highlight_gain >= 1):
            raise InvalidArgumentError(f"highlight_gain must be >= 1, got {self.highlight_gain!r}")
        if not (_finite(self.highlight_max_size) and 0 < self.highlight_max_size <= 1):
            raise InvalidArgumentError(f"highlight_max_size must be in (0, 1], got {self.highlight_max_size!r}")
        if self.lowres_min_radius is not None and not (_finite(self.lowres_min_radius) and self.lowres_min_radius >= 2):
            raise InvalidArgumentError(f"lowres_min_radius must be >= 2 px or None, got {self.lowres_min_radius!r}")

    def step_radius(self, width: int) -> float:
        """Pixels of blur per focus-index step at strength 1 for this width."""
        if self.radius_per_step is not None:
            return float(self.radius_per_step)
        return lens_radius_per_step(width, self.max_blur_fraction)


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
