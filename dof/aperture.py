"""Aperture (bokeh) kernels: the shape an out-of-focus point light takes.

Every shape is a coverage function on a normalised plane (x right, y *up*) that fits inside the
unit disk centred on the shape's centroid. Centring on the centroid, not on the bounding box, matters
for asymmetric shapes (heart, user masks): a convolution kernel whose centre of mass is off-centre
would shift the whole blurred layer, so objects would move as they defocus.

A kernel at radius ``r`` pixels is that shape scaled by ``r`` and rasterised with exact-ish area
coverage (supersampling), so edges are anti-aliased and the kernel varies smoothly with ``r`` (no
popping when a slider moves). Kernels are square, odd-sized (``2 * ceil(r + 0.5) + 1``), centred, and
sum to 1. A radius below :data:`MIN_RADIUS` gives the 1x1 identity kernel. Kernels are cached per
(shape, radius quantised to 1/8 px, flip).

``circle`` rasterises exactly like :func:`focalstacks.render.disk_kernel` (same 8x8 supersampling
up to radius 24), so an edit with a circular aperture reproduces the project's stack renderer.

Shapes (``parse_shape`` spellings):

* ``circle``: a disk of radius ``r``.
* ``blades:N`` or ``blades:N:DEG``: a regular N-gon (N = 3..32, like an N-bladed iris) inscribed in the
  radius-``r`` circle; one vertex points up, rotated counter-clockwise by DEG degrees.
* ``heart``: an upright heart (lobes up, point down).
* ``star``: a regular five-pointed star, points up, inner radius 0.45 of the outer one.
* a path to an image (PNG): a user mask. The alpha channel is the mask when the image has a varying
  one, otherwise luminance (white = open aperture). It is cropped to its non-zero part, centred on its
  centroid and scaled so it just fits the radius-``r`` circle.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from refocus_edge.runtime.errors import InputImageError, InvalidArgumentError

__all__ = [
    "Aperture", "MIN_RADIUS", "BUILTIN_SHAPES", "parse_shape", "kernel",
    "circle", "blades", "heart", "star", "from_png",
]

#: Radii below this many pixels blur nothing: the kernel is the 1x1 identity (as in the renderer).
MIN_RADIUS = 0.5
#: Radii are quantised to this step (px) so kernels and their FFTs can be cached and reused.
RADIUS_STEP = 1.0 / 8.0
BUILTIN_SHAPES = ("circle", "blades:N", "heart", "star")
MIN_BLADES, MAX_BLADES = 3, 32
#: Inner/outer radius of the star. 0.38 is the geometric pentagram; slightly fatter arms keep more
#: light (a star-shaped highlight stays visible) while the notches between points stay deep.
STAR_INNER = 0.45
#: Longest side a user mask is reduced to on load; a kernel never needs more detail than that.
MASK_MAX_SIDE = 512
_SHAPE_HELP = "use circle, blades:N (N = 3..32, optionally blades:N:DEGREES), heart, star or a path to a .png mask"


@dataclass(frozen=True)
class Aperture:
    """A parsed aperture shape; hashable, so kernels can be cached per shape.

    Attributes:
        kind: "circle", "blades", "heart", "star" or "mask".
        blades: number of blades (kind "blades").
        rotation: counter-clockwise rotation in degrees (kind "blades").
        path: the mask file (kind "mask").
        digest: content hash of the mask file, so an edited file is not served from the cache.
        mask: the mask as float32 [h, w] in [0, 1] (kind "mask"); not part of equality/hash.
    """

    kind: str
    blades: int = 0
    rotation: float = 0.0
    path: str | None = None
    digest: str | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """The spelling parse_shape accepts for this shape."""
        if self.kind == "blades":
            return f"blades:{self.blades}" + (f":{self.rotation:g}" if self.rotation else "")
        if self.kind == "mask":
            return str(self.path)
        return self.kind

    @property
    def symmetric_180(self) -> bool:
        """True when rotating by 180 degrees leaves the shape unchanged (no foreground flip needed)."""
        return self.kind == "circle" or (self.kind == "blades" and self.blades % 2 == 0)

    def kernel(self, radius: float, flip: bool = False) -> torch.Tensor:
        """Normalised [k, k] float32 kernel at `radius` px; `flip` rotates it by 180 degrees."""
        return kernel(self, radius, flip)


# --------------------------------------------------------------------------- parsing


def parse_shape(spec: "str | Path | Aperture") -> Aperture:
    """Parse a --shape value: "circle", "blades:6", "blades:6:15", "heart", "star" or an image path.

    Raises InvalidArgumentError (one line) for a malformed name, InputImageError naming the file for a
    mask that is missing, unreadable or empty.
    """
    if isinstance(spec, Aperture):
        return spec
    if isinstance(spec, Path):
        return _load_mask(spec)
    if not isinstance(spec, str):
        raise InvalidArgumentError(f"shape must be a string, got {type(spec).__name__}; {_SHAPE_HELP}")
    text = spec.strip()
    if not text:
        raise InvalidArgumentError(f"empty shape; {_SHAPE_HELP}")
    low = text.lower()
    if low in ("circle", "heart", "star"):
        return Aperture(low)
    if low == "blades" or low.startswith("blades:"):
        return _parse_blades(text)
    # Anything that looks like a file is a mask: an image suffix, a path separator, or an existing file.
    p = Path(text).expanduser()
    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp") or "/" in text \
            or "\\" in text or p.exists():
        return _load_mask(p)
    raise InvalidArgumentError(f"unknown shape {text!r}; {_SHAPE_HELP}")


def _parse_blades(text: str) -> Aperture:
    parts = text.split(":")
    if len(parts) < 2 or not parts[1].strip():
        raise InvalidArgumentError(f"shape {text!r} needs a blade count, e.g. blades:6")
    if len(parts) > 3:
        raise InvalidArgumentError(f"shape {text!r} has too many fields; use blades:N or blades:N:DEGREES")
    try:
        n = int(parts[1])
    except ValueError:
        raise InvalidArgumentError(
            f"blade count in {text!r} must be an integer {MIN_BLADES}..{MAX_BLADES}, got {parts[1]!r}") from None
    if not MIN_BLADES <= n <= MAX_BLADES:
        raise InvalidArgumentError(f"blade count in {text!r} must be {MIN_BLADES}..{MAX_BLADES}, got {n}")
    rot = 0.0
    if len(parts) == 3:
        try:
            rot = float(parts[2])
        except ValueError:
            raise InvalidArgumentError(f"rotation in {text!r} must be a number of degrees, got {parts[2]!r}") from None
        if not math.isfinite(rot):
            raise InvalidArgumentError(f"rotation in {text!r} must be finite, got {parts[2]!r}")
        # One blade period is the whole symmetry: normalising keeps cache keys and names canonical.
        rot = rot % (360.0 / n)
        rot = 0.0 if abs(rot) < 1e-9 or abs(rot - 360.0 / n) < 1e-9 else rot
    return Aperture("blades", blades=n, rotation=rot)


def _load_mask(path: Path) -> Aperture:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise InputImageError(
            "aperture mask not found; check the path or " + _SHAPE_HELP.replace("use ", "use a built-in: "), path)
    if not path.is_file():
        raise InputImageError("aperture mask is not a file; pass a grayscale or transparent PNG", path)
    try:
        data = path.read_bytes()
        with Image.open(path) as im:
            im.load()
            if max(im.size) > MASK_MAX_SIDE:
                im.thumbnail((MASK_MAX_SIDE, MASK_MAX_SIDE), Image.Resampling.BOX)
            rgba = im.convert("RGBA")
            alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
            # A constant alpha carries no shape (an opaque PNG): then the grey level is the mask.
            if alpha.min() < alpha.max():
                mask = alpha
            else:
                mask = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InputImageError(f"aperture mask is not a readable image ({detail}); pass a PNG", path) from exc
    # Near-black noise (e.g. from a lossy export) would otherwise widen the extent and shrink the shape.
    mask = np.where(mask > 0.02, mask, 0.0).astype(np.float32)
    if not mask.any():
        raise InputImageError(
            "aperture mask is empty (all black or fully transparent); white or opaque pixels are the open aperture",
            path)
    mask.setflags(write=False)
    return Aperture("mask", path=str(path), digest=hashlib.sha1(data).hexdigest(), mask=mask)


# --------------------------------------------------------------------------- shapes


def _polygon_inside(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points (works for non-convex stars)."""
    inside = np.zeros(x.shape, bool)
    n = len(vx)
    for i in range(n):
        x1, y1, x2, y2 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        if y1 == y2:
            continue  # a horizontal edge is never crossed by a horizontal ray
        crosses = (y1 > y) != (y2 > y)
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_at)
    return inside


def _regular_polygon(n: int, rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    t = math.pi / 2 + math.radians(rotation_deg) + 2 * math.pi * np.arange(n) / n
    return np.cos(t), np.sin(t)


def _star_polygon(points: int = 5, inner: float = STAR_INNER) -> tuple[np.ndarray, np.ndarray]:
    t = math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return r * np.cos(t), r * np.sin(t)


def _heart_raw(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # The classic algebraic heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0: lobes up, cusp at (0, -1).
    q = x * x + y * y - 1.0
    return (q * q * q - x * x * y * y * y) <= 0.0


@lru_cache(maxsize=1)
def _heart_frame() -> tuple[float, float, float]:
    """(centroid x, centroid y, max distance from it) of the raw heart, measured on a fine grid."""
    n = 1201
    g = np.linspace(-1.5, 1.5, n)
    x, y = np.meshgrid(g, g)
    inside = _heart_raw(x, y)
    cx, cy = float(x[inside].mean()), float(y[inside].mean())
    ext = float(np.sqrt((x[inside] - cx) ** 2 + (y[inside] - cy) ** 2).max()) + 3.0 / (n - 1)
    return cx, cy, ext


@lru_cache(maxsize=32)
def _mask_frame(ap: Aperture) -> tuple[float, float, float]:
    """(centroid col, centroid row, extent in mask pixels) of a user mask: the frame it is placed in."""
    m = ap.mask
    rows, cols = np.nonzero(m)
    w = m[rows, cols].astype(np.float64)
    cy, cx = float((rows * w).sum() / w.sum()), float((cols * w).sum() / w.sum())
    # Pixel centres are at integer coordinates; a pixel reaches up to ~0.71 px beyond its centre.
    ext = float(np.sqrt((rows - cy) ** 2 + (cols - cx) ** 2).max()) + 0.71
    return cx, cy, max(ext, 0.5)


def _sample_mask(ap: Aperture, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear mask value at normalised points (zero outside the mask)."""
    import torch
    import torch.nn.functional as F

    m = ap.mask
    h, w = m.shape
    cx, cy, ext = _mask_frame(ap)
    col = cx + x * ext
    row = cy - y * ext  # y is up, rows go down
    # grid_sample with align_corners=True maps -1/+1 to the first/last pixel centre.
    gx = 2.0 * col / max(w - 1, 1) - 1.0
    gy = 2.0 * row / max(h - 1, 1) - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], -1).astype(np.float32))[None]
    src = torch.from_numpy(np.array(m, dtype=np.float32))[None, None]  # a writable copy
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0, 0].numpy()


def _coverage(ap: Aperture, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of the normalised shape at points (x right, y up)."""
    if ap.kind == "circle":
        return (x * x + y * y <= 1.0).astype(np.float32)
    if ap.kind == "blades":
        vx, vy = _regular_polygon(ap.blades, ap.rotation)
        return _polygon_inside(x, y, vx, vy).astype(np.float32)
    if ap.kind == "star":
        vx, vy = _star_polygon()
        return _polygon_inside(x, y, vx, vy).astype(np.float32)
    if ap.kind == "heart":
        cx, cy, ext = _heart_frame()
        return _heart_raw(cx + x * ext, cy + y * ext).astype(np.float32)
    if ap.kind == "mask":
        return _sample_mask(ap, x, y)
    raise InvalidArgumentError(f"unknown aperture kind {ap.kind!r}")


# --------------------------------------------------------------------------- kernels


def _supersampling(radius: float) -> int:
    # 8x8 (as the renderer) while kernels are small; big kernels need fewer samples per pixel for the
    # same edge accuracy relative to their size, and 64 samples x a 200 px kernel would cost seconds.
    return 8 if radius <= 24 else (4 if radius <= 64 else 2)


@lru_cache(maxsize=256)
def _kernel_cached(ap: Aperture, radius_q: float, flip: bool) -> torch.Tensor:
    import torch

    h = int(math.ceil(radius_q + 0.5))
    ss = _supersampling(radius_q)
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    coords = (np.arange(-h, h + 1)[:, None] + offs[None, :]).reshape(-1)
    x, row = np.meshgrid(coords, coords)
    cov = _coverage(ap, x / radius_q, -row / radius_q)
    k = cov.reshape(2 * h + 1, ss, 2 * h + 1, ss).mean(axis=(1, 3)).astype(np.float64)
    total = k.sum()
    if total <= 0:  # a mask too thin to hit any sample at this size: fall back to its centre pixel
        k = np.zeros_like(k)
        k[h, h] = 1.0
        total = 1.0
    k /= total
    if flip:
        k = k[::-1, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))
    return t


def quantize_radius(radius: float) -> float:
    """Radius rounded to the 1/8 px grid kernels are cached on."""
    return round(float(radius) / RADIUS_STEP) * RADIUS_STEP


def kernel(shape: "str | Path | Aperture", radius: float, flip: bool = False) -> torch.Tensor:
    """Normalised [k, k] float32 kernel of `shape` at `radius` px (cached; do not modify in place).

    flip rotates the kernel by 180 degrees: the aperture as seen by points in front of the focus
    plane (their rays have not crossed yet), mirrored against points behind it.
    """
    import torch

    ap = parse_shape(shape)
    if not math.isfinite(float(radius)) or radius < 0:
        raise InvalidArgumentError(f"kernel radius must be a finite number >= 0, got {radius!r}")
    rq = quantize_radius(radius)
    if radius < MIN_RADIUS or rq < MIN_RADIUS:
        return torch.ones(1, 1)
    return _kernel_cached(ap, rq, bool(flip) and not ap.symmetric_180)


def circle(radius: float) -> torch.Tensor:
    """Disk kernel (the renderer's pillbox)."""
    return kernel(Aperture("circle"), radius)


def blades(radius: float, n: int, rotation: float = 0.0) -> torch.Tensor:
    """Regular n-gon kernel (circumradius `radius`), a vertex up, rotated `rotation` degrees CCW."""
    return kernel(_parse_blades(f"blades:{n}:{rotation}"), radius)


def heart(radius: float) -> torch.Tensor:
    """Upright heart kernel centred on its centroid."""
    return kernel(Aperture("heart"), radius)


def star(radius: float) -> torch.Tensor:
    """Five-pointed star kernel, a point up."""
    return kernel(Aperture("star"), radius)


def from_png(path: str | Path, radius: float) -> torch.Tensor:
    """Kernel from a user mask image (alpha, else luminance; white/opaque = open)."""
    return kernel(_load_mask(Path(path)), radius)
