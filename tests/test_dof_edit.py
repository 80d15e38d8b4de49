"""Depth-of-field editing: aperture kernels, the layered bokeh renderer against the project's own stack
renderer (ground-truth all-in-focus image and depth, so these tests do not depend on depth from focus),
highlight shapes, and `refocus edit` end to end including every bad input."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from refocus_edge.focalstacks.lens import LensConfig, focus_planes
from refocus_edge.focalstacks.render import Layer, composite_sharp, disk_kernel, front_depth, render_layers
from refocus_edge.focalstacks.scenes import texture_photos
from refocus_edge.cli.main import main
from refocus_edge.dof.aperture import kernel, parse_shape
from refocus_edge.dof.bokeh import DofConfig, DofRenderer, lens_radius_per_step, render_dof
from refocus_edge.runtime.errors import InputImageError, InvalidArgumentError
from refocus_edge.runtime.metrics.lpips import LPIPS

PLANES = focus_planes(LensConfig())  # diopters of focus positions 0..8


def _mask(k: torch.Tensor) -> np.ndarray:
    k = k.numpy()
    return k > 0.5 * k.max()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _rotate(mask: np.ndarray, degrees: float) -> np.ndarray:
    return ndimage.rotate(mask.astype(np.float32), degrees, reshape=False, order=1) > 0.5


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("spec", ["circle", "blades:5", "blades:6", "blades:7:10", "heart", "star"])
@pytest.mark.parametrize("radius", [0.8, 3.3, 12.0, 30.0])
def test_kernels_are_normalised_centred_and_sized(spec, radius):
    k = kernel(spec, radius)
    assert k.dtype == torch.float32 and k.ndim == 2 and k.shape[0] == k.shape[1] == 2 * math.ceil(radius + 0.5) + 1
    assert abs(float(k.sum()) - 1.0) < 1e-5 and float(k.min()) >= 0
    # centroid at the centre pixel: a blur must not shift the image
    ys, xs = torch.meshgrid(torch.arange(k.shape[0]), torch.arange(k.shape[1]), indexing="ij")
    c = k.shape[0] // 2
    assert abs(float((k * ys).sum()) - c) < 0.35 and abs(float((k * xs).sum()) - c) < 0.35
    # anti-aliased: edge pixels hold partial coverage, not just 0 or the plateau value
    if radius >= 3:
        plateau = float(k.max())
        assert ((k > 0.05 * plateau) & (k < 0.95 * plateau)).any()


def test_circle_is_the_renderers_disk_and_fully_symmetric():
    for r in (0.6, 2.5, 7.25, 20.0):
        assert np.abs(kernel("circle", r).numpy() - disk_kernel(r)).max() < 1e-7
    k = kernel("circle", 9.0)
    for t in (k.flip(0), k.flip(1), k.T):
        assert torch.allclose(k, t, atol=1e-8)
    assert kernel("circle", 0.3).shape == (1, 1)  # below half a pixel: identity


def test_heart_is_upright_and_not_symmetric_top_bottom():
    k = kernel("heart", 20.0)
    assert torch.allclose(k, k.flip(1), atol=1e-7)  # left-right symmetric
    m = _mask(k)
    assert _iou(m, m[::-1]) < 0.85  # but not top-bottom
    rows = np.flatnonzero(m.any(1))
    top, bottom = m[rows[0] + 2], m[rows[-1] - 2]
    # two lobes on top (two runs of open pixels), one narrow point at the bottom
    runs = np.flatnonzero(np.diff(top.astype(int)) == 1).size
    assert runs == 2 and bottom.sum() < 0.3 * m.sum(1).max()
    assert torch.allclose(kernel("heart", 20.0, flip=True), k.flip(0).flip(1))


def test_blades_six_has_six_fold_symmetry():
    m = _mask(kernel("blades:6", 30.0))
    assert _iou(m, _rotate(m, 60)) > 0.97 and _iou(m, _rotate(m, 120)) > 0.97
    assert _iou(m, _rotate(m, 30)) < 0.95  # a hexagon, not a disk
    m5 = _mask(kernel("blades:5", 30.0))
    assert _iou(m5, _rotate(m5, 72)) > 0.97 and _iou(m5, _rotate(m5, 36)) < 0.93
    # rotation option: blades:6:30 is blades:6 turned by 30 degrees
    rot = _mask(kernel("blades:6:30", 30.0))
    assert _iou(rot, _rotate(m, 30)) > 0.95 and _iou(rot, m) < 0.95


def test_star_has_five_points_and_holes_between_them():
    r = 30.0
    k = kernel("star", r).numpy()
    c = k.shape[0] // 2

    def at(deg, frac):
        a = math.radians(deg)
        return k[int(round(c - frac * r * math.sin(a))), int(round(c + frac * r * math.cos(a)))]

    for i in range(5):
        point = 90 + 72 * i
        assert at(point, 0.8) > 0.5 * k.max()  # along a point: open
        assert at(point + 36, 0.8) == 0.0  # between two points: a hole
    m = _mask(torch.from_numpy(k))
    assert _iou(m, _rotate(m, 72)) > 0.95


def test_png_mask_alpha_and_grey(tmp_path):
    # a triangle pointing up, as alpha on transparent, and as white on black
    h = 64
    yy, xx = np.mgrid[0:h, 0:h]
    tri = (yy >= 8) & (np.abs(xx - 31.5) <= (yy - 8) * 0.5)
    rgba = np.zeros((h, h, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = tri * 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "tri_alpha.png")
    Image.fromarray((tri * 255).astype(np.uint8), "L").save(tmp_path / "tri_grey.png")
    ka = kernel(str(tmp_path / "tri_alpha.png"), 15.0)
    kg = kernel(str(tmp_path / "tri_grey.png"), 15.0)
    assert ka.shape == (33, 33) and abs(float(ka.sum()) - 1) < 1e-5
    assert torch.allclose(ka, kg, atol=1e-6)
    m = _mask(ka)
    rows = np.flatnonzero(m.any(1))
    assert m[rows[0]].sum() < m[rows[-1]].sum() / 4  # narrow top, wide base: not flipped
    assert (rows[-1] - rows[0] + 1) >= 20  # scaled to the radius, not left at 64 px
    ap = parse_shape(str(tmp_path / "tri_alpha.png"))
    assert ap.kind == "mask" and ap.name.endswith("tri_alpha.png")


@pytest.mark.parametrize("spec, fragment", [
    ("", "empty shape"),
    ("blades", "needs a blade count"),
    ("blades:2", "must be 3..32"),
    ("blades:six", "must be an integer"),
    ("blades:6:x", "rotation"),
    ("hexagon", "unknown shape 'hexagon'"),
])
def test_parse_shape_errors_are_one_line(spec, fragment):
    with pytest.raises(InvalidArgumentError) as err:
        parse_shape(spec)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg


def test_parse_shape_png_errors_name_the_file(tmp_path):
    with pytest.raises(InputImageError, match="not found") as err:
        parse_shape(str(tmp_path / "nope.png"))
    assert err.value.path == tmp_path / "nope.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(InputImageError, match="not a readable image") as err:
        parse_shape(str(bad))
    assert str(bad) in str(err.value)
    black = tmp_path / "black.png"
    Image.new("L", (16, 16), 0).save(black)
    with pytest.raises(InputImageError, match="empty"):
        parse_shape(str(black))


# ----------------------------------------------------------------------------- rendering vs the renderer

SIZE = 128


def _photo(i: int, size: int = SIZE) -> np.ndarray:
    im = texture_photos()[i]
    step = min(im.shape[0], im.shape[1]) // size
    return np.ascontiguousarray(im[: size * step : step, : size * step : step][:size, :size])


def _scene():
    """Background at plane 8, a disc at plane 4, a rectangle at plane 1 (flat layers at focus planes)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    disc = np.clip(0.5 - (np.hypot(yy - 40, xx - 84) - 26), 0, 1).astype(np.float32)
    rect = ((yy >= 72) & (yy < 116) & (xx >= 12) & (xx < 60)).astype(np.float32)
    layers = [
        Layer(_photo(0), np.ones((SIZE, SIZE), np.float32), float(PLANES[8])),
        Layer(_photo(1), disc, float(PLANES[4])),
        Layer(_photo(2), rect, float(PLANES[1])),
    ]
    frames = render_layers(layers)
    aif = composite_sharp(layers)
    index = (20.0 - front_depth(layers)) / 2.5
    return frames, torch.from_numpy(aif).permute(2, 0, 1), torch.from_numpy(index), disc, rect


@pytest.fixture(scope="module")
def scene():
    return _scene()


@pytest.fixture(scope="module")
def lpips():
    return LPIPS("alex")


def _lpips(model, a_chw: torch.Tensor, b_hwc: np.ndarray) -> float:
    b = torch.from_numpy(b_hwc).permute(2, 0, 1)
    with torch.no_grad():
        return float(model(a_chw[None] * 2 - 1, b[None] * 2 - 1)[0])


def test_radius_per_step_is_the_projects_lens():
    assert lens_radius_per_step(512) == pytest.approx(0.05 * 512 / 8)
    assert DofConfig().step_radius(128) == pytest.approx(0.8)
    assert DofConfig(radius_per_step=2.0).step_radius(128) == 2.0


@pytest.mark.parametrize("k", [1, 4, 8])
def test_edit_at_a_focus_plane_matches_the_renderers_frame(scene, lpips, k):
    frames, aif, index, _, _ = scene
    edit = render_dof(aif, index, focus=k, strength=1.0, shape="circle")
    assert edit.shape == (3, SIZE, SIZE) and float(edit.min()) >= 0 and float(edit.max()) <= 1
    d_edit = _lpips(lpips, edit, frames[k])
    d_aif = _lpips(lpips, aif, frames[k])  # doing nothing: the all-in-focus image itself
    mae = float((edit.permute(1, 2, 0).numpy() - frames[k]).__abs__().mean())
    # measured (default config): LPIPS 0.078 / 0.039 / 0.014 and MAE 0.055 / 0.036 / 0.010 for
    # k = 1 / 4 / 8, while the all-in-focus image itself scores 0.51 / 0.40 / 0.12 LPIPS. Most of the
    # gap is linear-light blending: blurred regions come out brighter than the renderer's, which
    # blurs the stored (sRGB-encoded) values.
    assert d_edit < 0.12, d_edit
    assert d_edit < 0.25 * d_aif, (d_edit, d_aif)
    assert mae < 0.08, mae
    # with the renderer's own convention it comes closer still: measured LPIPS 0.046 / 0.025 / 0.015,
    # MAE 0.009 / 0.006 / 0.006
    plain = render_dof(aif, index, focus=k, strength=1.0, config=DofConfig(linear_light=False))
    assert _lpips(lpips, plain, frames[k]) < 0.07
    assert float((plain.permute(1, 2, 0).numpy() - frames[k]).__abs__().mean()) < 0.015


def test_in_focus_layer_comes_back_unchanged(scene):
    _, aif, index, disc, rect = scene
    edit = render_dof(aif, index, focus=4, strength=2.0, shape="heart")
    # the disc's interior, away from its own edge and from the blurred rectangle in front of it
    far_from_rect = ndimage.distance_transform_edt(rect < 0.5) > 12
    inner = ndimage.binary_erosion(disc > 0.99, iterations=3) & far_from_rect
    assert inner.sum() > 500
    diff = (edit - aif).abs().amax(0).numpy()
    assert diff[inner].max() < 1e-4
    # while the background and the rectangle are blurred
    bg = (disc == 0) & (rect == 0) & far_from_rect
    assert diff[bg].mean() > 0.02 and diff[ndimage.binary_erosion(rect > 0, iterations=4)].mean() > 0.02


def _lap_energy(img: torch.Tensor, region: np.ndarray) -> float:
    g = img.mean(0).numpy().astype(np.float64)
    return float((ndimage.laplace(g) ** 2)[region].mean())


def test_blur_grows_with_distance_from_focus_and_with_strength(scene):
    _, aif, index, disc, rect = scene
    bg = (disc == 0) & (rect == 0)
    bg &= ndimage.distance_transform_edt(bg) > 8  # away from the objects' blurred edges
    bg[:8], bg[-8:], bg[:, :8], bg[:, -8:] = False, False, False, False
    by_focus = [_lap_energy(render_dof(aif, index, f, 1.0), bg) for f in (8, 6, 4, 2, 0)]
    assert all(a > 1.2 * b for a, b in zip(by_focus, by_focus[1:])), by_focus
    by_strength = [_lap_energy(render_dof(aif, index, 4, s), bg) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a > 1.2 * b for a, b in zip(by_strength, by_strength[1:])), by_strength
    assert torch.equal(render_dof(aif, index, 4, 0.0), aif)  # strength 0: nothing to blur


def test_occlusion_foreground_spills_over_background_never_the_reverse():
    n = 96
    img = torch.zeros(3, n, n)
    img[2] = 1.0  # blue background ...
    index = torch.full((n, n), 8.0)
    img[:, 32:64, 32:64] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # ... a red square in front
    index[32:64, 32:64] = 0.0
    radius = 8 * DofConfig().step_radius(n)  # 4.8 px
    ring = np.zeros((n, n), bool)
    ring[29:67, 29:67] = True
    ring[32:64, 32:64] = False  # the 3 px just outside the square

    # focused on the background: the blurred red square spreads over the sharp blue
    back = render_dof(img, index, focus=8, strength=1.0)
    assert float(back[0][ring].mean()) > 0.2
    inside = back[:, 40:56, 40:56]  # deeper inside than the radius: still pure red
    assert torch.allclose(inside, torch.tensor([1.0, 0, 0])[:, None, None], atol=1e-4)

    # focused on the square: it stays sharp, and the blurred background gets no red from it
    front = render_dof(img, index, focus=0, strength=1.0)
    assert torch.allclose(front[:, 32:64, 32:64], img[:, 32:64, 32:64], atol=1e-4)
    outside = np.ones((n, n), bool)
    outside[32:64, 32:64] = False
    assert float(front[0][outside].max()) < 1e-3  # no red outside the square
    assert float(front[2][ring].min()) > 0.95  # the hidden background was filled blue, not black
    assert radius > 3


def test_renderer_reuses_work_without_changing_results(scene):
    _, aif, index, _, _ = scene
    r = DofRenderer(aif, index)
    for f, s, shape in [(1, 1.0, "circle"), (4, 2.0, "heart"), (1, 1.0, "circle"), (7.5, 0.5, "star")]:
        assert torch.equal(r.render(f, s, shape), render_dof(aif, index, f, s, shape))
    # one shared slice step and canvas margin for a grid of edits (as the viewer does): close to the
    # individual edits, and the shared slices are computed once
    step, pad = 0.5, r.pad_for(r.max_radius(0, 3.0))
    for f in (0, 4, 8):
        a, b = r.render(f, 2.0, step=step, pad=pad), render_dof(aif, index, f, 2.0)
        assert float((a - b).abs().mean()) < 0.01
    cached = len(r._cache)
    r.render(2, 2.0, step=step, pad=pad)  # another integer focus, same step: the same slices
    r.render(2, 2.0, "heart", step=step, pad=pad)  # another shape: still the same slices
    assert len(r._cache) == cached


# ----------------------------------------------------------------------------- highlights


def _point_light(n: int = 256, light_index: float = 8.0):
    img = torch.full((3, n, n), 0.03)
    img[:, n // 2, n // 2] = 1.0  # a one-pixel clipped light: its defocused image is the kernel itself
    index = torch.full((n, n), light_index)
    return img, index


def _highlight_mask(out: torch.Tensor) -> np.ndarray:
    lum = out.mean(0).numpy()
    base = np.median(lum)
    return lum > base + 0.5 * (lum.max() - base)


def _crop_like(mask: np.ndarray, k: torch.Tensor) -> np.ndarray:
    n, h = mask.shape[0], k.shape[0] // 2
    return mask[n // 2 - h : n // 2 + h + 1, n // 2 - h : n // 2 + h + 1]


@pytest.mark.parametrize("shape, other", [("heart", "circle"), ("blades:6", "circle"), ("star", "circle")])
def test_point_light_takes_the_aperture_shape(shape, other):
    img, index = _point_light()
    out = render_dof(img, index, focus=0, strength=1.0, shape=shape)
    r = 8 * DofConfig().step_radius(256)  # 12.8 px
    k = kernel(shape, r)
    got = _crop_like(_highlight_mask(out), k)
    assert _highlight_mask(out).sum() == got.sum()  # the whole highlight lies in the kernel's box
    iou = _iou(got, _mask(k))
    assert iou > 0.75, iou
    assert iou > _iou(got, _mask(kernel(other, r))) + 0.05
    # the boost keeps the defocused light bright; without it the disk fades towards the background
    faint = render_dof(img, index, focus=0, strength=1.0, shape=shape, config=DofConfig(highlight_gain=1.0))
    assert float(out.mean(0).max()) > 1.5 * float(faint.mean(0).max())


def test_heart_is_upright_behind_focus_and_flipped_in_front():
    r = 8 * DofConfig().step_radius(256)
    k = kernel("heart", r)
    img, index = _point_light(light_index=8.0)
    behind = _crop_like(_highlight_mask(render_dof(img, index, focus=0, shape="heart")), k)
    img, index = _point_light(light_index=0.0)
    front = _crop_like(_highlight_mask(render_dof(img, index, focus=8, shape="heart")), k)
    up, down = _mask(k), _mask(k)[::-1, ::-1]
    assert _iou(behind, up) > 0.75 and _iou(behind, up) > _iou(behind, down) + 0.1
    assert _iou(front, down) > 0.75 and _iou(front, down) > _iou(front, up) + 0.1
    img, index = _point_light(light_index=0.0)
    same = _crop_like(_highlight_mask(render_dof(img, index, focus=8, shape="heart",
                                                 config=DofConfig(flip_foreground=False))), k)
    assert _iou(same, up) > 0.75


def test_large_bright_areas_are_not_boosted():
    n = 128
    img = torch.full((3, n, n), 0.2)
    img[:, :, 64:] = 1.0  # half the frame clipped white: a bright surface, not a light
    index = torch.full((n, n), 8.0)
    out = render_dof(img, index, focus=0, strength=1.0)
    plain = render_dof(img, index, focus=0, strength=1.0, config=DofConfig(highlight_gain=1.0))
    assert torch.allclose(out, plain, atol=1e-5)


def test_render_dof_rejects_bad_arguments():
    img, index = torch.rand(3, 16, 16), torch.zeros(16, 16)
    for kwargs, fragment in [
        (dict(image=torch.rand(16, 16), depth_index=index, focus=1), "image must be [3, H, W]"),
        (dict(image=img, depth_index=torch.zeros(8, 8), focus=1), "depth_index must be"),
        (dict(image=img, depth_index=index, focus=float("nan")), "focus must be"),
        (dict(image=img, depth_index=index, focus=1, strength=-1), "strength must be"),
    ]:
        with pytest.raises(InvalidArgumentError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            render_dof(**kwargs)
    with pytest.raises(InvalidArgumentError, match="max_slices"):
        DofConfig(max_slices=1)


# ----------------------------------------------------------------------------- CLI


FRAMES = [f"frame_{i}.png" for i in range(9)]
OUTPUTS = ["edited.png", "all_in_focus.png", "depth.png", "confidence.png", "viewer.html", "edit.json"]


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory, scene):
    """A stack folder as `refocus run` writes it, from the renderer's frames of the test scene."""
    from refocus_edge.app.outputs import write_stack

    frames = scene[0]
    out = tmp_path_factory.mktemp("stack") / "stack"
    u8 = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    write_stack(out, u8, icc_profile=None, input_position=4, metadata={"test": True}, force=False)
    return out


def _copy_stack(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in FRAMES:
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _assert_clean_failure(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("refocus: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_edit_writes_all_outputs(stack_dir, tmp_path, capsys):
    import json

    out = tmp_path / "edit"
    code = main(["edit", str(stack_dir), "--focus", "4", "--strength", "1.5", "--shape", "blades:6",
                 "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert stdout.strip() == str(out.absolute())
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    for name in OUTPUTS[:4]:
        assert Image.open(out / name).size == (SIZE, SIZE)
    depth = np.asarray(Image.open(out / "depth.png").convert("RGB"), np.float32)
    # near = warm: the rectangle (plane 1) is redder than the background (plane 8)
    assert depth[90, 35, 0] - depth[90, 35, 2] > depth[10, 10, 0] - depth[10, 10, 2] + 50
    page = (out / "viewer.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 9 * 4 + 2  # edit grid + all-in-focus + depth
    assert 'id="focus"' in page and 'id="strength"' in page and "http" not in page.replace("https://", "")
    meta = json.loads((out / "edit.json").read_text())
    assert meta["focus"] == 4 and meta["strength"] == 1.5 and meta["shape"] == "blades:6"
    for stage in ("load", "all_in_focus", "depth", "render", "viewer"):
        assert f"{stage} " in err and stage in meta["timings_s"]
    assert "write " in err  # (edit.json is itself part of the write, so it cannot hold that time)
    assert "depth slices" in err
    # no staging folder left behind
    assert [p.name for p in tmp_path.iterdir()] == ["edit"]

    # an existing non-empty --out is refused without --force, replaced with it (user files kept)
    (out / "notes.txt").write_text("mine")
    before = (out / "edited.png").read_bytes()
    code = main(["edit", str(stack_dir), "--focus", "0", "--out", str(out), "--quiet"])
    _, err = capsys.readouterr()
    _assert_clean_failure(code, err, str(out), "--force")
    assert (out / "edited.png").read_bytes() == before
    # --force, and a user PNG mask as the aperture
    mask = tmp_path / "tri.png"
    yy, xx = np.mgrid[0:32, 0:32]
    Image.fromarray(((np.abs(xx - 15.5) <= yy * 0.5) * 255).astype(np.uint8), "L").save(mask)
    code = main(["edit", str(stack_dir), "--focus", "0", "--out", str(out), "--quiet", "--force",
                 "--shape", str(mask)])
    capsys.readouterr()
    assert code == 0 and (out / "notes.txt").read_text() == "mine"
    assert (out / "edited.png").read_bytes() != before
    assert json.loads((out / "edit.json").read_text())["shape"] == str(mask)


def test_cli_blend_srgb_changes_the_render_towards_the_renderers_frame(stack_dir, scene, tmp_path, capsys):
    """--blend srgb blurs the stored values as the synthetic renderer does: a different edit, closer to
    the renderer's own frame; the analysis (all-in-focus, depth) does not depend on it."""
    import json

    outs = {}
    for blend in ("linear", "srgb"):
        outs[blend] = tmp_path / blend
        assert main(["edit", str(stack_dir), "--focus", "0", "--blend", blend, "--out", str(outs[blend]),
                     "--quiet"]) == 0
    capsys.readouterr()
    meta = {b: json.loads((o / "edit.json").read_text()) for b, o in outs.items()}
    assert meta["linear"]["blend"] == "linear" and meta["linear"]["dof_config"]["linear_light"] is True
    assert meta["srgb"]["blend"] == "srgb" and meta["srgb"]["dof_config"]["linear_light"] is False
    edited = {b: np.asarray(Image.open(o / "edited.png"), np.float32) / 255 for b, o in outs.items()}
    assert float(np.abs(edited["linear"] - edited["srgb"]).mean()) > 0.005
    frame0 = scene[0][0]
    err = {b: float(np.abs(e - frame0).mean()) for b, e in edited.items()}
    assert err["srgb"] < 0.5 * err["linear"], err  # measured 0.014 vs 0.061 mean abs error
    for name in ("all_in_focus.png", "depth.png"):
        assert (outs["linear"] / name).read_bytes() == (outs["srgb"] / name).read_bytes()
    # the viewer's previews follow the blend too
    assert (outs["linear"] / "viewer.html").read_text() != (outs["srgb"] / "viewer.html").read_text()


def test_cli_blend_rejects_other_values(stack_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["edit", str(stack_dir), "--focus", "2", "--blend", "gamma", "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and "invalid choice: 'gamma'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_blend_defaults_to_linear_light():
    from refocus_edge.cli.main import build_parser

    args = build_parser().parse_args(["edit", "stack", "--focus", "2"])
    assert args.blend == "linear" and DofConfig().linear_light is True


def test_cli_edit_help_explains_blend(capsys):
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--blend {linear,srgb}" in text and "linear (default)" in text and "gamma-encoded" in text


def test_interrupted_edit_leaves_nothing(stack_dir, tmp_path, monkeypatch):
    import refocus_edge.dof.edit as edit_mod

    import refocus_edge.runtime.publish as publish_mod

    def boom(*_args, **_kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(publish_mod, "publish", boom)
    with pytest.raises(KeyboardInterrupt):
        edit_mod.edit_stack(stack_dir, edit_mod.EditConfig(focus=3, out=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging folder nor a lock file


def test_cli_out_that_is_a_file_is_refused(stack_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a folder")
    code = main(["edit", str(stack_dir), "--focus", "2", "--out", str(out)])
    _, err = capsys.readouterr()
    _assert_clean_failure(code, err, str(out), "not a folder")
    assert out.read_text() == "not a folder"


def _bad_stack(kind: str, stack_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    """A broken copy of the stack and the fragment its error must contain."""
    if kind == "missing_dir":
        return tmp_path / "no_such_stack", "stack folder not found"
    bad = _copy_stack(stack_dir, tmp_path / "bad")
    if kind == "missing_frame":
        (bad / "frame_5.png").unlink()
        return bad, "frame_5.png: missing"
    if kind == "unreadable_frame":
        (bad / "frame_3.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
        return bad, "frame_3.png"
    if kind == "size_mismatch":
        Image.open(bad / "frame_7.png").resize((SIZE // 2, SIZE)).save(bad / "frame_7.png")
        return bad, "frame_7.png: is 64x128 but frame_0.png is 128x128"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing_dir", "missing_frame", "unreadable_frame", "size_mismatch"])
def test_cli_bad_stack_exits_2_and_writes_nothing(kind, stack_dir, tmp_path, capsys):
    bad, fragment = _bad_stack(kind, stack_dir, tmp_path)
    out = tmp_path / "out"
    code = main(["edit", str(bad), "--focus", "2", "--out", str(out)])
    _, err = capsys.readouterr()
    _assert_clean_failure(code, err, fragment)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("args, fragment", [
    (["--focus", "9"], "--focus must be in 0..8"),
    (["--focus", "-0.5"], "--focus must be in 0..8"),
    (["--focus", "nan"], "--focus must be in 0..8"),
    (["--focus", "2", "--strength", "-1"], "--strength must be >= 0"),
    (["--focus", "2", "--shape", "blades:2"], "blade count"),
    (["--focus", "2", "--shape", "triangle"], "unknown shape 'triangle'"),
    (["--focus", "2", "--shape", "missing_mask.png"], "missing_mask.png: aperture mask not found"),
])
def test_cli_bad_arguments_exit_2_and_write_nothing(args, fragment, stack_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["edit", str(stack_dir), *args, "--out", str(out)])
    _, err = capsys.readouterr()
    _assert_clean_failure(code, err, fragment)
    assert not out.exists() and list(tmp_path.iterdir()) == []
