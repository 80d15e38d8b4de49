"""Occlusion-aware layered defocus rendering.

A scene is a list of :class:`Layer` objects (colour, coverage and depth).
For every focus position the layers are blurred with a disk ("pillbox")
point-spread function whose radius follows the thin-lens model in
:mod:`focalstacks.lens` and then composited back to front with the
"over" operator on *premultiplied* colour::

    out = C_blur + (1 - A_blur) * out

so a blurred foreground spills over whatever lies behind it, while a blurred
background can never spill over a sharp foreground (the foreground's opaque
alpha removes it).

Layers whose depth varies per pixel (e.g. a tilted ground plane) are cut into
depth slices whose blur radii differ by at most ~0.75 px.  Each slice also
covers the nearer part of its own surface (with the surface's own colour), so
the slices overlap and no dark seams appear between them.

Colour values above 1 are accepted (emissive highlights such as point lights,
which is how saturated bokeh discs arise); the rendered stack is clipped to
``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence, Union

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from .lens import LensConfig, blur_radius_px, focus_planes

__all__ = ["Layer", "disk_kernel", "render_layers", "render_from_depth", "composite_sharp", "front_depth", "MIN_BLUR_RADIUS"]

#: radii below this many pixels are treated as "in focus" (no blur at all).
MIN_BLUR_RADIUS = 0.5
#: blur radii are quantised to this step (pixels) so kernels can be cached.
_RADIUS_STEP = 1.0 / 8.0
#: maximum blur-radius change (px) between consecutive depth slices of one layer.
_SLICE_RADIUS_STEP = 0.75
_MAX_SLICES = 24


@dataclass
class Layer:
    """One compositing layer.

    Attributes:
        rgb: ``H x W x 3`` float colour (straight, i.e. not premultiplied),
            nominally in ``[0, 1]``; values > 1 are emissive highlights.
        alpha: ``H x W`` coverage in ``[0, 1]``.
        diopters: depth in diopters, a scalar or an ``H x W`` array.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    diopters: Union[float, np.ndarray]

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        alpha = np.asarray(self.alpha)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"Layer.rgb must be HxWx3, got shape {rgb.shape}")
        if alpha.shape != rgb.shape[:2]:
            raise ValueError(f"Layer.alpha must be HxW {rgb.shape[:2]}, got shape {alpha.shape}")
        if np.ndim(self.diopters) not in (0, 2) or (
            np.ndim(self.diopters) == 2 and np.shape(self.diopters) != alpha.shape
        ):
            raise ValueError(
                f"Layer.diopters must be a scalar or an HxW array {alpha.shape}, got shape {np.shape(self.diopters)}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.alpha))  # type: ignore[return-value]

    @property
    def mean_diopters(self) -> float:
        """Scalar depth used for ordering (alpha-weighted mean for depth maps)."""
        if np.ndim(self.diopters) == 0:
            return float(self.diopters)
        a = np.asarray(self.alpha, dtype=np.float64)
        s = a.sum()
        d = np.asarray(self.diopters, dtype=np.float64)
        return float((d * a).sum() / s) if s > 0 else float(d.mean())


# --------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------


def _quantize_radius(r: float) -> float:
    return round(float(r) / _RADIUS_STEP) * _RADIUS_STEP


@lru_cache(maxsize=1024)
def _disk_kernel_cached(radius_q: float) -> np.ndarray:
    h = int(math.ceil(radius_q + 0.5))
    ss = 8  # supersampling per axis for exact-ish area coverage of the edge
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    coords = (np.arange(-h, h + 1)[:, None] + offs[None, :]).reshape(-1)
    d2 = coords[:, None] ** 2 + coords[None, :] ** 2
    inside = (d2 <= radius_q * radius_q).astype(np.float64)
    k = inside.reshape(2 * h + 1, ss, 2 * h + 1, ss).mean(axis=(1, 3))
    k /= k.sum()
    k = k.astype(np.float32)
    k.setflags(write=False)
    return k


def disk_kernel(radius: float) -> np.ndarray:
    """Normalised anti-aliased disk (pillbox) kernel of the given radius (px).

    Edge pixels hold their exact area coverage (8x8 supersampling).  A radius
    below :data:`MIN_BLUR_RADIUS` returns the 1x1 identity kernel.  Results
    are cached (read-only arrays).
    """
    if radius < MIN_BLUR_RADIUS:
        return np.ones((1, 1), np.float32)
    return _disk_kernel_cached(_quantize_radius(radius))


@lru_cache(maxsize=512)
def _kernel_fft(radius_q: float, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of the disk kernel wrapped around the origin of a ``shape`` grid."""
    k = _disk_kernel_cached(radius_q)
    h = k.shape[0] // 2
    buf = np.zeros(shape, np.float32)
    idx = np.arange(-h, h + 1)
    buf[np.ix_(idx % shape[0], idx % shape[1])] = k
    out = sfft.rfft2(buf)
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------


@dataclass
class _Slice:
    premult: np.ndarray  # 4 x h x w (premultiplied rgb + alpha), float32, cropped
    y0: int
    x0: int
    diopters: float
    order: int


def _bbox(mask: np.ndarray):
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _make_slice(rgb: np.ndarray, alpha: np.ndarray, diopters: float, order: int, margin: int):
    """Premultiply, crop to the non-zero bounding box (+margin), reflect-pad at image borders."""
    H, W = alpha.shape
    bb = _bbox(alpha > 0)
    if bb is None:
        return None
    r0, r1, c0, c1 = bb
    # rows/cols of the (conceptually reflect-padded) layer we need, in image coordinates
    y0, y1 = r0 - margin, r1 + margin
    x0, x1 = c0 - margin, c1 + margin
    ys = np.arange(max(y0, -margin), min(y1, H + margin))
    xs = np.arange(max(x0, -margin), min(x1, W + margin))
    # reflect ("symmetric") indexing beyond the image border
    yi = np.where(ys < 0, -ys - 1, np.where(ys >= H, 2 * H - ys - 1, ys))
    xi = np.where(xs < 0, -xs - 1, np.where(xs >= W, 2 * W - xs - 1, xs))
    yi = np.clip(yi, 0, H - 1)
    xi = np.clip(xi, 0, W - 1)
    a = alpha[np.ix_(yi, xi)].astype(np.float32)
    c = rgb[np.ix_(yi, xi)].astype(np.float32)
    p = np.empty((4,) + a.shape, np.float32)
    p[:3] = np.moveaxis(c, -1, 0) * a
    p[3] = a
    return _Slice(p, int(ys[0]), int(xs[0]), float(diopters), order)


def _split_layer(layer: Layer, cfg: LensConfig, width: int, margin: int, order: int):
    """Yield scalar-depth slices of a layer (one, or several for depth maps)."""
    rgb = np.asarray(layer.rgb, dtype=np.float32)
    alpha = np.clip(np.asarray(layer.alpha, dtype=np.float32), 0.0, 1.0)
    if np.ndim(layer.diopters) == 0:
        s = _make_slice(rgb, alpha, float(layer.diopters), order, margin)
        return [] if s is None else [s]
    d = np.asarray(layer.diopters, dtype=np.float64)
    vis = alpha > 0
    if not vis.any():
        return []
    dmin, dmax = float(d[vis].min()), float(d[vis].max())
    span_px = blur_radius_px(dmax, dmin, width, cfg)
    n = int(min(_MAX_SLICES, max(1, math.ceil(span_px / _SLICE_RADIUS_STEP))))
    if n == 1:
        s = _make_slice(rgb, alpha, 0.5 * (dmin + dmax), order, margin)
        return [] if s is None else [s]
    edges = np.linspace(dmin, dmax, n + 1)
    # Each slice also lies underneath the nearer slices of the same surface,
    # far enough (``extra`` bands, >= margin pixels) that their blurred edges
    # never reveal a gap -> no seams.  Band thickness in pixels is estimated
    # from the depth gradient.
    gy, gx = np.gradient(d)
    g = np.hypot(gy, gx)[vis]
    g = g[g > 0]
    band_px = (edges[1] - edges[0]) / float(np.median(g)) if g.size else 0.0
    extra = n if band_px <= 0 else int(math.ceil(margin / band_px)) + 1
    out = []
    for k in range(n):
        m = alpha if k == 0 else alpha * (d >= edges[k])
        if k + 1 + extra < n:
            m = m * (d < edges[k + 1 + extra])
        s = _make_slice(rgb, m, 0.5 * (edges[k] + edges[k + 1]), order, margin)
        if s is not None:
            out.append(s)
    return out


def _blur_slice(sl: _Slice, radii_q: Sequence[float]) -> dict:
    """Blur a slice for every distinct quantised radius; returns {radius_q: 4xhxw}."""
    res: dict = {}
    need = sorted({r for r in radii_q if r >= MIN_BLUR_RADIUS})
    if any(r < MIN_BLUR_RADIUS for r in radii_q):
        res[0.0] = sl.premult
    if not need:
        return res
    _, h, w = sl.premult.shape
    hk = int(math.ceil(max(need) + 0.5))
    # round FFT sizes up to multiples of 16 so kernel spectra are reused across slices
    shape = (
        sfft.next_fast_len(-(-(h + hk) // 16) * 16, real=True),
        sfft.next_fast_len(-(-(w + hk) // 16) * 16, real=True),
    )
    spec = sfft.rfft2(sl.premult, s=shape, axes=(-2, -1), workers=-1)
    for r in need:
        out = sfft.irfft2(spec * _kernel_fft(r, shape), s=shape, axes=(-2, -1), workers=-1)[:, :h, :w]
        res[r] = out
    return res


def _composite(stack: np.ndarray, blurred: np.ndarray, y0: int, x0: int) -> None:
    """In-place ``stack = blurred over stack`` (stack: H x W x 3 premult colour, no alpha needed)."""
    H, W = stack.shape[:2]
    _, h, w = blurred.shape
    ya, yb = max(y0, 0), min(y0 + h, H)
    xa, xb = max(x0, 0), min(x0 + w, W)
    if ya >= yb or xa >= xb:
        return
    b = blurred[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
    a = np.clip(b[3], 0.0, 1.0)
    c = np.maximum(np.moveaxis(b[:3], 0, -1), 0.0)
    region = stack[ya:yb, xa:xb]
    region *= (1.0 - a)[..., None]
    region += c


def _sorted_slices(layers: Sequence[Layer], cfg: LensConfig, margin: int) -> tuple[list, int, int]:
    layers = list(layers)
    if not layers:
        raise ValueError("need at least one layer")
    H, W = layers[0].shape
    for L in layers:
        if L.shape != (H, W):
            raise ValueError(f"all layers must share one size; got {L.shape} and {(H, W)}")
    slices = []
    for i, L in enumerate(layers):
        slices.extend(_split_layer(L, cfg, W, margin, i))
    # far (small diopters) first; ties keep the input order
    slices.sort(key=lambda s: (s.diopters, s.order))
    return slices, H, W


def render_layers(layers: Sequence[Layer], cfg: LensConfig = LensConfig()) -> np.ndarray:
    """Render a focal stack from layers.

    Args:
        layers: layers in any order (they are sorted far-to-near by depth;
            per-pixel-depth layers are cut into depth slices first, and the
            slices are sorted together with the scalar-depth layers).
        cfg: lens configuration.

    Returns:
        float32 array ``[num_positions, H, W, 3]`` in ``[0, 1]``, frame 0
        focused near.  Pixels covered by no layer are black.
    """
    W = layers[0].shape[1] if len(layers) else 0
    margin = int(math.ceil(blur_radius_px(cfg.near_diopters, cfg.far_diopters, W, cfg) + 0.5)) + 1
    slices, H, W = _sorted_slices(layers, cfg, margin)
    planes = focus_planes(cfg)
    stack = np.zeros((cfg.num_positions, H, W, 3), np.float32)
    for sl in slices:
        radii = [_quantize_radius(blur_radius_px(sl.diopters, f, W, cfg)) for f in planes]
        radii = [r if r >= MIN_BLUR_RADIUS else 0.0 for r in radii]
        blurred = _blur_slice(sl, radii)
        for j, r in enumerate(radii):
            _composite(stack[j], blurred[r], sl.y0, sl.x0)
    np.clip(stack, 0.0, 1.0, out=stack)
    return stack


def composite_sharp(layers: Sequence[Layer], cfg: LensConfig = LensConfig()) -> np.ndarray:
    """All-in-focus composite (same layer ordering as :func:`render_layers`), float32 HxWx3 in [0, 1]."""
    slices, H, W = _sorted_slices(layers, cfg, 0)
    out = np.zeros((H, W, 3), np.float32)
    for sl in slices:
        _composite(out, sl.premult, sl.y0, sl.x0)
    return np.clip(out, 0.0, 1.0)


def front_depth(layers: Sequence[Layer], cfg: LensConfig = LensConfig(), threshold: float = 0.5) -> np.ndarray:
    """Depth (diopters, float32 HxW) of the front-most surface with alpha >= threshold.

    Pixels covered by no such surface get ``cfg.far_diopters``.
    """
    layers = list(layers)
    slices, H, W = _sorted_slices(layers, cfg, 0)
    depth = np.full((H, W), cfg.far_diopters, np.float32)
    for sl in slices:
        _, h, w = sl.premult.shape
        m = sl.premult[3] >= threshold
        src = layers[sl.order].diopters
        region = depth[sl.y0 : sl.y0 + h, sl.x0 : sl.x0 + w]
        if np.ndim(src) == 0:
            region[m] = float(src)
        else:
            region[m] = np.asarray(src, np.float32)[sl.y0 : sl.y0 + h, sl.x0 : sl.x0 + w][m]
    return depth


def render_from_depth(
    aif: np.ndarray, depth_diopters: np.ndarray, cfg: LensConfig = LensConfig(), num_slices: int = 16
) -> np.ndarray:
    """Render a focal stack from an all-in-focus image and a depth map.

    The depth range is cut into ``num_slices`` equal diopter bins.  Slice ``k``
    is opaque over every pixel at or nearer than its bin; the hidden part
    (pixels of nearer bins) is filled with the colour of the nearest pixel
    at or behind the slice, so blurred backgrounds do not pick up foreground
    colour and no dark seams appear at depth edges.

    Args:
        aif: ``H x W x 3`` all-in-focus image, float in ``[0, 1]`` (uint8 is
            accepted and divided by 255).
        depth_diopters: ``H x W`` depth in diopters.
        cfg: lens configuration.
        num_slices: number of depth bins.

    Returns:
        float32 ``[num_positions, H, W, 3]`` in ``[0, 1]``.
    """
    aif = np.asarray(aif)
    if aif.dtype == np.uint8:
        aif = aif.astype(np.float32) / 255.0
    aif = aif.astype(np.float32)
    d = np.asarray(depth_diopters, dtype=np.float64)
    if aif.ndim != 3 or aif.shape[2] != 3 or d.shape != aif.shape[:2]:
        raise ValueError(f"expected aif HxWx3 and depth HxW, got {aif.shape} and {d.shape}")
    if num_slices < 1:
        raise ValueError("num_slices must be >= 1")
    dmin, dmax = float(d.min()), float(d.max())
    if dmax - dmin < 1e-9:
        return render_layers([Layer(aif, np.ones(d.shape, np.float32), dmin)], cfg)
    edges = np.linspace(dmin, dmax, num_slices + 1)
    bins = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, num_slices - 1)
    layers = []
    for k in range(num_slices):
        own = bins == k
        if not own.any():
            continue
        cover = bins >= k
        behind = bins <= k
        if (cover & ~behind).any():
            # fill nearer pixels with the nearest colour at or behind this slice
            _, (iy, ix) = ndimage.distance_transform_edt(~behind, return_indices=True)
            rgb = aif[iy, ix]
        else:
            rgb = aif
        layers.append(Layer(rgb, cover.astype(np.float32), 0.5 * (edges[k] + edges[k + 1])))
    return render_layers(layers, cfg)
