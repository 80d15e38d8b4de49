"""The depth-of-field views `refocus run` adds to its output: all-in-focus image, depth map and the
viewer's precomputed re-renders, from the stack the sampler just made.

Same analysis and preview grid as `refocus edit` (:func:`refocus_edge.dof.analysis.analyse_stack`,
:func:`refocus_edge.dof.preview.precompute_previews`), so the run's all_in_focus.png and depth.png are the
images `refocus edit` computes from the same folder. The frames are analysed as 8-bit values, i.e. as
they are written and as `refocus edit` reads them back.

Cost (``python -m benchmarks.dof_viewer``, recorded in ``benchmarks/results/dof-viewer/``): the
analysis runs at the stack's full size, the grid at ``viewer_max_side`` at most, so for large stacks
the grid's cost stays flat while the analysis grows with the pixel count.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.dof.viewer_page import DofOutputs, check_viewer_params

from .aperture import parse_shape
from .colormap import colorize_depth
from .dof_config import NUM_POSITIONS, DofConfig

__all__ = ["StackViewsConfig", "StackViews", "stack_views"]


@dataclass(frozen=True)
class StackViewsConfig:
    """How the run's depth-of-field views are made.

    Attributes:
        dof: renderer parameters of the previews (as `refocus edit`'s default).
        shape: aperture of the previews.
        strength: initial position of the viewer's strength slider (1 = the stack's own lens).
        viewer_max_side: longest side of the previews (px); the grid's cost grows with its square.
        viewer_quality: JPEG quality of the previews.
    """

    dof: DofConfig = field(default_factory=DofConfig)
    shape: str = "circle"
    strength: float = 1.0
    viewer_max_side: int = 320
    viewer_quality: int = 82

    def __post_init__(self) -> None:
        # Checked when the config is made, i.e. before a run samples anything.
        if not isinstance(self.dof, DofConfig):
            raise InvalidArgumentError(f"dof must be a DofConfig, got {type(self.dof).__name__}")
        try:
            strength = float(self.strength)
        except (TypeError, ValueError):
            strength = math.nan
        if not (math.isfinite(strength) and strength >= 0):
            raise InvalidArgumentError(f"strength must be a number >= 0, got {self.strength!r}")
        check_viewer_params(self.viewer_max_side, self.viewer_quality)
        parse_shape(self.shape)


@dataclass
class StackViews:
    """Result of :func:`stack_views`: what to write, what to record in run.json, and the time taken."""

    outputs: DofOutputs
    record: dict
    timings: dict


def stack_views(frames_u8: np.ndarray, config: StackViewsConfig | None = None) -> StackViews:
    """All-in-focus image, depth map and viewer previews of a stack, uint8 [9, H, W, 3] near to far.

    config: None = ``StackViewsConfig()`` (made here, not as a default argument: nothing at import).
    The analysis and the renderer run on torch, imported here: the config above is made and checked
    without it (a run in an environment without torch skips the views, see refocus_edge.app.run_photo).
    """
    config = StackViewsConfig() if config is None else config
    if not isinstance(config, StackViewsConfig):
        raise InvalidArgumentError(f"config must be a StackViewsConfig, got {type(config).__name__}")
    aperture = parse_shape(config.shape)
    frames_u8 = np.asarray(frames_u8)
    if frames_u8.dtype != np.uint8 or frames_u8.ndim != 4 or frames_u8.shape[0] != NUM_POSITIONS \
            or frames_u8.shape[3] != 3 or frames_u8.shape[1] < 2 or frames_u8.shape[2] < 2:
        raise InvalidArgumentError(f"frames must be uint8 [{NUM_POSITIONS}, H, W, 3] with H, W >= 2, got "
                                   f"{frames_u8.dtype} {list(frames_u8.shape)}")
    # Imported here: the analysis modules (and torch) are only needed once a run has frames.
    import torch

    from .analysis import analyse_stack
    from .preview import precompute_previews, to_u8

    # x * float32(1 / 255), not x / 255: the same float values runtime.image_io.load_photo gives
    # `refocus edit` for the written PNGs (division differs in the last bit for some values, which
    # would flip a few rounded output pixels).
    frames = torch.from_numpy(np.ascontiguousarray(frames_u8)).permute(0, 3, 1, 2).float()
    frames *= float(np.float32(1 / 255))
    with torch.no_grad():
        analysis = analyse_stack(frames)
        timings = dict(analysis.timings)
        t0 = time.perf_counter()
        previews = precompute_previews(analysis.aif, analysis.depth, aperture, config.dof,
                                       config.viewer_max_side, config.viewer_quality)
    timings["previews"] = time.perf_counter() - t0
    depth = analysis.depth
    record = {
        "depth_source": analysis.depth_source,
        "depth_range": [round(float(depth.min()), 3), round(float(depth.max()), 3)],
        "mean_confidence": round(float(analysis.confidence.mean()), 4),
        "shape": aperture.name,
        "viewer": previews.info(),
        "dof_config": dataclasses.asdict(config.dof),
    }
    outputs = DofOutputs(all_in_focus=to_u8(analysis.aif), depth_rgb=colorize_depth(depth.cpu().numpy()),
                         previews=previews, strength=float(config.strength))
    return StackViews(outputs=outputs, record=record, timings=timings)
