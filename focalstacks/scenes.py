"""Procedural layered scenes for synthetic focal stacks.

:func:`make_scene` builds, deterministically from an integer seed:

* a textured far background (depth in the far third of the diopter range,
  at infinity one time in four),
* sometimes a tilted ground plane whose inverse depth grows linearly from the
  horizon to the bottom edge (as for a real ground plane),
* 2..7 objects (discs, rotated rectangles, convex polygons, blobs, thin bars)
  at random depths across the whole range, with anti-aliased edges,
* sometimes a group of small emissive point lights (rgb > 1) so defocused
  frames show bokeh discs.

Textures are random crops (scale, rotation, flips, colour jitter) of real
photographs bundled with scikit-image (no download needed).  Photos are
loaded lazily on first use and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .lens import LensConfig
from .render import Layer, composite_sharp, front_depth

__all__ = ["Scene", "make_scene", "texture_photos", "PHOTO_NAMES"]

#: scikit-image sample photographs shipped inside the package (no download).
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "camera",
    "grass",
    "gravel",
    "brick",
    "coins",
    "moon",
    "clock",
    "page",
    "text",
)


@dataclass
class Scene:
    """A procedural scene.

    Attributes:
        layers: list of :class:`~focalstacks.render.Layer` (far to near).
        aif: ``H x W x 3`` float32 all-in-focus composite in ``[0, 1]``.
        depth_diopters: ``H x W`` float32 depth (diopters) of the front-most
            opaque (alpha >= 0.5) surface.
        seed: the seed that generated it.
    """

    layers: list
    aif: np.ndarray
    depth_diopters: np.ndarray
    seed: int = 0


@lru_cache(maxsize=1)
def texture_photos() -> tuple[np.ndarray, ...]:
    """The bundled photos as float32 ``HxWx3`` arrays in [0, 1] (cached, read-only).

    Grey-scale photos are replicated to three channels.  The order follows
    :data:`PHOTO_NAMES`; every photo is required (a missing one would silently
    change every scene), so loading errors propagate.
    """
    import skimage.data as skdata

    out = []
    for name in PHOTO_NAMES:
        im = np.asarray(getattr(skdata, name)())
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        im = im[..., :3].astype(np.float32) / 255.0
        im.setflags(write=False)
        out.append(im)
    return tuple(out)


@lru_cache(maxsize=1)
def _photo_pyramids() -> tuple[tuple[tuple[np.ndarray, ...], bool], ...]:
    """Per photo: (2x2 box-filtered pyramid levels 0..2, is_grey)."""
    out = []
    for im in texture_photos():
        levels = [im]
        for _ in range(2):
            a = levels[-1]
            h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
            a = a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
            a.setflags(write=False)
            levels.append(a)
        grey = bool(np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2]))
        out.append((tuple(levels), grey))
    return tuple(out)


# --------------------------------------------------------------------------
# textures
# --------------------------------------------------------------------------


def _texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Random view of a random photo: scale, rotation, flip, colour jitter.

    The scale is 0.75..3 source pixels per output pixel, sampled from a
    box-filtered pyramid level so that textures are neither blurry
    (magnified) nor aliased: in-focus frames stay genuinely sharp.
    """
    H, W = size
    pyramids = _photo_pyramids()
    levels, grey = pyramids[int(rng.integers(len(pyramids)))]
    scale = float(np.exp(rng.uniform(np.log(0.75), np.log(3.0))))
    level = 0 if scale < 1.5 else (1 if scale < 3.0 else 2)
    src = levels[level]
    scale /= 2**level
    sh, sw = src.shape[:2]
    theta = float(rng.uniform(0, 2 * np.pi)) if rng.random() < 0.5 else float(rng.integers(4)) * np.pi / 2
    flip = -1.0 if rng.random() < 0.5 else 1.0
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    mat = np.array([[c, -s * flip], [s, c * flip]])
    # random centre; the view lies inside the photo when it fits (mirror padding otherwise)
    half = 0.5 * np.abs(mat) @ np.array([H, W], float)
    lo = np.minimum(half, [sh / 2, sw / 2])
    hi = np.maximum([sh - half[0], sw - half[1]], [sh / 2, sw / 2])
    centre = np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])])
    offset = centre - mat @ np.array([(H - 1) / 2, (W - 1) / 2])
    tex = np.empty((H, W, 3), np.float32)
    for ch in range(3):
        ndimage.affine_transform(src[..., ch], mat, offset=offset, output_shape=(H, W),
                                 output=tex[..., ch], order=1, mode="mirror")
    # colour jitter: saturation / tint (grey photos are colourised), contrast, brightness, gamma
    lum = tex.mean(axis=2, keepdims=True)
    tint = rng.uniform(0.55, 1.25, size=3).astype(np.float32)
    sat = rng.uniform(0.3, 1.4)
    if grey:
        tex = lum * tint
    else:
        tex = (lum + np.float32(sat) * (tex - lum)) * np.sqrt(tint)
    contrast = rng.uniform(0.7, 1.3)
    bright = rng.uniform(-0.15, 0.15)
    tex = (tex - 0.5) * np.float32(contrast) + np.float32(0.5 + bright)
    gamma = float(np.exp(rng.uniform(-0.3, 0.3)))
    tex = np.clip(tex, 0.0, 1.0) ** np.float32(gamma)
    return tex.astype(np.float32)


# --------------------------------------------------------------------------
# shapes (signed distance in pixels -> anti-aliased alpha)
# --------------------------------------------------------------------------


def _aa(sdf: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


def _shape_alpha(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    H, W = size
    m = min(H, W)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cy, cx = rng.uniform(0.1 * H, 0.9 * H), rng.uniform(0.1 * W, 0.9 * W)
    py, px = yy - cy, xx - cx
    ang = rng.uniform(0, np.pi)
    ca, sa = math.cos(ang), math.sin(ang)
    u, v = ca * px + sa * py, -sa * px + ca * py  # rotated coords
    kind = ["disc", "rect", "polygon", "blob", "bar"][int(rng.choice(5, p=[0.22, 0.22, 0.2, 0.22, 0.14]))]
    if kind == "disc":
        r = rng.uniform(0.06, 0.28) * m
        sdf = np.hypot(px, py) - r
    elif kind == "rect":
        hw, hh = rng.uniform(0.06, 0.3, size=2) * m
        q = np.stack([np.abs(u) - hw, np.abs(v) - hh])
        sdf = np.linalg.norm(np.maximum(q, 0), axis=0) + np.minimum(q.max(axis=0), 0)
    elif kind == "polygon":
        n = int(rng.integers(3, 8))
        ax, ay = rng.uniform(0.08, 0.3, size=2) * m
        # vertex angles: jittered regular spacing (no degenerate slivers), increasing
        t = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2 * np.pi / n)
        vx, vy = ax * np.cos(t), ay * np.sin(t)  # points on an ellipse -> convex polygon
        sdf = np.full((H, W), -np.inf, np.float32)
        for i in range(n):
            x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
            ex, ey = x1 - x0, y1 - y0
            ln = math.hypot(ex, ey) or 1.0
            # outward normal for counter-clockwise vertices
            nx, ny = ey / ln, -ex / ln
            sdf = np.maximum(sdf, (u - x0) * nx + (v - y0) * ny)
    elif kind == "blob":
        r0 = rng.uniform(0.08, 0.25) * m
        th = np.arctan2(v, u)
        rr = np.ones_like(th)
        for k in range(2, 6):
            rr += rng.uniform(0, 0.25 / k * 2) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
        sdf = (np.hypot(u, v) - r0 * rr) / np.maximum(rr, 0.5)
    else:  # thin bar
        hw = rng.uniform(0.15, 0.45) * m
        hh = rng.uniform(0.8, 2.5)
        q = np.stack([np.abs(u) - hw, np.abs(v) - hh])
        sdf = np.linalg.norm(np.maximum(q, 0), axis=0) + np.minimum(q.max(axis=0), 0)
    return _aa(sdf), kind


def _point_lights(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A few small emissive dots (colour values 3..15, clipped after blurring -> bokeh discs)."""
    H, W = size
    n = int(rng.integers(2, 9))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    alpha = np.zeros((H, W), np.float32)
    rgb = np.zeros((H, W, 3), np.float32)
    cy, cx = rng.uniform(0.1, 0.9) * H, rng.uniform(0.1, 0.9) * W
    spread = rng.uniform(0.1, 0.4) * min(H, W)
    for _ in range(n):
        y = float(np.clip(cy + rng.normal() * spread, 0, H - 1))
        x = float(np.clip(cx + rng.normal() * spread, 0, W - 1))
        r = rng.uniform(0.6, 1.6) * max(1.0, min(H, W) / 128)
        a = _aa(np.hypot(yy - y, xx - x) - r)
        col = (1.0 - rng.uniform(0, 0.35, 3) * (rng.random() < 0.6)) * rng.uniform(3.0, 15.0)
        rgb = rgb * (1 - a)[..., None] + a[..., None] * col.astype(np.float32)
        alpha = np.maximum(alpha, a)
    return rgb, alpha


# --------------------------------------------------------------------------
# scene
# --------------------------------------------------------------------------


def _stand_on_ground(rng: np.random.Generator, alpha: np.ndarray, d: float, ground: Layer, near: float) -> float:
    """An object whose lowest point lies on the ground is moved to (or in front of) the
    ground depth there, so it is not hidden "below" the ground surface.  Always draws
    exactly one random number (keeps the stream layout independent of the outcome)."""
    u = rng.random()
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    if rows.size == 0:
        return d
    y = int(rows[-1])
    cols = np.flatnonzero(alpha[y] > 0.5)
    x = int(cols[len(cols) // 2])
    if ground.alpha[y, x] < 0.5:
        return d
    gd = float(np.asarray(ground.diopters)[y, x])
    if d >= gd:
        return d
    return gd if u < 0.7 else gd + (u - 0.7) / 0.3 * (near - gd)


def make_scene(seed: int, size: tuple[int, int] = (128, 128), cfg: LensConfig = LensConfig()) -> Scene:
    """Build a random layered scene; identical for identical ``(seed, size, cfg)``.

    Args:
        seed: integer seed (``np.random.default_rng(seed)``).
        size: ``(H, W)`` in pixels.
        cfg: lens configuration (depths are drawn inside its diopter range).
    """
    H, W = int(size[0]), int(size[1])
    rng = np.random.default_rng(int(seed))
    near, far = float(cfg.near_diopters), float(cfg.far_diopters)
    rngd = near - far
    layers: list[Layer] = []

    # background: far third, sometimes at infinity (far end)
    bg_d = far if rng.random() < 0.25 else far + rng.uniform(0.0, rngd / 3.0)
    layers.append(Layer(_texture(rng, (H, W)), np.ones((H, W), np.float32), float(bg_d)))

    # optional ground plane
    ground = None
    if rng.random() < 0.4:
        y_h = rng.uniform(0.35, 0.7) * H
        roll = rng.uniform(-0.15, 0.15)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        vcoord = (yy - y_h) * math.cos(roll) - (xx - W / 2) * math.sin(roll)
        g_alpha = _aa(-vcoord)
        d_h = min(bg_d + rng.uniform(0.0, 0.1) * rngd, near)
        d_b = rng.uniform(far + 0.4 * rngd, near)
        depth = d_h + (d_b - d_h) * np.clip(vcoord, 0, None) / max(H - y_h, 1.0)
        depth = np.clip(depth, far, near).astype(np.float32)
        ground = Layer(_texture(rng, (H, W)), g_alpha, depth)
        layers.append(ground)

    # objects
    for _ in range(int(rng.integers(2, 8))):
        alpha, _kind = _shape_alpha(rng, (H, W))
        d = far + rng.uniform(0.0, 1.0) * rngd
        if ground is not None:
            d = _stand_on_ground(rng, alpha, d, ground, near)
        opacity = 1.0 if rng.random() < 0.85 else rng.uniform(0.6, 1.0)
        layers.append(Layer(_texture(rng, (H, W)), alpha * np.float32(opacity), float(d)))

    # point lights
    if rng.random() < 0.45:
        rgb, alpha = _point_lights(rng, (H, W))
        d = far + rng.uniform(0.0, 1.0) * rngd
        layers.append(Layer(rgb, alpha, float(d)))

    aif = composite_sharp(layers, cfg)
    depth = front_depth(layers, cfg)
    return Scene(layers=layers, aif=aif, depth_diopters=depth, seed=int(seed))
