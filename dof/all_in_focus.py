"""All-in-focus fusion of a focal stack by per-pixel soft selection of the sharpest frame.

Pipeline (all torch, [F, 3, H, W] -> [3, H, W]):

1. Focus measure per frame with a small window (:func:`refocus_edge.dof.focus_measure.focus_measure`), in
   logs: defocus scales high-frequency energy by large factors, so comparing logs makes the choice
   depend on sharpness *ratios* between frames (the temperature is then a unit-free exponent), not on
   how contrasty the texture is.
2. Selection weights: softmax over frames of log(measure) / temperature, i.e. weights proportional to
   measure ** (1 / temperature).
3. Edge-aware smoothing of the weight maps: a colour guided filter steered by the fused image,
   *normalised by confidence* (each pixel's vote counts with the peakedness of its focus curve), and
   blended back in proportion to confidence. Textureless or ambiguous pixels thereby take the choice of
   confident neighbours of the same colour, while confidently decided pixels keep their own choice.

Why no wide windows anywhere (the usual cause of halos): a sharp occlusion edge has a huge focus
response in the frame focused on the foreground. A wide measure window (or an unguided smoothing of the
weights) spreads that response onto the background beside the edge, which then takes its pixels from
the foreground frame, where the background is blurred -- a halo. With a 1 px (sigma) measure window
and a confidence-normalised guided smoothing of radius 1, the background next to the edge is decided
by its own texture. Measured (benchmarks/dof_analysis.py and tests/test_dof_analysis.py): wider
aggregation or smoothing of the weights only made the fusion worse against the true all-in-focus image
of the held-out synthetic stacks; a 1.5 px window was marginally better there (LPIPS 0.0051 vs 0.0060)
but let a bright foreground square halo over a weakly textured background (error 3-6 px from the edge
0.025 vs 0.018), so the default is 1 px.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .focus_measure import _check_frames, box_mean, focus_confidence, focus_measure

__all__ = ["AllInFocusConfig", "AllInFocus", "guided_filter", "soft_selection", "all_in_focus"]


@dataclass(frozen=True)
class AllInFocusConfig:
    """Parameters of :func:`all_in_focus` (pixel sizes in the stack's own pixels).

    Attributes:
        measure_sigma: Gaussian window (px) of the focus measure.
        measure_floor: added to the measure before the log, so textureless pixels (measure ~0 in every
            frame) get equal logits, i.e. a uniform choice, instead of amplified rounding noise.
        temperature: softmax temperature on log-measures; weights go as measure ** (1 / temperature),
            so with 0.1 a frame that is 2x sharper wins ~1000:1.
        smooth_radius: guided-filter radius (px) of the weight smoothing (0 disables it).
        smooth_eps: guided-filter regularisation (guide in [0, 1]; smaller follows weaker edges).
        texture_floor: focus energy at which the texture gate of the confidence is 0.5 (see
            :func:`refocus_edge.dof.focus_measure.focus_confidence`).
    """

    measure_sigma: float = 1.0
    measure_floor: float = 1e-6
    temperature: float = 0.1
    smooth_radius: int = 1
    smooth_eps: float = 1e-4
    texture_floor: float = 1e-4

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.measure_floor > 0:
            raise ValueError(f"measure_floor must be > 0, got {self.measure_floor}")
        if self.measure_sigma < 0:
            raise ValueError(f"measure_sigma must be >= 0, got {self.measure_sigma}")
        if self.smooth_radius < 0 or not self.smooth_eps > 0:
            raise ValueError("smooth_radius must be >= 0 and smooth_eps > 0")
        if not self.texture_floor > 0:
            raise ValueError(f"texture_floor must be > 0, got {self.texture_floor}")


@dataclass
class AllInFocus:
    """Result of :func:`all_in_focus`.

    Attributes:
        image: [3, H, W] fused all-in-focus image in [0, 1].
        weights: [F, H, W] per-frame selection weights, >= 0, summing to 1 over frames.
        confidence: [H, W] in [0, 1], how decisive the focus curve was at each pixel (0 where flat).
    """

    image: torch.Tensor
    weights: torch.Tensor
    confidence: torch.Tensor


def _guided_coefficients(I: torch.Tensor, p: torch.Tensor, r: int, eps: float):
    """Window-averaged affine coefficients (mean_a [N, C, H, W], mean_b [N, H, W]) of the guided filter."""
    c, h, w = I.shape
    n = p.shape[0]
    mean_I = box_mean(I, r)  # [C, H, W]
    mean_p = box_mean(p, r)  # [N, H, W]
    # Cross moments of every map with every guide channel in one call: [N * C, H, W] -> [N, C, H, W].
    corr_Ip = box_mean((p[:, None] * I[None]).reshape(n * c, h, w), r).reshape(n, c, h, w)
    cov_Ip = corr_Ip - mean_I[None] * mean_p[:, None]
    if c == 1:
        var_I = box_mean(I * I, r) - mean_I * mean_I
        a = cov_Ip / (var_I[None] + eps)
    else:
        # The 6 distinct entries of the per-pixel 3x3 covariance of the guide, plus eps on the diagonal.
        idx = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
        cov = box_mean(torch.stack([I[i] * I[j] for i, j in idx]), r)
        cov = cov - torch.stack([mean_I[i] * mean_I[j] for i, j in idx])
        s00, s01, s02, s11, s12, s22 = cov.unbind(0)
        s00, s11, s22 = s00 + eps, s11 + eps, s22 + eps
        # Closed-form inverse of a symmetric 3x3 matrix (adjugate / determinant): one vectorised
        # expression for all pixels, much cheaper than a batched linalg.solve over H*W systems.
        i00 = s11 * s22 - s12 * s12
        i01 = s02 * s12 - s01 * s22
        i02 = s01 * s12 - s02 * s11
        i11 = s00 * s22 - s02 * s02
        i12 = s01 * s02 - s00 * s12
        i22 = s00 * s11 - s01 * s01
        det = s00 * i00 + s01 * i01 + s02 * i02  # > 0: covariance is PSD and eps > 0
        rows = [torch.stack(r) / det for r in ((i00, i01, i02), (i01, i11, i12), (i02, i12, i22))]
        # a = Sigma^-1 cov_Ip per pixel, one output channel at a time: a single broadcast over
        # [N, 3, 3, H, W] would need 3x the memory of everything else at photo sizes.
        a = torch.stack([(row[None] * cov_Ip).sum(1) for row in rows], 1)  # [N, C, H, W]
    b = mean_p - (a * mean_I[None]).sum(1)
    mean_a = box_mean(a.reshape(n * c, h, w), r).reshape(n, c, h, w)
    return mean_a, box_mean(b, r)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float, subsample: int = 1) -> torch.Tensor:
    """Colour guided filter (He, Sun & Tang 2010) of [N, H, W] maps steered by a [3, H, W] guide.

    Inside every (2r+1)^2 window each output map is modelled as an affine function of the guide's
    colour, q = a . I + b, fitted by ridge regression (eps penalises |a|). Where the guide is flat the
    fit degenerates to the window mean (smoothing); across a colour edge the output may step with the
    guide (edge preserving). Cost is O(1) per pixel in the radius (box means only). A [1, H, W] guide
    gives the grey-scale variant.

    ``subsample`` > 1 is the "fast guided filter" (He & Sun 2015): the coefficients a, b are fitted on
    guide and maps area-downsampled by that factor (radius scaled alike), bilinearly upsampled, and
    applied to the full-resolution guide. The coefficients are smooth (window means), so little is
    lost, while the cost drops by about subsample**2; edges still come from the full-resolution guide.

    Returns:
        [N, H, W] float32.
    """
    if guide.ndim != 3 or guide.shape[0] not in (1, 3):
        raise ValueError(f"guide must be [3, H, W] or [1, H, W], got {tuple(guide.shape)}")
    if src.ndim != 3 or src.shape[1:] != guide.shape[1:]:
        raise ValueError(f"src must be [N, H, W] with the guide's H, W, got {tuple(src.shape)}")
    r = int(radius)
    I = guide.float()
    p = src.float()
    if r <= 0:
        return p
    s = max(1, int(subsample))
    if s == 1:
        mean_a, mean_b = _guided_coefficients(I, p, r, eps)
    else:
        h, w = I.shape[1:]
        small = (max(1, -(-h // s)), max(1, -(-w // s)))
        mean_a, mean_b = _guided_coefficients(F.adaptive_avg_pool2d(I[None], small)[0],
                                              F.adaptive_avg_pool2d(p[None], small)[0], max(1, round(r / s)), eps)
        n, c = mean_a.shape[:2]
        up = lambda x: F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]  # noqa: E731
        mean_a = up(mean_a.reshape(n * c, *small)).reshape(n, c, h, w)
        mean_b = up(mean_b)
    return (mean_a * I[None]).sum(1) + mean_b


def soft_selection(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over frames (dim 0) of [F, H, W] logits / temperature."""
    return torch.softmax(logits / float(temperature), dim=0)


def _fuse(frames: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.einsum("fchw,fhw->chw", frames, weights).clamp_(0.0, 1.0)


def _normalise(weights: torch.Tensor) -> torch.Tensor:
    """Clamp negative overshoot of the guided filter and renormalise to a partition of unity."""
    w = weights.clamp_min(0.0)
    s = w.sum(0, keepdim=True)
    # Should the filter's overshoot leave no positive weight at a pixel, fall back to a uniform choice
    # there rather than dividing by zero.
    uniform = torch.full_like(w, 1.0 / w.shape[0])
    return torch.where(s > 1e-8, w / s.clamp_min(1e-8), uniform)


@torch.no_grad()
def all_in_focus(frames: torch.Tensor, config: AllInFocusConfig = AllInFocusConfig()) -> AllInFocus:
    """Fuse a focal stack [F, 3, H, W] (float in [0, 1]) into one all-in-focus image.

    See the module docstring for the pipeline. Returns :class:`AllInFocus` (image [3, H, W], weights
    [F, H, W] summing to 1 over frames, confidence [H, W]).
    """
    frames = _check_frames(frames)
    cfg = config
    log_focus = torch.log(focus_measure(frames, cfg.measure_sigma) + cfg.measure_floor)
    weights = soft_selection(log_focus, cfg.temperature)
    conf = focus_confidence(log_focus, cfg.texture_floor)
    if cfg.smooth_radius > 0:
        guide = _fuse(frames, weights)
        # Normalised (confidence-weighted) filtering: filter conf * w and conf together, divide. The
        # result still sums to 1 over frames (sum_f conf * w_f = conf, and the filter is linear).
        both = guided_filter(guide, torch.cat([weights * conf[None], conf[None]]), cfg.smooth_radius, cfg.smooth_eps)
        num, den = both[:-1], both[-1:]
        # Where no confident pixel is near (den ~ 0) there is nothing to borrow: keep the own weights.
        smoothed = torch.where(den > 1e-3, num / den.clamp_min(1e-3), weights)
        weights = _normalise(conf[None] * weights + (1.0 - conf[None]) * smoothed)
    return AllInFocus(image=_fuse(frames, weights), weights=weights, confidence=conf)
