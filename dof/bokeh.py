"""Depth-of-field editing: re-render one image with a new focus plane, blur strength and aperture shape.

Inputs are an all-in-focus image and a depth map in *focus-index* units (0 = the nearest focus plane
of the stack, 8 = the farthest; the planes are linear in diopters, 20 D .. 0 D, so index units are
linear in diopters too and blur is linear in them).

Blur model (the project's synthetic lens, :mod:`focalstacks.lens`): a point at ``d`` seen with focus at
``f`` (both in diopters) is blurred into a disk of radius ``max_blur_fraction * W * |d - f| / 20 D``
(``max_blur_fraction`` = 0.05, ``W`` = image width in pixels). One focus step is 20 D / 8 = 2.5 D, so
in index units::

    radius_px = strength * radius_per_step * |depth_index - focus|
    radius_per_step = max_blur_fraction * W / 8 = 0.05 * W / 8      (DofConfig.radius_per_step)

At strength 1 an edit focused on plane k therefore reproduces frame k of a stack rendered by
:mod:`focalstacks.render`; strength scales the aperture (2 = twice the blur, a "faster lens").

Rendering is layered and occlusion-aware, like :func:`focalstacks.render.render_from_depth`:

1. The depth range is cut into slices (bins in index units) centred on the focus plane, so the
   in-focus slice has exactly zero blur and stays untouched. Bins are as thin as needed to keep the
   blur-radius jump between neighbouring slices below ``slice_radius_step`` px, but at most
   ``max_slices``; bins holding no pixels cost nothing.
2. Each slice covers its own pixels *and every nearer pixel* (whose colour it cannot see: those are
   filled from the slice's own and farther pixels by a push-pull pyramid). Nearer slices hide that
   fill where they are opaque; where their blurred edges turn semi-transparent, the fill shows through,
   so a blurred background never picks up the foreground's colour and no dark seams open between
   slices.
3. Premultiplied colour and coverage of each slice are blurred with the aperture kernel at the slice's
   radius (FFT convolution, kernel spectra cached) and composited far to near with "over"
   (``out = C + (1 - A) * out``): a blurred foreground spills over the background, never the reverse,
   because nearer slices are composited later.
4. Work happens in linear light (sRGB decoded), where blur is physically an average of light (the
   synthetic renderer blurs the stored values instead; ``linear_light=False`` does the same and
   matches its frames more closely, at the price of darker, duller bokeh on real photos). Near-
   saturated pixels (sRGB value above ``highlight_threshold``) are boosted by up to ``highlight_gain``
   before blurring: a clipped point light held far more light than its pixel value says, and with the
   boost its bokeh disk stays bright and shows the aperture shape instead of fading into grey. The
   result is clipped to [0, 1] and re-encoded; unblurred slices are not boosted, so in-focus pixels
   come back exactly.

Apertures that are not symmetric under a 180 degree rotation (heart, star, odd blade counts) are
rotated by 180 degrees for slices in front of the focus plane, as in a real lens (rays from a near point
have not crossed yet when they reach the sensor), unless ``flip_foreground`` is off.

:class:`DofRenderer` keeps what several edits of one image share (fills, slice spectra), for sliders
and preview grids; :func:`render_dof` is one edit. All computation is torch on the image's device;
nothing here imports :mod:`focalstacks`.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from refocus_edge.runtime.errors import InvalidArgumentError

from .dof_config import (LENS_MAX_BLUR_FRACTION, NUM_POSITIONS, DofConfig, _finite,  # noqa: F401 (public here too)
                         lens_radius_per_step)
from .aperture import MIN_RADIUS as MIN_BLUR_RADIUS, Aperture, kernel as aperture_kernel, parse_shape, quantize_radius

__all__ = [
    "DofConfig", "DofRenderer", "render_dof", "lens_radius_per_step", "srgb_to_linear", "linear_to_srgb",
    "NUM_POSITIONS", "LENS_MAX_BLUR_FRACTION",
]

#: Largest downsampling factor for big blurs (see DofConfig.lowres_min_radius).
_MAX_LOWRES = 4


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-encoded values."""
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def _highlight_boost(image: torch.Tensor, threshold: float, gain: float, max_size: float) -> torch.Tensor | None:
    """Per-pixel factor [H, W] for small near-saturated spots (lights, glints), or None if there are none.

    Keyed on the mean over channels: a clipped light is (near) white, while a saturated colour (the
    red channel of an orange wall) is not a light. The quadratic ramp from the threshold to 1 avoids a
    visible step between boosted and untouched pixels; all channels get the same factor, so hue stays.

    Only *small* saturated spots are boosted. A clipped point light hid far more light than its pixel
    value says, but a large clipped area (white paper, an overcast sky) or a long thin one (a white
    rim, a window frame) is most likely just a bright surface, and boosting it would make it glow
    over everything around it once defocused. The test is the number of saturated pixels in a window
    of side ~2 x `max_size` (px) around each pixel: a spot up to `max_size` across has at most the
    area of that disk there, an edge or a line has many more. The boost fades out between 1x and 1.5x
    that area.
    """
    if gain <= 1.0:
        return None
    w = ((image.mean(0) - threshold) / (1.0 - threshold)).clamp(0.0, 1.0)
    sat = w > 0
    if not bool(sat.any()):
        return None
    area = math.pi * (max_size / 2) ** 2
    r = max(1, int(round(max_size)))
    count = _box_sum(sat.to(image.dtype)[None, None], r)[0, 0]
    spot = ((1.5 * area - count) / (0.5 * area)).clamp(0.0, 1.0)
    w = w * w * spot
    if not bool((w > 0).any()):
        return None
    return 1.0 + (gain - 1.0) * w


# --------------------------------------------------------------------------- helpers


def _box_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum over the (2r+1)^2 window of [1, 1, H, W] (zeros beyond the border), separably."""
    k = 2 * r + 1
    x = F.avg_pool2d(x, (1, k), 1, (0, r), count_include_pad=True)
    return F.avg_pool2d(x, (k, 1), 1, (r, 0), count_include_pad=True) * (k * k)


def _fast_len(n: int) -> int:
    """Smallest even m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = max(2, int(n))
    while True:
        if m % 2 == 0:
            r = m
            for p in (2, 3, 5):
                while r % p == 0:
                    r //= p
            if r == 1:
                return m
        m += 1


def _mirror_index(n: int, pad: int, device) -> torch.Tensor:
    """Indices of a length-n axis padded by `pad` on both sides with symmetric reflection.

    Symmetric (edge pixel repeated, as the renderer's padding) and periodic in 2n, so pads larger than
    the image still work. Reflection keeps the border's own colour and coverage beyond the edge: blur
    neither darkens the frame edge nor pulls in colour from the opposite side (FFT wrap-around).
    """
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


#: Kernel spectra kept across edits (a slider sweep revisits the same radii), bounded in bytes
#: rather than count: one spectrum of a 4000 px image is ~40 MB, of a 512 px one ~1 MB.
_KERNEL_SPECTRA: OrderedDict = OrderedDict()
_KERNEL_SPECTRA_LIMIT = 256 * 2**20
_kernel_spectra_bytes = 0


def _kernel_spectrum(ap: Aperture, radius_q: float, flip: bool, shape: tuple[int, int], device: str) -> torch.Tensor:
    """rfft2 of the aperture kernel placed around the origin of a `shape` grid (LRU-cached)."""
    global _kernel_spectra_bytes
    key = (ap, radius_q, flip, shape, device)
    got = _KERNEL_SPECTRA.get(key)
    if got is not None:
        _KERNEL_SPECTRA.move_to_end(key)
        return got
    k = aperture_kernel(ap, radius_q, flip).to(device)
    h = k.shape[0] // 2
    buf = torch.zeros(shape, dtype=torch.float32, device=device)
    idx = torch.arange(-h, h + 1, device=device)
    buf[(idx % shape[0])[:, None], (idx % shape[1])[None, :]] = k
    got = torch.fft.rfft2(buf)
    _KERNEL_SPECTRA[key] = got
    _kernel_spectra_bytes += got.numel() * got.element_size()
    while _kernel_spectra_bytes > _KERNEL_SPECTRA_LIMIT and len(_KERNEL_SPECTRA) > 1:
        _, old = _KERNEL_SPECTRA.popitem(last=False)
        _kernel_spectra_bytes -= old.numel() * old.element_size()
    return got


def _down2(x: torch.Tensor) -> torch.Tensor:
    """2x2 block means of [C, H, W] (an odd last row/column is replicated, i.e. averaged alone).

    Strided adds instead of F.avg_pool2d: the same numbers at a tenth of the time on CPU, and the
    pyramid below calls this for every slice of every edit.
    """
    if x.shape[-2] % 2:
        x = torch.cat([x, x[:, -1:]], 1)
    if x.shape[-1] % 2:
        x = torch.cat([x, x[:, :, -1:]], 2)
    x = x[:, 0::2] + x[:, 1::2]
    return (x[:, :, 0::2] + x[:, :, 1::2]) * 0.25


def _up2(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear 2x upsampling of [C, h, w] matching _down2's block centres, cropped to `size`.

    Output pixel 2i takes 3/4 of coarse pixel i and 1/4 of i - 1, pixel 2i + 1 3/4 of i and 1/4 of
    i + 1 (borders replicated): F.interpolate(..., align_corners=False) written as strided
    arithmetic, which is several times faster on CPU.
    """
    c, h, w = x.shape
    p = torch.cat([x[:, :1], x, x[:, -1:]], 1)
    t = 0.75 * x
    y = torch.empty((c, 2 * h, w), dtype=x.dtype, device=x.device)
    torch.add(t, p[:, :-2], alpha=0.25, out=y[:, 0::2])
    torch.add(t, p[:, 2:], alpha=0.25, out=y[:, 1::2])
    p = torch.cat([y[:, :, :1], y, y[:, :, -1:]], 2)
    t = 0.75 * y
    x = torch.empty((c, 2 * h, 2 * w), dtype=x.dtype, device=x.device)
    torch.add(t, p[:, :, :-2], alpha=0.25, out=x[:, :, 0::2])
    torch.add(t, p[:, :, 2:], alpha=0.25, out=x[:, :, 1::2])
    return x[:, : size[0], : size[1]]


def _fill_from(premult: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Colour where `weight` ([1, H, W] in [0, 1]) says it is known, extrapolated elsewhere (push-pull).

    `premult` is colour x weight. Push: a pyramid of weighted 2x2 means. Pull: from the coarsest level
    down, each level's known part is laid "over" the upsampled coarser estimate, so holes take the
    average colour of the nearest known surroundings at the scale of the hole. O(pixels) per slice,
    unlike a distance transform, and smooth (no nearest-pixel streaks for the blur to smear into
    stripes). Fractional weights (a downsampled mask) mix known colour and estimate in proportion.
    """
    x = torch.cat([premult, weight])
    levels = [x]
    while x.shape[-1] > 1 or x.shape[-2] > 1:
        x = _down2(x)
        levels.append(x)
    est = x[:-1] / x[-1:].clamp_min(1e-12)
    for x in reversed(levels[:-1]):
        est = x[:-1] + (1.0 - x[-1:]) * _up2(est, x.shape[-2:])  # "known over estimate", premultiplied
    return est


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidArgumentError(f"{name} must be a tensor or array, got {type(x).__name__}") from exc


# --------------------------------------------------------------------------- rendering


@dataclass
class _Partition:
    """Depth slices for one (slice step, phase, pad): bins are ``round(depth / step - phase)``, so
    every focus with the same phase (e.g. all integer focus positions when step = 1 / m) shares them,
    and with them the cached fills and spectra."""

    bins: torch.Tensor  # [H, W] int32 canonical labels
    bins_p: torch.Tensor  # [Hp, Wp] the same on the padded canvas
    labels: list[int]  # occupied labels, ascending (near to far)
    depth: dict[int, float]  # mean depth index of each label's own pixels
    pad: int


class DofRenderer:
    """An image and its depth prepared for repeated edits (sliders, a preview grid).

    ``render(focus, strength, shape)`` is :func:`render_dof`. What does not depend on focus, strength
    or shape is computed once and cached: the linear/boosted colours, the depth partition, each
    slice's hidden-colour fill and the FFT of each slice's premultiplied layer (per downsampling
    factor). A render then costs one spectrum product, one inverse FFT and one composite per slice.
    Renders share cached work when they use the same slice step and the same phase of focus / step
    (pass ``step`` to force one; integer focus positions with step 1 / m always share).

    Cached slices are bounded by ``cache_mb`` (least recently used first out; the most recent one is
    always kept).
    """

    def __init__(self, image, depth_index, config: DofConfig = DofConfig(), cache_mb: float = 384.0):
        img = _as_tensor(image, "image")
        depth = _as_tensor(depth_index, "depth_index")
        if img.ndim != 3 or img.shape[0] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
            raise InvalidArgumentError(f"image must be [3, H, W], got shape {tuple(img.shape)}")
        if depth.shape != img.shape[1:]:
            raise InvalidArgumentError(
                f"depth_index must be [H, W] = {tuple(img.shape[1:])}, got {tuple(depth.shape)}")
        if not isinstance(config, DofConfig):
            raise InvalidArgumentError(f"config must be a DofConfig, got {type(config).__name__}")
        self.image = img.float().clamp(0.0, 1.0)
        self.depth = depth.to(device=self.image.device, dtype=torch.float32)
        if not bool(torch.isfinite(self.depth).all()):
            raise InvalidArgumentError("depth_index holds NaN or infinite values")
        self.config = config
        self.height, self.width = self.depth.shape
        self._dmin, self._dmax = float(self.depth.min()), float(self.depth.max())
        self._lin = srgb_to_linear(self.image) if config.linear_light else self.image
        boost = _highlight_boost(self.image, config.highlight_threshold, config.highlight_gain,
                                 config.highlight_max_size * min(self.height, self.width))
        self._boosted = self._lin if boost is None else self._lin * boost
        self._device = str(self.image.device)
        self._partitions: dict = {}
        self._canvases: dict = {}
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes, self._cache_limit = 0, int(cache_mb * 2**20)

    # ---- parameters

    def px_per_index(self, strength: float) -> float:
        """Blur radius (px) per focus-index step at this strength."""
        return float(strength) * self.config.step_radius(self.width)

    def slice_step(self, strength: float) -> float:
        """Slice thickness (index units) the config asks for at this strength."""
        ppi = self.px_per_index(strength)
        fine = self.config.slice_radius_step / ppi if ppi > 0 else math.inf
        # bins spanning [dmin, dmax] number at most span / step + 2, hence max_slices - 2
        return max(fine, (self._dmax - self._dmin) / (self.config.max_slices - 2), 1e-6)

    def max_radius(self, focus: float, strength: float) -> float:
        return self.px_per_index(strength) * max(abs(self._dmax - focus), abs(self._dmin - focus))

    @staticmethod
    def pad_for(radius: float) -> int:
        """Canvas margin for blurs up to `radius` px. The extra 2 * _MAX_LOWRES px keep the downsampled
        canvases' margins wider than their kernels too, so FFT wrap-around never reaches the image."""
        return int(math.ceil(radius + 0.5)) + 1 + 2 * _MAX_LOWRES

    # ---- cached pieces

    def _partition(self, step: float, phase: float, pad: int) -> _Partition:
        key = (step, phase, pad)
        part = self._partitions.get(key)
        if part is None:
            bins = torch.round(self.depth / step - phase).to(torch.int32)
            labels = torch.unique(bins).tolist()
            depth = {c: float(self.depth[bins == c].mean()) for c in labels}  # exact for flat layers
            rows = _mirror_index(self.height, pad, self.depth.device)
            cols = _mirror_index(self.width, pad, self.depth.device)
            part = _Partition(bins, bins[rows][:, cols], labels, depth, pad)
            if len(self._partitions) >= 16:  # a slider sweep can visit many phases; keep a few
                self._partitions.pop(next(iter(self._partitions)))
            self._partitions[key] = part
        return part

    def _padded(self, which: str, pad: int) -> torch.Tensor:
        """The linear ("plain") or boosted colours on the mirror-padded canvas (kept per pad)."""
        key = (which, pad)
        got = self._canvases.get(key)
        if got is None:
            colour = self._lin if which == "plain" else self._boosted
            rows = _mirror_index(self.height, pad, colour.device)
            cols = _mirror_index(self.width, pad, colour.device)
            got = colour[:, rows][:, :, cols]
            if len(self._canvases) >= 8:
                self._canvases.pop(next(iter(self._canvases)))
            self._canvases[key] = got
        return got

    @staticmethod
    def _nbytes(value) -> int:
        return sum(t.numel() * t.element_size() for t in (value if isinstance(value, tuple) else (value,))
                   if isinstance(t, torch.Tensor))

    def _remember(self, key, value) -> None:
        self._cache[key] = value
        self._cache_bytes += self._nbytes(value)
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= self._nbytes(old)

    def _sharp_slice(self, pkey, part: _Partition, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(colour [3, H, W], coverage [H, W]) of an unblurred slice: plain colours, hidden part filled."""
        key = ("sharp", pkey, c)
        got = self._cache.get(key)
        if got is None:
            plain = self._padded("plain", part.pad)
            cover = part.bins_p <= c  # own pixels and every nearer one
            behind = (part.bins_p >= c).to(plain.dtype)[None]  # pixels whose colour this slice may show
            colour = _fill_from(plain * behind, behind) if bool((cover & (part.bins_p < c)).any()) else plain
            crop = (slice(part.pad, part.pad + self.height), slice(part.pad, part.pad + self.width))
            got = (colour[:, crop[0], crop[1]].contiguous(), cover[crop].to(plain.dtype))
            self._remember(key, got)
        else:
            self._cache.move_to_end(key)
        return got

    def _slice_spectrum(self, pkey, part: _Partition, c: int, f: int) -> tuple[torch.Tensor, bool, tuple]:
        """(rfft2 of the slice's [premultiplied colour, coverage] layer at 1/f scale, full coverage, size)."""
        key = ("spectrum", pkey, c, f)
        got = self._cache.get(key)
        if got is None:
            boosted = self._padded("boosted", part.pad)
            cover = part.bins_p <= c
            behind = (part.bins_p >= c).to(boosted.dtype)[None]
            hidden = bool((cover & (part.bins_p < c)).any())
            known, cov = boosted * behind, cover.to(boosted.dtype)[None]
            for _ in range(f.bit_length() - 1):
                known, behind, cov = _down2(known), _down2(behind), _down2(cov)
            # (a downsampled mask is fractional: the fill also resolves the mixed pixels)
            colour = _fill_from(known, behind) if hidden or f > 1 else boosted
            full = bool((cov == 1).all())  # the farthest slice covers everything: blurred coverage is 1
            layer = colour if full else torch.cat([colour * cov, cov])
            size = tuple(layer.shape[-2:])
            fft_shape = (_fast_len(size[0]), _fast_len(size[1]))
            got = (torch.fft.rfft2(layer, s=fft_shape), full, size)
            self._remember(key, got)
        else:
            self._cache.move_to_end(key)
        return got

    # ---- rendering

    @torch.no_grad()
    def render(self, focus: float, strength: float = 1.0, shape="circle", *, step: float | None = None,
               pad: int | None = None, stats: dict | None = None) -> torch.Tensor:
        """The image refocused at `focus` with `strength` x the lens's blur through `shape`.

        Args:
            focus: focus position in index units (fractional allowed).
            strength: blur scale, >= 0.
            shape: an Aperture or a parse_shape spelling.
            step: slice thickness in index units (None: :meth:`slice_step`); a shared value lets a grid
                of edits share cached slices.
            pad: minimum canvas margin in px (None: what this render needs); a shared value lets
                renders of different blur sizes share cached slices.
            stats: if given, filled with what was done.

        Returns:
            [3, H, W] float32 in [0, 1].
        """
        if not _finite(focus):
            raise InvalidArgumentError(f"focus must be a finite number, got {focus!r}")
        if not (_finite(strength) and float(strength) >= 0):
            raise InvalidArgumentError(f"strength must be a number >= 0, got {strength!r}")
        if step is not None and not (_finite(step) and float(step) > 0):
            raise InvalidArgumentError(f"step must be a number > 0, got {step!r}")
        ap = parse_shape(shape)
        focus, strength = float(focus), float(strength)
        ppi = self.px_per_index(strength)
        info = stats if stats is not None else {}
        info.update(slices=0, blurred_slices=0, lowres_slices=0, max_radius_px=0.0, px_per_index=ppi)
        max_radius = self.max_radius(focus, strength)
        if max_radius < MIN_BLUR_RADIUS:  # nothing would blur: the image is its own answer
            return self.image.clone()

        step = self.slice_step(strength) if step is None else float(step)
        pad = max(self.pad_for(max_radius), int(pad or 0))
        # Slices are centred on the focus plane: bin 0 (label n) holds it and is never blurred.
        q = focus / step
        n = int(round(q))
        phase = round(q - n, 6)
        pkey = (step, phase, pad)
        part = self._partition(step, phase, pad)
        crop = (slice(pad, pad + self.height), slice(pad, pad + self.width))
        canvas = tuple(part.bins_p.shape)

        out = torch.zeros_like(self.image)
        for c in reversed(part.labels):  # far to near
            depth_c = part.depth[c]
            radius = ppi * abs(depth_c - focus)
            info["slices"] += 1
            if quantize_radius(radius) < MIN_BLUR_RADIUS:
                # in focus: composited as is (no boost, so in-focus pixels come back unchanged)
                colour, a = self._sharp_slice(pkey, part, c)
                out = colour * a + (1.0 - a) * out
                continue
            info["blurred_slices"] += 1
            info["max_radius_px"] = max(info["max_radius_px"], radius)
            # Large blurs are computed on a 2x or 4x downsampled canvas: the result is smooth at that
            # scale anyway, and the kernel keeps >= lowres_min_radius px there so its shape survives.
            f = 1
            if self.config.lowres_min_radius is not None:
                while f < _MAX_LOWRES and radius / (2 * f) >= self.config.lowres_min_radius:
                    f *= 2
            info["lowres_slices"] += f > 1
            spectrum, full, size = self._slice_spectrum(pkey, part, c, f)
            fft_shape = (spectrum.shape[-2], 2 * (spectrum.shape[-1] - 1))
            flip = self.config.flip_foreground and depth_c < focus
            kspec = _kernel_spectrum(ap, quantize_radius(radius / f), bool(flip), fft_shape, self._device)
            res = torch.fft.irfft2(spectrum * kspec, s=fft_shape)[:, : size[0], : size[1]]
            if f > 1:
                # back through the same block centres, one 2x bilinear step at a time
                sizes = [canvas]
                for _ in range(f.bit_length() - 2):
                    sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
                for sz in reversed(sizes):
                    res = _up2(res, sz)
            res = res[:, crop[0], crop[1]]
            premult = res[:3].clamp_min(0.0)  # FFT round-off can dip below zero
            alpha = 1.0 if full else res[3].clamp(0.0, 1.0)
            out = premult + (1.0 - alpha) * out

        out = out.clamp(0.0, 1.0)
        return linear_to_srgb(out).clamp(0.0, 1.0) if self.config.linear_light else out


def render_dof(image, depth_index, focus: float, strength: float = 1.0, shape="circle",
               config: DofConfig = DofConfig(), stats: dict | None = None) -> torch.Tensor:
    """Re-render `image` focused at `focus` with `strength` x the lens's blur through `shape`.

    Args:
        image: [3, H, W] all-in-focus image, float in [0, 1] (sRGB-encoded).
        depth_index: [H, W] depth in focus-index units (0 = near plane .. 8 = far plane); values
            outside 0..8 are allowed (blur keeps growing linearly).
        focus: focus position in index units (fractional allowed).
        strength: blur scale, >= 0 (0 = all in focus, 1 = the stack's own lens).
        shape: aperture: an :class:`~refocus_edge.dof.aperture.Aperture` or a spelling accepted by
            :func:`~refocus_edge.dof.aperture.parse_shape`.
        config: :class:`DofConfig`.
        stats: if given, filled with what was done (slices, blurred slices, max radius, ...).

    Returns:
        [3, H, W] float32 in [0, 1] on the image's device. For several edits of one image, use
        :class:`DofRenderer`, which caches the work they share.
    """
    # One render reuses nothing: cache_mb=0 frees each slice's spectrum as soon as the next exists.
    return DofRenderer(image, depth_index, config, cache_mb=0).render(focus, strength, shape, stats=stats)
