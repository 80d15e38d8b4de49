"""The photo evaluation set (focalstacks.photo_stacks): format, determinism, photos kept apart from
training, and defocus that follows the depth map (a region is sharpest in the frame focused at its depth)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from refocus_edge.focalstacks.lens import LensConfig
from refocus_edge.focalstacks.photo_stacks import (
    EVAL_PHOTOS,
    EXCLUDED_PHOTOS,
    PhotoFocalStacks,
    load_photo,
    photo_relative_depth,
    photo_stack_specs,
)
from refocus_edge.focalstacks.scenes import PHOTO_NAMES, texture_photos
from refocus_edge.focalstacks.synthetic import SYNTHETIC_SPLITS

SIZE = (64, 64)
CFG = LensConfig()


@pytest.fixture(scope="module")
def data() -> PhotoFocalStacks:
    return PhotoFocalStacks(SIZE, length=3)  # the first three stacks: one per photo, whole views


@pytest.fixture(scope="module")
def items(data) -> list:
    return [data[i] for i in range(len(data))]


def test_item_format(items):
    for item in items:
        assert item["frames"].shape == (9, 3, *SIZE) and item["frames"].dtype == torch.float32
        assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
        assert item["depth"].shape == SIZE and item["depth"].dtype == torch.float32
        assert CFG.far_diopters <= float(item["depth"].min()) < float(item["depth"].max()) <= CFG.near_diopters
        assert isinstance(item["seed"], int) and isinstance(item["name"], str)
    assert [it["name"].split("/")[0] for it in items] == list(EVAL_PHOTOS)  # the photos taken in turn


def test_set_is_fixed_and_sized(items):
    specs = photo_stack_specs()
    assert specs == photo_stack_specs() and 16 <= len(specs) <= 24
    assert len(specs) == sum(EVAL_PHOTOS.values()) == len(PhotoFocalStacks(SIZE))
    assert len({s.seed for s in specs}) == len(specs) and len({s.name for s in specs}) == len(specs)
    assert not any(s.seed in split for s in specs for split in SYNTHETIC_SPLITS.values())
    again = PhotoFocalStacks(SIZE, length=3)[1]
    assert torch.equal(again["frames"], items[1]["frames"]) and torch.equal(again["depth"], items[1]["depth"])
    with pytest.raises(IndexError):
        PhotoFocalStacks(SIZE, length=2)[2]


def test_any_size():
    item = PhotoFocalStacks((40, 72), length=1)[0]
    assert item["frames"].shape == (9, 3, 40, 72) and item["depth"].shape == (40, 72)


def test_photos_are_not_training_photos():
    training = texture_photos()
    for name in EVAL_PHOTOS:
        assert name not in PHOTO_NAMES and name not in EXCLUDED_PHOTOS
        photo = load_photo(name)
        assert not any(t.shape == photo.shape and np.allclose(t, photo, atol=2 / 255) for t in training)
    for name in ("chelsea", "cat"):  # a training photo and its alias are refused
        with pytest.raises(ValueError, match="not a photo"):
            load_photo(name)


def test_depth_maps_are_complete():
    for name in EVAL_PHOTOS:
        rel = photo_relative_depth(name)
        assert rel.shape == load_photo(name).shape[:2] and np.isfinite(rel).all()
        assert rel.min() >= 0.0 and rel.max() <= 1.0 and rel.max() - rel.min() > 0.5


def _sharpness(frame: torch.Tensor, mask: np.ndarray) -> float:
    """Mean squared Laplacian of the frame's luminance over a mask."""
    return float((ndimage.laplace(frame.mean(0).numpy().astype(np.float64)) ** 2)[mask].mean())


# Not the retina's far region: it is the black surround, whose only detail is the disc's spilled blur.
@pytest.mark.parametrize("index, region_name", [(0, "near"), (0, "far"), (1, "near"), (2, "near"), (2, "far")])
def test_regions_are_sharpest_where_focused(items, index, region_name):
    from refocus_edge.dof.depth import diopters_to_index

    frames, depth = items[index]["frames"], items[index]["depth"].numpy()
    lo, hi = np.quantile(depth, [0.25, 0.75])
    # The nearest quarter against the far-focused end frame, the farthest quarter against the near end.
    region, opposite = (depth >= hi, 8) if region_name == "near" else (depth <= lo, 0)
    region = ndimage.binary_erosion(region, iterations=2)
    focused = int(np.clip(np.round(diopters_to_index(float(np.median(depth[region])))), 0, 8))
    assert abs(focused - opposite) >= 4  # the two frames are far apart in focus
    assert _sharpness(frames[focused], region) > 3 * _sharpness(frames[opposite], region)
