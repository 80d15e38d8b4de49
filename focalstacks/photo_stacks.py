"""Focal stacks rendered from whole photographs that no training scene uses: a second evaluation set.

The training scenes (:mod:`focalstacks.scenes`) texture procedural layers with crops of the
scikit-image photos in :data:`focalstacks.scenes.PHOTO_NAMES`. This set renders whole views of
*other* photographs bundled with scikit-image (offline, no download), each with a depth map, through
the same lens model and renderer (:func:`focalstacks.render.render_from_depth`: the depth range is cut
into :data:`NUM_SLICES` diopter slices, each an opaque layer over the pixels at or nearer than it,
blurred with the thin-lens disk and composited back to front), so occlusion and blur follow the
physics the model was trained on while the image content (continuous natural texture, real object
outlines, real depth) does not come from the training distribution.

Photos and where their depth comes from:

* ``stereo_motorcycle`` (Middlebury 2014 "Motorcycle", left view, 741x500): a **measured** depth map,
  the dataset's ground-truth disparity of the left view. For a rectified stereo pair inverse depth
  (diopters) is an affine function of disparity, so disparity maps to diopters linearly. The 7 % of
  pixels without a disparity (occlusions, mostly beside the left of foreground objects) take the
  smaller (farther) of the nearest valid disparities to their left and right on the same row, the
  usual stereo occlusion fill (the hidden side of an occlusion is background).
* ``retina`` (fundus photograph, 1411x1411) and ``cell`` (grey quantitative phase image of a cell,
  550x660): no depth exists, so a **synthetic, merely plausible** one is made from the image (see
  :func:`heuristic_relative_depth`): a ground-plane gradient from the top (far) to the bottom (near),
  and in front of it a "subject": the pixels whose smoothed colour differs most from the photo's
  border colour (Otsu threshold, small components dropped, holes filled), bulging towards the camera
  at its centre (a dome from the distance to the subject's outline), the whole map smoothed. For the
  retina the subject is the fundus disc against the black surround, for the cell the bright cell with
  its halo. This is a depth a scene *could* have, not the depth these scenes had; the stacks test
  whether a refocuser reproduces physically consistent defocus of natural image content, not whether
  it guesses these particular depths.

Excluded: every photo in ``PHOTO_NAMES`` and ``cat`` (the same picture as ``chelsea``). The other
offline images of scikit-image are graphics (logo, colour wheel, phantom, chessboard, binary
shapes), thumbnails (the 25x25 faces, a 102x102 crop) or a tiny animation, so three photos is what
is available offline; the motorcycle, the only one with a measured depth, has the most stacks.

Each stack is one view of one photo: a crop of the target aspect ratio (for the first stack of every
photo the largest such crop, the whole photo when the aspects match; elsewhere 45..100 % of it at a
random place), optionally mirrored, resampled to (H, W) with a box filter (area average), and the
crop's relative depth mapped linearly onto its own diopter interval [far, near] inside the lens range
(far 0..4 D, near 30..100 % of the way from there to 20 D), so the focus sweep runs through the scene
at different places and strengths. An affine map of diopters is exactly a different aperture and
focus sweep for the same scene (blur is linear in diopters), so for the motorcycle the geometry stays
the measured one. Everything is fixed by per-stack seeds (:func:`photo_stack_specs`), so the set is
identical on every run and at every size; the stacks take the photos in turn, so any first three
cover all three photos.

:class:`PhotoFocalStacks` items have the format of :class:`focalstacks.synthetic.SyntheticFocalStacks`
items: ``{"frames": float32 [9, 3, H, W] in [0, 1], "depth": float32 [H, W] diopters, "seed": int,
"name": "photo/NN"}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from .lens import LensConfig
from .render import render_from_depth
from .synthetic import _item_index, _to_item

__all__ = [
    "EVAL_PHOTOS",
    "EXCLUDED_PHOTOS",
    "PHOTO_SET_SEED",
    "NUM_SLICES",
    "PhotoStackSpec",
    "photo_stack_specs",
    "load_photo",
    "photo_relative_depth",
    "heuristic_relative_depth",
    "render_photo_stack",
    "PhotoFocalStacks",
]

#: scikit-image photos of this set and how many stacks each contributes (20 in all).
EVAL_PHOTOS: dict[str, int] = {"stereo_motorcycle": 11, "retina": 6, "cell": 3}
#: never used here: the training textures (focalstacks.scenes.PHOTO_NAMES) and aliases of them.
EXCLUDED_PHOTOS: tuple[str, ...] = ("cat",)  # skimage.data.cat() is chelsea
#: base of the per-stack seeds (see photo_stack_specs); disjoint from the synthetic splits' seeds.
PHOTO_SET_SEED = 20_000_000
#: depth slices of the layered render (blur radii of neighbouring slices differ by <= 0.27 px at 128 px).
NUM_SLICES = 24
#: smallest crop, as a fraction of the photo's largest crop of the target aspect ratio.
MIN_ZOOM = 0.45


@dataclass(frozen=True)
class PhotoStackSpec:
    """One stack of the set (sizes are fractions, so one spec renders at any (H, W)).

    Attributes:
        seed: the seed its parameters were drawn with (see :func:`photo_stack_specs`).
        name: "photo/NN" (NN counts the photo's own stacks).
        photo: scikit-image function name.
        zoom: crop size as a fraction of the photo's largest crop of the target aspect ratio.
        centre: crop centre (y, x), each in [0, 1] of the range that keeps the crop inside the photo.
        mirror: mirror the view left-right.
        far_diopters, near_diopters: the diopters the crop's farthest and nearest points map to.
    """

    seed: int
    name: str
    photo: str
    zoom: float
    centre: tuple[float, float]
    mirror: bool
    far_diopters: float
    near_diopters: float


def photo_stack_specs(cfg: LensConfig = LensConfig()) -> tuple[PhotoStackSpec, ...]:
    """The fixed list of stacks, the photos taken in turn (so the first few stacks cover every photo).

    Stack j of the p-th photo of :data:`EVAL_PHOTOS` has seed ``PHOTO_SET_SEED + 100 * p + j``; its
    first stack (j = 0) is the whole photo, unmirrored.
    """
    per_photo = []
    for p, (photo, n) in enumerate(EVAL_PHOTOS.items()):
        specs = []
        for j in range(n):
            seed = PHOTO_SET_SEED + 100 * p + j
            rng = np.random.default_rng(seed)
            zoom = 1.0 if j == 0 else float(rng.uniform(MIN_ZOOM, 1.0))
            centre = (0.5, 0.5) if j == 0 else (float(rng.uniform()), float(rng.uniform()))
            mirror = bool(j > 0 and rng.random() < 0.5)
            far = cfg.far_diopters + float(rng.uniform(0.0, 0.2)) * cfg.diopter_range
            span = float(rng.uniform(0.3, 1.0)) * (cfg.near_diopters - far)
            specs.append(PhotoStackSpec(seed, f"{photo}/{j:02d}", photo, zoom, centre, mirror, far, far + span))
        per_photo.append(specs)
    longest = max(len(s) for s in per_photo)
    return tuple(s[j] for j in range(longest) for s in per_photo if j < len(s))


# --------------------------------------------------------------------------- photos and depth

@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """Whole photo as float32 HxWx3 in [0, 1] (grey replicated; read-only, cached)."""
    import skimage.data as skdata

    from .scenes import PHOTO_NAMES

    if name in PHOTO_NAMES or name in EXCLUDED_PHOTOS or name not in EVAL_PHOTOS:
        raise ValueError(f"{name!r} is not a photo of the evaluation set {sorted(EVAL_PHOTOS)}")
    im = getattr(skdata, name)()
    im = np.asarray(im[0] if isinstance(im, tuple) else im)  # stereo_motorcycle -> (left, right, disp)
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    out = im[..., :3].astype(np.float32) / 255.0
    out.setflags(write=False)
    return out


def _fill_row_occlusions(disp: np.ndarray) -> np.ndarray:
    """Invalid (non-finite) disparities -> the smaller of the nearest valid ones left and right on the row."""
    valid = np.isfinite(disp)
    w = disp.shape[1]
    cols = np.broadcast_to(np.arange(w), disp.shape)
    left = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(disp.shape[0])[:, None]
    big = np.float32(np.inf)
    from_left = np.where(left >= 0, disp[rows, left.clip(0)], big)
    from_right = np.where(right < w, disp[rows, right.clip(max=w - 1)], big)
    out = np.where(valid, disp, np.minimum(from_left, from_right))
    if not np.isfinite(out).all():  # a row without any valid pixel: nearest valid pixel in 2-D
        _, (iy, ix) = ndimage.distance_transform_edt(~np.isfinite(out), return_indices=True)
        out = out[iy, ix]
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def heuristic_relative_depth(image: np.ndarray, work_size: int = 384) -> np.ndarray:
    """A plausible relative depth (0 = far .. 1 = near) for a photo without one, float32 [H, W].

    Made up from the image, not measured: ground = 0.6 * (row / last row), a plane receding from
    the bottom edge (near) to the top (far); subject = the pixels whose colour (Gaussian-smoothed)
    differs from the median colour of the photo's border by more than Otsu's threshold, components
    under 1 % of the image dropped, holes filled; its depth is 0.6 + 0.4 * sqrt(distance to its
    outline / the largest such distance), in front of every ground point and nearest in its middle;
    the subject mask is feathered and the blend smoothed so depth edges are a pixel or two wide.
    Computed at ``work_size`` pixels on the longer side, then resized to the photo.
    """
    from skimage.filters import threshold_otsu

    h, w = image.shape[:2]
    s = work_size / max(h, w)
    wh, ww = max(8, round(h * s)), max(8, round(w * s))
    small = np.stack([_resize(image[..., c], (wh, ww)) for c in range(3)], axis=-1)
    smooth = ndimage.gaussian_filter(small, sigma=(2.0, 2.0, 0.0))
    band = max(2, round(0.04 * min(wh, ww)))
    border = np.concatenate([smooth[:band].reshape(-1, 3), smooth[-band:].reshape(-1, 3),
                             smooth[:, :band].reshape(-1, 3), smooth[:, -band:].reshape(-1, 3)])
    saliency = np.linalg.norm(smooth - np.median(border, axis=0), axis=-1)
    mask = saliency > threshold_otsu(saliency)
    labels, n = ndimage.label(mask)
    if n:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.01 * mask.size))
    mask = ndimage.binary_fill_holes(mask)
    ground = 0.6 * np.broadcast_to(np.linspace(0.0, 1.0, wh)[:, None], (wh, ww))
    if mask.any():
        dome = np.sqrt(_normalise(ndimage.distance_transform_edt(mask)))
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 1.0)
        rel = (1.0 - soft) * ground + soft * (0.6 + 0.4 * dome)
    else:
        rel = ground
    rel = ndimage.gaussian_filter(rel, 1.0)
    return np.clip(_resize(rel.astype(np.float32), (h, w), Image.BILINEAR), 0.0, 1.0)


@lru_cache(maxsize=None)
def photo_relative_depth(name: str) -> np.ndarray:
    """Relative depth of a whole photo, float32 [H, W], 0 = farthest .. 1 = nearest (read-only, cached).

    Measured (stereo disparity, affine in diopters) for ``stereo_motorcycle``; the
    :func:`heuristic_relative_depth` of the image for the others.
    """
    if name == "stereo_motorcycle":
        import skimage.data as skdata

        disp = np.asarray(skdata.stereo_motorcycle()[2], dtype=np.float32)
        rel = _normalise(_fill_row_occlusions(disp))
    else:
        rel = heuristic_relative_depth(load_photo(name))
    rel = rel.astype(np.float32)
    rel.setflags(write=False)
    return rel


# --------------------------------------------------------------------------- rendering

def _resize(channel: np.ndarray, size: tuple[int, int], resample=Image.BOX, box=None) -> np.ndarray:
    """One float channel resized to size (H, W) with Pillow (mode "F"), optionally from a crop box."""
    im = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode "F"
    return np.asarray(im.resize((int(size[1]), int(size[0])), resample, box=box), dtype=np.float32)


def _crop_box(spec: PhotoStackSpec, photo_hw: tuple[int, int], size: tuple[int, int]) -> tuple[float, ...]:
    """(x0, y0, x1, y1) in photo pixels: spec.zoom of the largest crop of the target aspect, at spec.centre."""
    ph, pw = photo_hw
    aspect = size[1] / size[0]
    cw = min(pw, ph * aspect) * spec.zoom
    ch = cw / aspect
    cy = ch / 2 + spec.centre[0] * (ph - ch)
    cx = cw / 2 + spec.centre[1] * (pw - cw)
    return (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)


def render_photo_stack(spec: PhotoStackSpec, size: tuple[int, int] = (128, 128),
                       cfg: LensConfig = LensConfig()) -> tuple[np.ndarray, np.ndarray]:
    """``(frames [9, H, W, 3] float32 in [0, 1], depth [H, W] float32 diopters)`` of one stack."""
    size = (int(size[0]), int(size[1]))
    photo = load_photo(spec.photo)
    box = _crop_box(spec, photo.shape[:2], size)
    aif = np.stack([_resize(photo[..., c], size, box=box) for c in range(3)], axis=-1).clip(0.0, 1.0)
    rel = _resize(photo_relative_depth(spec.photo), size, box=box)
    if spec.mirror:
        aif, rel = aif[:, ::-1], rel[:, ::-1]
    rel = _normalise(rel) if float(rel.max() - rel.min()) > 0.05 else rel  # a flat crop keeps its depth
    depth = (spec.far_diopters + rel * (spec.near_diopters - spec.far_diopters)).astype(np.float32)
    frames = render_from_depth(np.ascontiguousarray(aif), depth, cfg, num_slices=NUM_SLICES)
    return frames, np.ascontiguousarray(depth)


class PhotoFocalStacks(Dataset):
    """The photo evaluation set, rendered on the fly (items as SyntheticFocalStacks', plus "name").

    Args:
        size: ``(H, W)``.
        length: the first ``length`` stacks (default: all of :func:`photo_stack_specs`).
        cfg: lens configuration.
    """

    def __init__(self, size: tuple[int, int] = (128, 128), length: Optional[int] = None,
                 cfg: LensConfig = LensConfig()) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.cfg = cfg
        self.specs = photo_stack_specs(cfg)
        self.length = len(self.specs) if length is None else int(length)
        if not 0 <= self.length <= len(self.specs):
            raise ValueError(f"length {length} outside [0, {len(self.specs)}] for the photo set")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        spec = self.specs[_item_index(index, self.length)]
        frames, depth = render_photo_stack(spec, self.size, self.cfg)
        item = _to_item(frames, spec.seed, depth)
        item["name"] = spec.name
        return item
