"""Thin-lens focus geometry for 9-position focal stacks.

Everything is expressed in *diopters* (1 / metres): a thin lens focused at
``f`` diopters images a point at ``d`` diopters with a circle of confusion
whose diameter is proportional to ``|d - f|`` (for a fixed aperture and
focal length).  Working in diopters therefore makes blur linear.

Focus positions are numbered ``0 .. num_positions - 1``; index 0 is the
*near* end (``near_diopters``, 20 D = 5 cm by default, which corresponds to
iPhone ``lensPosition`` 0.0 in the learn2refocus capture) and the last index
is the *far* end (``far_diopters``, 0 D = infinity).  Planes are spaced
linearly in diopters.

The blur radius in pixels is::

    r = |scene_diopters - focus_diopters| / (near - far) * max_blur_fraction * width

i.e. a point at one end of the range, seen with focus at the other end, is
blurred into a disk whose radius is ``max_blur_fraction`` of the image width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LensConfig", "focus_planes", "blur_radius_px"]


@dataclass(frozen=True)
class LensConfig:
    """Immutable description of the simulated lens / focus sweep.

    Attributes:
        num_positions: number of focus positions in a stack (default 9).
        near_diopters: focus distance of position 0 in diopters (20 D = 5 cm).
        far_diopters: focus distance of the last position (0 D = infinity).
        max_blur_fraction: blur radius, as a fraction of the image width, of
            a point at one end of the diopter range when focused at the other.
    """

    num_positions: int = 9
    near_diopters: float = 20.0
    far_diopters: float = 0.0
    max_blur_fraction: float = 0.05

    def __post_init__(self) -> None:
        if int(self.num_positions) != self.num_positions or self.num_positions < 2:
            raise ValueError(f"num_positions must be an integer >= 2, got {self.num_positions!r}")
        if not self.near_diopters > self.far_diopters:
            raise ValueError(
                "near_diopters must be larger than far_diopters "
                f"(got near={self.near_diopters}, far={self.far_diopters})"
            )
        if self.far_diopters < 0:
            raise ValueError(f"far_diopters must be >= 0, got {self.far_diopters}")
        if not self.max_blur_fraction >= 0:
            raise ValueError(f"max_blur_fraction must be >= 0, got {self.max_blur_fraction}")

    @property
    def diopter_range(self) -> float:
        """``near_diopters - far_diopters`` (always > 0)."""
        return float(self.near_diopters - self.far_diopters)


def focus_planes(cfg: LensConfig = LensConfig()) -> np.ndarray:
    """Focus distance of every position in diopters, shape ``[num_positions]``.

    Index 0 is ``cfg.near_diopters``, the last index ``cfg.far_diopters``,
    linearly spaced in between (float64).
    """
    return np.linspace(cfg.near_diopters, cfg.far_diopters, cfg.num_positions, dtype=np.float64)


def blur_radius_px(scene_diopters, focus_diopters, width: int, cfg: LensConfig = LensConfig()):
    """Circle-of-confusion radius in pixels (broadcasts over numpy arrays).

    Args:
        scene_diopters: depth of the scene point(s) in diopters.
        focus_diopters: focus distance(s) in diopters.
        width: image width in pixels (the blur scales with it).
        cfg: lens configuration.

    Returns:
        ``|scene - focus| / (near - far) * max_blur_fraction * width`` as a
        Python float for scalar inputs, else a float64 array.
    """
    diff = np.abs(np.asarray(scene_diopters, dtype=np.float64) - np.asarray(focus_diopters, dtype=np.float64))
    r = diff / cfg.diopter_range * cfg.max_blur_fraction * float(width)
    return float(r) if np.ndim(r) == 0 else r
