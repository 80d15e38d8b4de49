"""Tests for the focalstacks package (synthetic focal stacks + learn2refocus loader)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from refocus_edge.focalstacks.lens import LensConfig, blur_radius_px, focus_planes
from refocus_edge.focalstacks.render import Layer, disk_kernel, render_from_depth, render_layers
from refocus_edge.focalstacks.scenes import make_scene
from refocus_edge.focalstacks.synthetic import (
    SYNTHETIC_SPLITS,
    CachedFocalStacks,
    SyntheticFocalStacks,
    render_cache,
    split_seed,
)
from refocus_edge.focalstacks.learn2refocus import Learn2RefocusLayoutError, Learn2RefocusStacks

CFG = LensConfig()


def _texture(size=128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((size, size, 3)).astype(np.float32)


def _lap_var(img):
    g = img.mean(axis=-1).astype(np.float64)
    return float(ndimage.laplace(g)[8:-8, 8:-8].var())


# ---------------------------------------------------------------- lens


def test_focus_planes_near_to_far():
    p = focus_planes(CFG)
    assert p.shape == (9,)
    assert p[0] == pytest.approx(20.0) and p[-1] == pytest.approx(0.0)
    assert np.allclose(np.diff(p), -2.5)


def test_blur_radius_linear_in_diopters():
    f = 7.0
    r = blur_radius_px(f + np.arange(0, 10) * 1.3, f, 128, CFG)
    assert r[0] == 0.0
    assert np.allclose(r, np.arange(0, 10) * r[1])  # linear
    assert np.allclose(blur_radius_px(f - np.arange(0, 10) * 1.3, f, 128, CFG), r)  # symmetric
    # full range -> max_blur_fraction * width; proportional to width
    assert blur_radius_px(20.0, 0.0, 128, CFG) == pytest.approx(0.05 * 128)
    assert blur_radius_px(20.0, 0.0, 256, CFG) == pytest.approx(2 * 0.05 * 128)
    with pytest.raises(ValueError):
        LensConfig(near_diopters=0.0, far_diopters=1.0)


def test_rendered_point_spread_matches_radius():
    S = 128
    alpha = np.zeros((S, S), np.float32)
    alpha[64, 64] = 1.0
    rgb = np.ones((S, S, 3), np.float32)
    d = 10.0  # focus plane 4 is at 10 D; frame 0 at 20 D -> r = 10/20*0.05*128 = 3.2 px
    stack = render_layers([Layer(rgb, alpha, d)], CFG)
    psf = stack[0, ..., 0]
    yy, xx = np.mgrid[0:S, 0:S]
    dist = np.hypot(yy - 64, xx - 64)
    assert psf.sum() == pytest.approx(1.0, abs=1e-3)
    assert psf[dist > 3.2 + 1.0].max() < 1e-5
    assert psf[dist < 3.2 - 1.0].min() > 0.5 * psf.max()
    assert stack[4, 64, 64, 0] == pytest.approx(1.0, abs=1e-5)  # in focus


def test_disk_kernel():
    assert disk_kernel(0.3).shape == (1, 1)
    k = disk_kernel(4.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1])
    c = k.shape[0] // 2
    assert k[c, c] == pytest.approx(k.max())
    assert 0 < k[c, c + 4] < k[c, c]  # anti-aliased edge pixel


# ---------------------------------------------------------------- (a) focus


@pytest.mark.parametrize("j", [0, 3, 8])
def test_planar_layer_sharp_at_its_plane_and_monotone_blur(j):
    tex = _texture()
    stack = render_layers([Layer(tex, np.ones(tex.shape[:2], np.float32), focus_planes(CFG)[j])], CFG)
    assert stack.shape == (9, 128, 128, 3) and stack.dtype == np.float32
    assert np.abs(stack[j] - tex).max() < 1e-4
    lv = [_lap_var(stack[i]) for i in range(9)]
    for side in (range(j, 9), range(j, -1, -1)):
        seq = [lv[i] for i in side]
        assert all(a > b for a, b in zip(seq, seq[1:])), seq
    # colour is preserved by blurring (normalised kernel, reflect borders)
    assert np.abs(stack.mean(axis=(1, 2, 3)) - tex.mean()).max() < 5e-3


# ---------------------------------------------------------------- (c) occlusion


def _square_scene(fg_d, bg_d, S=128):
    bg = np.zeros((S, S, 3), np.float32)
    bg[..., 0] = 1.0  # red
    fg = np.zeros((S, S, 3), np.float32)
    fg[..., 1] = 1.0  # green
    a = np.zeros((S, S), np.float32)
    a[40:88, 40:88] = 1.0
    # deliberately given front-to-back: render_layers must sort by depth
    return [Layer(fg, a, fg_d), Layer(bg, np.ones((S, S), np.float32), bg_d)]


def test_sharp_foreground_not_bled_over_by_blurred_background():
    stack = render_layers(_square_scene(fg_d=20.0, bg_d=0.0), CFG)
    f = stack[0]  # focused near: foreground sharp, background blurred (r = 6.4 px)
    inside = f[40:88, 40:88]
    assert np.abs(inside - [0, 1, 0]).max() < 1e-5  # no red at all inside, even at the edge
    assert np.abs(f[39, 60] - [1, 0, 0]).max() < 1e-5  # just outside: background colour
    assert np.abs(f[5, 5] - [1, 0, 0]).max() < 1e-5


def test_blurred_foreground_spills_over_sharp_background():
    stack = render_layers(_square_scene(fg_d=20.0, bg_d=0.0), CFG)
    f = stack[8]  # focused far: background sharp, foreground blurred (r = 6.4 px)
    for y, x in [(38, 64), (37, 64), (64, 89), (64, 91)]:  # 1-3 px outside the square
        assert f[y, x, 1] > 0.1, (y, x, f[y, x])  # green spill
        assert f[y, x, 0] < 0.9
    for y, x in [(41, 64), (42, 64)]:  # just inside: background shows through
        assert f[y, x, 0] > 0.1
    assert np.abs(f[64, 64] - [0, 1, 0]).max() < 1e-5  # centre still pure foreground
    assert np.abs(f[10, 10] - [1, 0, 0]).max() < 1e-5  # far away: pure background
    assert np.allclose(f.sum(axis=-1), 1.0, atol=1e-4)  # no dark seams, no overshoot


def test_depth_map_layer_has_no_seams():
    S = 96
    d = np.tile(np.linspace(0.0, 20.0, S, dtype=np.float32)[:, None], (1, S))
    white = np.ones((S, S, 3), np.float32)
    stack = render_layers([Layer(white, np.ones((S, S), np.float32), d)], CFG)
    assert np.abs(stack - 1.0).max() < 1e-4


def test_render_from_depth():
    S = 96
    aif = _texture(S, 1)
    d = np.full((S, S), 2.0, np.float32)
    d[30:60, 30:60] = 18.0
    stack = render_from_depth(aif, d, CFG)
    assert stack.shape == (9, S, S, 3)
    # the near square is sharp at position ~0.2 (18 D lies between planes 0 and 1)
    assert np.abs(stack[1, 32:58, 32:58] - aif[32:58, 32:58]).max() < 0.35
    assert _lap_var(stack[0][30:60, 30:60]) > _lap_var(stack[8][30:60, 30:60])
    assert _lap_var(stack[8][:25]) > _lap_var(stack[0][:25])
    # constant colour + any depth map -> constant output (no seams / halos)
    flat = render_from_depth(np.full((S, S, 3), 0.5, np.float32), d, CFG)
    assert np.abs(flat - 0.5).max() < 1e-4


# ---------------------------------------------------------------- (d) scenes


def test_scene_determinism_and_variety():
    a, b, c = make_scene(123), make_scene(123), make_scene(124)
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.rgb, lb.rgb) and np.array_equal(la.alpha, lb.alpha)
        assert np.array_equal(np.asarray(la.diopters), np.asarray(lb.diopters))
    assert np.array_equal(a.aif, b.aif) and np.array_equal(a.depth_diopters, b.depth_diopters)
    assert np.array_equal(render_layers(a.layers), render_layers(b.layers))
    assert not np.array_equal(a.aif, c.aif)


def test_scene_contents():
    for seed in range(6):
        s = make_scene(seed, (96, 128))
        assert s.aif.shape == (96, 128, 3) and s.aif.dtype == np.float32
        assert 0.0 <= s.aif.min() and s.aif.max() <= 1.0
        assert s.depth_diopters.shape == (96, 128)
        assert CFG.far_diopters <= s.depth_diopters.min() and s.depth_diopters.max() <= CFG.near_diopters
        assert 3 <= len(s.layers) <= 10
        assert np.allclose(s.layers[0].alpha, 1.0)  # full-frame background
        assert s.layers[0].diopters <= CFG.far_diopters + CFG.diopter_range / 3 + 1e-9


def test_render_speed_128():
    scene = make_scene(7)
    render_layers(scene.layers)  # warm kernel caches
    t = time.perf_counter()
    render_layers(scene.layers)
    assert time.perf_counter() - t < 1.0  # loose bound; target is < 60 ms


# ---------------------------------------------------------------- (e) splits


def test_heldout_disjoint_from_train():
    train, held = SYNTHETIC_SPLITS["train"], SYNTHETIC_SPLITS["heldout"]
    assert (train.start, train.count) == (0, 1_000_000)
    assert (held.start, held.count) == (10_000_000, 256)
    assert held.start >= train.stop or train.start >= held.stop
    held_seeds = {split_seed("heldout", i) for i in range(held.count)}
    assert not any(s in train for s in held_seeds)
    assert split_seed("train", 5) == 5 and split_seed("heldout", 5) == 10_000_005
    with pytest.raises(IndexError):
        split_seed("heldout", 256)


def test_synthetic_dataset_items():
    ds = SyntheticFocalStacks("heldout", size=(48, 64), length=3)
    assert len(ds) == 3
    item = ds[1]
    assert item["seed"] == 10_000_001
    assert item["frames"].shape == (9, 3, 48, 64) and item["frames"].dtype == torch.float32
    assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
    assert item["depth"].shape == (48, 64) and item["depth"].dtype == torch.float32
    assert torch.equal(ds[1]["frames"], item["frames"])
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError):
        SyntheticFocalStacks("test")


# ---------------------------------------------------------------- (g) cache


def test_cache_round_trip(tmp_path):
    path = render_cache("heldout", 3, (32, 40), tmp_path / "sub" / "held.npy")
    raw = np.load(path)
    assert raw.shape == (3, 9, 32, 40, 3) and raw.dtype == np.uint8
    cached = CachedFocalStacks(path)
    live = SyntheticFocalStacks("heldout", size=(32, 40))
    assert len(cached) == 3
    for i in range(3):
        a, b = cached[i], live[i]
        assert a["seed"] == b["seed"] == 10_000_000 + i
        assert a["frames"].shape == (9, 3, 32, 40) and a["frames"].dtype == torch.float32
        assert (a["frames"] - b["frames"]).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.allclose(a["depth"], b["depth"], rtol=2e-3, atol=1e-2)
    # a bare array without sidecars: no depth / seed keys
    np.save(tmp_path / "bare.npy", raw[:2])
    bare = CachedFocalStacks(tmp_path / "bare.npy")
    assert len(bare) == 2 and set(bare[0]) == {"frames"}


# ---------------------------------------------------------------- (f) learn2refocus


def _write_scene(scene_dir, positions, size=(40, 60)):
    h, w = size
    sub = scene_dir / "images"
    sub.mkdir(parents=True)
    for p in positions:
        img = np.full((h, w, 3), 20 + 25 * p, np.uint8)
        img[:, :6] = (255, 0, 0)  # left/right stripes lie outside the central 40x40 crop
        img[:, -6:] = (0, 0, 255)
        Image.fromarray(img).save(sub / f"focal_position_{p:04d}_frame_0000.jpg", quality=95, subsampling=0)


def test_learn2refocus_loader(tmp_path):
    root = tmp_path / "l2r"
    _write_scene(root / "batch1" / "FSK_001", range(9))
    _write_scene(root / "FSK_002", [p for p in range(9) if p != 4])  # incomplete
    (root / "other").mkdir()
    with pytest.warns(UserWarning, match=r"FSK_002.*\[4\]"):
        ds = Learn2RefocusStacks(root, size=(16, 16))
    assert len(ds) == 1
    item = ds[0]
    assert item["scene"] == "batch1/FSK_001"
    f = item["frames"]
    assert f.shape == (9, 3, 16, 16) and f.dtype == torch.float32
    means = f.mean(dim=(1, 2, 3)).numpy()
    assert np.all(np.diff(means) > 0.05)  # ordered by focus position
    # the centre crop (40x40 of 40x60) removed the coloured side stripes
    assert float((f[:, 0] - f[:, 2]).abs().max()) < 0.05
    with pytest.warns(UserWarning):
        native = Learn2RefocusStacks(root, size=None)[0]["frames"]
    assert native.shape == (9, 3, 40, 60)


def test_learn2refocus_empty_root(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*FSK_"):
        Learn2RefocusStacks(empty)
    with pytest.raises(Learn2RefocusLayoutError):
        Learn2RefocusStacks(tmp_path / "does_not_exist")
