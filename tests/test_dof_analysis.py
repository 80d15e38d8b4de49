"""refocus_edge.dof: focus measure, all-in-focus fusion and depth from focus on stacks with known answers.

Every scene is rendered by the project's own layered defocus renderer (focalstacks.render), so the true
sharp image and the true depth of every pixel are known exactly. Textures are band-limited colour noise
(contrast and colour set per test), scenes are 128x128 with the default lens (9 frames, 20 D .. 0 D,
0.8 px of extra blur radius per frame of focus error).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy import ndimage

from refocus_edge.focalstacks.lens import LensConfig, focus_planes
from refocus_edge.focalstacks.render import Layer, composite_sharp, render_layers
from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks
from refocus_edge.dof.all_in_focus import AllInFocusConfig, all_in_focus, guided_filter
from refocus_edge.dof.depth import (
    DepthConfig,
    depth_from_focus,
    diopters_to_index,
    edge_aware_fill,
    index_to_diopters,
    refine_peak,
)
from refocus_edge.dof.focus_measure import box_mean, focus_confidence, focus_measure, gaussian_blur

S = 128
PLANES = focus_planes(LensConfig())
ONES = np.ones((S, S), np.float32)


def _texture(seed: int, mean, amplitude: float = 0.18) -> np.ndarray:
    """S x S x 3 band-limited colour noise around `mean` with std `amplitude` (float32 in [0, 1])."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((S, S, 3)), (1.0, 1.0, 0.0))
    noise /= noise.std()
    return np.clip(np.asarray(mean, np.float32) + amplitude * noise, 0.0, 1.0).astype(np.float32)


def _render(layers) -> torch.Tensor:
    """[9, 3, H, W] float32 focal stack of the layers."""
    return torch.from_numpy(np.ascontiguousarray(render_layers(layers).transpose(0, 3, 1, 2)))


def _sharp(layers) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(composite_sharp(layers).transpose(2, 0, 1)))


def _square(lo: int, hi: int) -> np.ndarray:
    a = np.zeros((S, S), np.float32)
    a[lo:hi, lo:hi] = 1.0
    return a


def _band(mask: np.ndarray, lo: float, hi: float) -> torch.Tensor:
    """Pixels outside `mask` whose distance to it lies in [lo, hi]."""
    d = ndimage.distance_transform_edt(~mask)
    return torch.from_numpy((d >= lo) & (d <= hi))


def _mean_abs(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    e = (a - b).abs().mean(0)
    return float(e[where].mean() if where is not None else e.mean())


# ----------------------------------------------------------------------------------- filters


def test_box_mean_matches_brute_force_at_all_radii():
    # Small radii take the shifted-add path, large ones the prefix-sum path; both clip at the border.
    x = torch.rand(3, 23, 31, generator=torch.Generator().manual_seed(0)) * 10 - 14
    for r in (1, 2, 4, 5, 9, 40):
        ref = torch.empty_like(x)
        for i in range(23):
            for j in range(31):
                ref[:, i, j] = x[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].double().mean((1, 2)).float()
        assert torch.allclose(box_mean(x, r), ref, atol=1e-5), r


def test_gaussian_blur_matches_scipy_and_keeps_the_mean():
    x = torch.rand(2, 40, 37, generator=torch.Generator().manual_seed(1))
    ref = ndimage.gaussian_filter(x.numpy(), (0, 1.5, 1.5), mode="mirror", truncate=3.0)
    assert np.abs(gaussian_blur(x, 1.5).numpy() - ref).max() < 1e-5
    assert torch.equal(gaussian_blur(x, 0.0), x)


def test_guided_filter_smooths_flat_regions_but_keeps_guide_edges():
    g = torch.Generator().manual_seed(2)
    # Guide: two flat colours split by a vertical edge. Source: the same step plus noise.
    guide = torch.zeros(3, 64, 64)
    guide[:, :, 32:] = 0.8
    src = (guide[:1] + 0.1 * torch.randn(1, 64, 64, generator=g))
    out = guided_filter(guide, src, radius=6, eps=1e-4)[0]
    plain = box_mean(src, 6)[0]
    # The noise is averaged away inside each side...
    assert out[:, 4:26].std() < 0.25 * src[0, :, 4:26].std()
    # ...while the step survives next to the edge, where an unguided box filter smears it.
    assert (out[:, 31] - 0.0).abs().mean() < 0.03 and (out[:, 32] - 0.8).abs().mean() < 0.03
    assert (plain[:, 31] - 0.0).abs().mean() > 0.2
    # The fast (subsampled) variant stays close to the exact filter.
    fast = guided_filter(guide, src, radius=8, eps=1e-4, subsample=2)[0]
    exact = guided_filter(guide, src, radius=8, eps=1e-4)[0]
    assert (fast - exact).abs().mean() < 0.02


def test_refine_peak_recovers_the_vertex_of_a_sampled_gaussian():
    frames = torch.arange(9.0)
    for centre in (0.0, 2.3, 4.5, 6.8, 8.0):
        log_curve = -0.5 * ((frames - centre) / 1.2) ** 2  # log of a Gaussian focus curve
        est = refine_peak(log_curve.view(9, 1, 1).expand(9, 2, 2).contiguous())
        assert torch.allclose(est, torch.full((2, 2), centre), atol=1e-4), centre
    # A flat curve has no vertex: the arg-max (frame 0) is kept, not a division by zero.
    assert torch.equal(refine_peak(torch.zeros(9, 1, 1)), torch.zeros(1, 1))


def test_index_diopter_conversion_follows_the_lens():
    idx = torch.arange(9.0)
    assert np.allclose(index_to_diopters(idx).numpy(), PLANES)
    assert index_to_diopters(0.0) == 20.0 and index_to_diopters(8.0) == 0.0 and index_to_diopters(4) == 10.0
    assert np.allclose(diopters_to_index(index_to_diopters(np.array([0.3, 4.5, 7.9]))), [0.3, 4.5, 7.9])
    assert index_to_diopters(2.0, near=10.0, far=2.0, num=5) == pytest.approx(6.0)


def test_inputs_are_validated():
    with pytest.raises(ValueError):
        focus_measure(torch.rand(9, 4, 8, 8))
    with pytest.raises(ValueError):
        all_in_focus(torch.rand(3, 8, 8))
    with pytest.raises(ValueError):
        AllInFocusConfig(temperature=0.0)
    with pytest.raises(ValueError):
        DepthConfig(peak_fit="cubic")


def test_analyse_stack_is_the_fusion_and_the_filled_depth_of_one_pass():
    frames = _render([Layer(_texture(12, (0.5, 0.5, 0.5)), ONES, float(PLANES[3]))])
    from refocus_edge.dof.analysis import analyse_stack

    res = analyse_stack(frames)
    ref = depth_from_focus(frames)
    assert res.depth_source == "filled" and torch.equal(res.depth, ref.filled)
    assert torch.equal(res.aif, ref.aif.image.clamp(0, 1)) and torch.equal(res.confidence, ref.confidence)
    assert res.aif.shape == (3, S, S) and res.depth.shape == res.confidence.shape == (S, S)
    assert set(res.timings) == {"all_in_focus", "depth"}


@pytest.mark.parametrize("frames, fragment", [
    (np.zeros((9, 3, 8, 8), np.float32), "torch tensor"),
    (torch.zeros(8, 3, 8, 8), "[9, 3, H, W]"),
    (torch.zeros(9, 4, 8, 8), "[9, 3, H, W]"),
    (torch.zeros(9, 3, 1, 8), "H, W >= 2"),
    (torch.zeros(9, 3, 8, 8, dtype=torch.uint8), "divide uint8 frames by 255"),
    (torch.full((9, 3, 8, 8), float("nan")), "NaN"),
])
def test_analyse_stack_refuses_bad_stacks_with_typed_errors(frames, fragment):
    from refocus_edge.dof.analysis import analyse_stack
    from refocus_edge.runtime.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as info:
        analyse_stack(frames)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------ known scenes


@pytest.mark.parametrize("k", [1, 4, 7])
def test_plane_on_a_focus_plane_is_found_and_fused_to_its_sharp_frame(k):
    frames = _render([Layer(_texture(k, (0.5, 0.5, 0.5)), ONES, float(PLANES[k]))])
    res = depth_from_focus(frames)
    err = (res.index - k).abs()
    assert float(err.median()) < 0.05
    assert float(torch.quantile(err.flatten(), 0.99)) < 0.3
    # Only frame k is sharp, so the fusion is frame k itself (up to the slightly softer neighbours).
    assert _mean_abs(res.aif.image, frames[k]) < 0.002
    assert float(res.aif.weights[k].mean()) > 0.95
    # Textured everywhere and one frame clearly sharpest: confident almost everywhere.
    assert float(res.confidence.median()) > 0.6
    assert 0.0 <= float(res.index.min()) and float(res.index.max()) <= 8.0


@pytest.mark.parametrize("t", [3.5, 0.5, 6.5])
def test_plane_halfway_between_focus_planes_gets_a_half_index(t):
    frames = _render([Layer(_texture(10, (0.5, 0.5, 0.5)), ONES, float(index_to_diopters(t)))])
    res = depth_from_focus(frames)
    assert abs(float(res.index.median()) - t) < 0.1
    assert float((res.index - t).abs().mean()) < 0.15
    # The plain arg-max of the same focus volume is a whole frame, off by half a frame.
    assert float((res.log_focus.argmax(0).float() - t).abs().mean()) > 0.45


def test_plane_a_quarter_frame_off_is_refined_towards_it():
    t = 5.25
    frames = _render([Layer(_texture(11, (0.5, 0.5, 0.5)), ONES, float(index_to_diopters(t)))])
    res = depth_from_focus(frames)
    assert abs(float(res.index.median()) - t) < 0.1


@pytest.fixture(scope="module")
def two_planes():
    """Near textured square (frame 1) in front of a far textured background (frame 7)."""
    mask = _square(32, 96)
    bg = Layer(_texture(2, (0.3, 0.45, 0.65)), ONES, float(PLANES[7]))
    fg = Layer(_texture(3, (0.75, 0.5, 0.3)), mask, float(PLANES[1]))
    frames = _render([bg, fg])
    return frames, _sharp([bg, fg]), mask > 0, depth_from_focus(frames)


def test_two_planes_depth_order_and_values(two_planes):
    frames, _, mask, res = two_planes
    inner = torch.from_numpy(ndimage.binary_erosion(mask, iterations=3))
    outer = torch.from_numpy(ndimage.binary_erosion(~mask, iterations=3))
    near, far = res.index[inner], res.index[outer]
    assert float(near.median()) < float(far.median())
    assert abs(float(near.median()) - 1.0) < 0.1 and abs(float(far.median()) - 7.0) < 0.1
    # Per pixel, not just on average: almost every square pixel is nearer than every background pixel.
    assert float((near < 4.0).float().mean()) > 0.97 and float((far > 4.0).float().mean()) > 0.97


def test_two_planes_fusion_is_sharper_than_every_frame_and_close_to_the_truth(two_planes):
    frames, sharp, _, res = two_planes
    image = res.aif.image
    assert torch.allclose(res.aif.weights.sum(0), torch.ones(S, S), atol=1e-5)
    assert float(res.aif.weights.min()) >= 0.0
    fm_aif = float(focus_measure(image[None]).mean())
    fm_frames = focus_measure(frames).mean((1, 2))
    assert fm_aif > 1.2 * float(fm_frames.max())
    assert fm_aif > 0.85 * float(focus_measure(sharp[None]).mean())
    best_frame = min(_mean_abs(frames[k], sharp) for k in range(9))
    assert _mean_abs(image, sharp) < 0.01
    assert _mean_abs(image, sharp) < 0.25 * best_frame


def _halo_scene():
    """A bright, strongly textured square (frame 1) over a dark, weakly textured far background (frame 7).

    The classic halo trap: the square's sharp edge has far more focus energy than the background's
    own texture, so a focus measure aggregated over a wide window makes the background beside the
    square pick the square's frame, in which the background is blurred.
    """
    mask = _square(32, 96)
    bg = Layer(_texture(20, (0.2, 0.25, 0.35), amplitude=0.06), ONES, float(PLANES[7]))
    fg = Layer(_texture(21, (0.9, 0.8, 0.6)), mask, float(PLANES[1]))
    return _render([bg, fg]), _sharp([bg, fg]), mask > 0


def test_no_halo_next_to_an_occluding_edge():
    frames, sharp, mask = _halo_scene()
    res = all_in_focus(frames)
    # Background side, 3..6 px from the square: beyond the blurred square's worst spill in the far frame.
    band = _band(mask, 3, 6)
    ours = _mean_abs(res.image, sharp, band)
    fg_frame = _mean_abs(frames[1], sharp, band)
    assert ours < 0.6 * fg_frame
    # The check is sensitive: a naive fusion (hard arg-max of a wide-window measure) does halo here.
    naive_w = torch.nn.functional.one_hot(focus_measure(frames, sigma=3.0).argmax(0), 9).permute(2, 0, 1).float()
    naive = torch.einsum("fchw,fhw->chw", frames, naive_w)
    assert _mean_abs(naive, sharp, band) > 0.9 * fg_frame
    # Also in the two-plane scene with strong background texture, over the whole 1..5 px band.
    mask2 = _square(32, 96)
    bg = Layer(_texture(2, (0.3, 0.45, 0.65)), ONES, float(PLANES[7]))
    fg = Layer(_texture(3, (0.75, 0.5, 0.3)), mask2, float(PLANES[1]))
    frames2, sharp2 = _render([bg, fg]), _sharp([bg, fg])
    band2 = _band(mask2 > 0, 1, 5)
    assert _mean_abs(all_in_focus(frames2).image, sharp2, band2) < 0.6 * _mean_abs(frames2[1], sharp2, band2)


def test_confidence_is_low_on_flat_regions_and_high_on_texture():
    tex = _texture(4, (0.5, 0.5, 0.5))
    tex[:, :64] = 0.5  # left half: flat grey, same plane
    frames = _render([Layer(tex, ONES, float(PLANES[4]))])
    res = depth_from_focus(frames)
    flat, textured = res.confidence[8:-8, 4:40], res.confidence[8:-8, 72:-8]
    assert float(flat.max()) < 0.1
    assert float(textured.mean()) > 0.6 and float(textured.median()) > 0.6
    assert 0.0 <= float(res.confidence.min()) and float(res.confidence.max()) <= 1.0
    # The flat half belongs to the same plane; the fill hands it the textured half's depth.
    assert float((res.filled[8:-8, 4:40] - 4.0).abs().max()) < 0.2
    # focus_confidence directly: a flat curve scores 0, a single spike ~1.
    spike = torch.full((9, 1, 1), -20.0)
    spike[3] = 0.0
    assert float(focus_confidence(torch.zeros(9, 1, 1))) < 1e-6
    assert float(focus_confidence(spike)) > 0.99


def test_fill_takes_depth_from_the_same_surface_not_across_an_edge():
    # Near square whose 84x84 interior is one flat colour, inside a 6 px textured rim of the same hue,
    # over a far blue textured background. The interior has no focus information of its own.
    mask = _square(16, 112)
    rgb = _texture(5, (0.75, 0.5, 0.3))
    rgb[22:106, 22:106] = (0.75, 0.5, 0.3)
    bg = Layer(_texture(2, (0.3, 0.45, 0.65)), ONES, float(PLANES[7]))
    frames = _render([bg, Layer(rgb, mask, float(PLANES[1]))])
    res = depth_from_focus(frames)
    deep = (slice(40, 88), slice(40, 88))
    assert float(res.confidence[deep].max()) < 0.1
    assert float((res.filled[deep] - 1.0).abs().max()) < 0.1  # the rim's depth, not the background's
    # Confident pixels keep their own estimate exactly.
    conf = res.confidence >= DepthConfig().fill_full_confidence
    assert torch.equal(res.filled[conf], res.index[conf])
    # Without the fill there is no filled map, and the raw index is the same (reusing the fusion).
    no_fill = depth_from_focus(frames, DepthConfig(fill=False), aif=res.aif)
    assert no_fill.filled is None and torch.equal(no_fill.index, res.index)


def test_edge_aware_fill_stops_at_colour_edges():
    # Two colour halves; only one confident pixel column in each, with different values.
    guide = torch.zeros(3, 32, 64)
    guide[:, :, 32:] = 1.0
    values = torch.zeros(32, 64)
    values[:, 2] = 1.0
    values[:, 61] = 5.0
    conf = torch.zeros(32, 64)
    conf[:, 2] = conf[:, 61] = 1.0
    out = edge_aware_fill(values, conf, guide, full_confidence=0.5, spatial=16.0, color_sigma=0.05)
    assert float((out[:, :32] - 1.0).abs().max()) < 0.01
    assert float((out[:, 32:] - 5.0).abs().max()) < 0.01


def test_heldout_synthetic_stack():
    """A real held-out scene (several objects, depth edges, point lights): sane depth and a real gain."""
    from refocus_edge.focalstacks.scenes import make_scene
    from refocus_edge.focalstacks.synthetic import split_seed

    item = SyntheticFocalStacks("heldout", size=(S, S), length=1)[0]
    frames = item["frames"]
    true_index = diopters_to_index(item["depth"])
    sharp = _sharp(make_scene(split_seed("heldout", 0), (S, S)).layers)
    res = depth_from_focus(frames)
    err = (res.index - true_index).abs()
    assert float(err.mean()) < 0.5 and float((err < 0.5).float().mean()) > 0.85
    best_frame = min(_mean_abs(frames[k], sharp) for k in range(9))
    assert _mean_abs(res.aif.image, sharp) < 0.5 * best_frame


def test_benchmark_smoke(tmp_path):
    from refocus_edge.runtime.errors import MissingDependencyError
    from refocus_edge.runtime.metrics import lpips

    try:
        lpips.weights_path("alex")
    except MissingDependencyError as exc:  # the README's set-up installs them; CI must have them
        if os.environ.get("CI"):
            raise
        pytest.skip(f"LPIPS weights unavailable: {exc}")
    from benchmarks.dof_analysis import evaluate, write_dof_report

    res = evaluate(count=1, timing_repeats=1, timing_sizes=(64,), progress=False)
    assert res["all_in_focus"]["lpips"] < res["all_in_focus"]["lpips_best_frame"]
    assert 0 <= res["depth"]["within_half_frame"] <= 1 and res["depth"]["diopter_mae"] == pytest.approx(
        2.5 * res["depth"]["index_mae"])
    paths = write_dof_report(res, tmp_path)
    assert all(p.is_file() for p in paths.values())
    assert "LPIPS" in paths["markdown"].read_text()
