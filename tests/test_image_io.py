"""Photo loading (runtime.image_io) and working resolution (runtime.resize).

Every input is built on the fly with Pillow in tmp_path; nothing is downloaded.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refocus_edge.runtime.errors import InputImageError, InvalidArgumentError
from refocus_edge.runtime.image_io import BOMB_PIXELS, load_photo
from refocus_edge.runtime.resize import ResolutionPolicy, fit_photo, target_size

REPO = Path(__file__).resolve().parents[1]


def _rgb255(photo, x, y):
    return np.round(photo.rgb[y, x] * 255).astype(int).tolist()


def _assert_contract(photo, size):
    assert photo.rgb.dtype == np.float32 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
    assert photo.rgb.shape[:2] == (size[1], size[0])
    assert 0.0 <= photo.rgb.min() and photo.rgb.max() <= 1.0
    assert photo.rgb.flags["C_CONTIGUOUS"]


# --- modes that must be accepted --------------------------------------------------------


def test_rgb_png_round_trips_exactly(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    photo = load_photo(tmp_path / "a.png")
    _assert_contract(photo, (30, 20))
    assert photo.source_size == (30, 20)
    assert np.array_equal(np.round(photo.rgb * 255).astype(np.uint8), arr)
    assert photo.notes == [] and photo.icc_profile is None


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_is_expanded_to_rgb(tmp_path, mode):
    im = Image.new("L", (16, 8), 0)
    im.paste(255, (0, 0, 8, 8))
    im.convert(mode).save(tmp_path / "g.png")
    photo = load_photo(tmp_path / "g.png")
    _assert_contract(photo, (16, 8))
    assert _rgb255(photo, 1, 1) == [255, 255, 255] and _rgb255(photo, 12, 4) == [0, 0, 0]
    assert any("grayscale" in n for n in photo.notes)


def test_palette_image(tmp_path):
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    im.save(tmp_path / "p.png")
    photo = load_photo(tmp_path / "p.png")
    assert _rgb255(photo, 5, 5) == [10, 200, 30]
    assert any("palette" in n for n in photo.notes)


def test_palette_transparency_composited_on_white(tmp_path):
    im = Image.new("P", (10, 10), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    im.paste(1, (5, 0, 10, 10))
    im.save(tmp_path / "pt.png", transparency=0)
    photo = load_photo(tmp_path / "pt.png")
    assert _rgb255(photo, 1, 1) == [255, 255, 255]  # transparent red -> white
    assert _rgb255(photo, 8, 1) == [0, 0, 255]
    assert "alpha composited on white" in photo.notes


def test_rgba_composited_on_white(tmp_path):
    im = Image.new("RGBA", (3, 1))
    im.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    im.save(tmp_path / "rgba.png")
    photo = load_photo(tmp_path / "rgba.png")
    _assert_contract(photo, (3, 1))
    assert _rgb255(photo, 0, 0) == [255, 255, 255]  # hidden colour does not leak
    assert _rgb255(photo, 1, 0) == [0, 0, 255]
    assert _rgb255(photo, 2, 0) == [127] * 3  # half-transparent black over white
    assert "alpha composited on white" in photo.notes


def test_la_composited_on_white(tmp_path):
    im = Image.new("LA", (2, 1))
    im.putdata([(0, 255), (0, 0)])
    im.save(tmp_path / "la.png")
    photo = load_photo(tmp_path / "la.png")
    assert _rgb255(photo, 0, 0) == [0, 0, 0] and _rgb255(photo, 1, 0) == [255, 255, 255]


def test_16bit_png_keeps_full_precision(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"  # really a 16-bit file
    photo = load_photo(tmp_path / "g16.png")
    _assert_contract(photo, (4, 1))
    np.testing.assert_allclose(photo.rgb[0, :, 0], values[0] / 65535.0, atol=1e-6)
    assert photo.rgb[0, 1, 0] == pytest.approx(1000 / 65535, abs=1e-6)  # not quantised to 1/255 steps
    assert np.array_equal(photo.rgb[..., 0], photo.rgb[..., 2])
    assert any("16-bit" in n for n in photo.notes)


def test_32bit_int_mode_i_tiff_uses_16bit_range(tmp_path):
    Image.fromarray(np.array([[0, 65535, 70000]], dtype=np.int32)).save(tmp_path / "i.tif")
    photo = load_photo(tmp_path / "i.tif")
    np.testing.assert_allclose(photo.rgb[0, :, 1], [0.0, 1.0, 1.0], atol=1e-6)  # clipped, not wrapped


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    Image.new("CMYK", (32, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    photo = load_photo(tmp_path / "cmyk.jpg")
    _assert_contract(photo, (32, 16))
    r, g, b = _rgb255(photo, 16, 8)
    assert r > 240 and g < 15 and b < 15
    assert any("CMYK" in n for n in photo.notes)
    assert photo.icc_profile is None  # no CMYK profile may be passed on to RGB outputs


def test_cmyk_with_unusable_profile_falls_back(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("CMYK", (8, 8), (255, 0, 255, 0)).save(tmp_path / "c.jpg", icc_profile=srgb)
    photo = load_photo(tmp_path / "c.jpg")  # an RGB profile on CMYK data: LCMS refuses it
    r, g, b = _rgb255(photo, 4, 4)
    assert g > 240 and r < 15 and b < 15
    assert any("without colour management" in n for n in photo.notes)
    assert photo.icc_profile is None


def test_exif_orientation_6_rotates(tmp_path):
    # Stored 60x40 landscape, red top-left quadrant; orientation 6 = rotate 90 deg clockwise.
    im = Image.new("RGB", (60, 40), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 30, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    photo = load_photo(tmp_path / "rot.jpg")
    _assert_contract(photo, (40, 60))  # shown as portrait
    assert photo.source_size == (60, 40)  # as stored
    top_right, top_left = _rgb255(photo, 35, 5), _rgb255(photo, 5, 5)
    assert top_right[0] > 230 and top_right[2] < 25  # the stored top-left corner
    assert top_left[2] > 230 and top_left[0] < 25
    assert "rotated per EXIF orientation 6" in photo.notes


def test_rgb_icc_profile_kept_gray_profile_dropped(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (4, 4)).save(tmp_path / "icc.png", icc_profile=srgb)
    assert load_photo(tmp_path / "icc.png").icc_profile == srgb
    gray = bytearray(srgb)
    gray[16:20] = b"GRAY"
    Image.new("L", (4, 4)).save(tmp_path / "gray.png", icc_profile=bytes(gray))
    photo = load_photo(tmp_path / "gray.png")
    assert photo.icc_profile is None and any("GRAY ICC profile" in n for n in photo.notes)


# --- large images ---------------------------------------------------------------------


def test_png_reduced_after_decode_to_hint(tmp_path):
    Image.new("RGB", (2000, 1000), (10, 20, 30)).save(tmp_path / "big.png", compress_level=1)
    photo = load_photo(tmp_path / "big.png", max_side_hint=300)
    assert photo.rgb.shape == (167, 334, 3)  # reduce(6): longest side stays >= the hint
    assert photo.source_size == (2000, 1000)
    assert any(n.startswith("reduced 6x on load from 2000x1000") for n in photo.notes)
    assert _rgb255(photo, 100, 100) == [10, 20, 30]


_MEASURE = r"""
import json, sys, warnings
from PIL import Image
from refocus_edge.runtime.image_io import load_photo
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
warnings.simplefilter("error", Image.DecompressionBombWarning)
limit = Image.MAX_IMAGE_PIXELS
base = hwm()
photo = load_photo(sys.argv[1], max_side_hint=1024)
peak = hwm()
print(json.dumps({"base": base, "peak": peak, "shape": list(photo.rgb.shape),
                  "notes": photo.notes, "centre": photo.rgb[500, 750].tolist(),
                  "corner": photo.rgb[5, 5].tolist(), "limit_restored": Image.MAX_IMAGE_PIXELS == limit}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for VmHWM")
def test_huge_jpeg_decodes_at_reduced_scale_with_small_peak_memory(tmp_path):
    # 12000x9000 = 108 MP: above Pillow's default warning limit, and a full decode
    # would hold 12000*9000*4 bytes (Pillow pads RGB to 4 bytes) = 432 MB.
    im = Image.new("RGB", (12000, 9000), (40, 120, 200))
    im.paste((255, 0, 0), (0, 0, 3000, 2000))
    im.save(tmp_path / "huge.jpg", quality=75)
    del im
    res = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "huge.jpg")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    grown_mb = (out["peak"] - out["base"]) / 2**20
    assert grown_mb < 120, f"loading grew peak RSS by {grown_mb:.0f} MB"
    assert out["shape"] == [1125, 1500, 3]  # libjpeg 1/8 scale, longest side >= 1024
    assert "downscaled on decode from 12000x9000 to 1500x1125" in out["notes"]
    assert [round(v * 255) for v in out["corner"]] == pytest.approx([255, 0, 0], abs=6)
    assert [round(v * 255) for v in out["centre"]] == pytest.approx([40, 120, 200], abs=6)
    assert out["limit_restored"]


def _png_header_only(path, w, h):
    """A PNG that declares w x h but carries a single tiny IDAT: enough for Image.open."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_rejected_and_limit_restored(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    _png_header_only(tmp_path / "bomb.png", 40000, 30000)  # 1.2 gigapixels declared
    with pytest.raises(InputImageError) as info:
        load_photo(tmp_path / "bomb.png", max_side_hint=1024)
    msg = str(info.value)
    assert "bomb.png" in msg and "40000x30000" in msg and "decompression bomb" in msg and "\n" not in msg
    assert Image.MAX_IMAGE_PIXELS == before
    assert 40000 * 30000 > BOMB_PIXELS > 12000 * 9000


# --- inputs that must be rejected -----------------------------------------------------


def _truncated(tmp_path, fmt):
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt}"
    Image.fromarray(arr).save(full)
    cut = tmp_path / f"cut.{fmt}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _make_bad(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope.jpg", "not found"
    if kind == "directory":
        (tmp_path / "dir.jpg").mkdir()
        return tmp_path / "dir.jpg", "directory"
    if kind == "empty":
        (tmp_path / "empty.png").write_bytes(b"")
        return tmp_path / "empty.png", "empty"
    if kind == "text":
        (tmp_path / "notes.jpg").write_text("this is not a photo\n")
        return tmp_path / "notes.jpg", "not a recognised image"
    if kind in ("truncated-jpg", "truncated-png"):
        return _truncated(tmp_path, kind.split("-")[1]), "truncated"
    if kind == "float-tiff":
        Image.new("F", (4, 4), 0.5).save(tmp_path / "f.tif")
        return tmp_path / "f.tif", "unsupported pixel mode 'F'"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["missing", "directory", "empty", "text", "truncated-jpg", "truncated-png", "float-tiff"]
)
def test_bad_inputs_raise_one_line_input_image_error(tmp_path, kind):
    path, expected = _make_bad(tmp_path, kind)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputImageError) as info:
        load_photo(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg
    assert info.value.path == path
    assert Image.MAX_IMAGE_PIXELS == before


def test_bad_hint_rejected(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(InvalidArgumentError):
        load_photo(tmp_path / "a.png", max_side_hint=0)


# --- working resolution ---------------------------------------------------------------


@pytest.mark.parametrize(
    "size, expected",
    [
        ((4032, 3024), (832, 576)),  # the reference's documented result for 4:3
        ((3024, 4032), (576, 832)),  # portrait
        ((1920, 1080), (960, 512)),
        ((12000, 9000), (832, 576)),
        ((30, 20), (64, 64)),  # tiny images are raised to one multiple
        ((10, 700), (64, 704)),  # under budget: snapped, not scaled
    ],
)
def test_reference_budget_sizes(size, expected):
    policy = ResolutionPolicy()
    tw, th = target_size(*size, policy)
    assert (tw, th) == expected
    assert tw * th <= policy.max_pixels and tw % 64 == 0 and th % 64 == 0


def test_fixed_policy_centre_crops_then_resizes():
    policy = ResolutionPolicy(fixed=(128, 128))
    ramp = np.tile(np.linspace(0, 1, 400, dtype=np.float32)[None, :, None], (300, 1, 3))
    out, note = fit_photo(ramp, policy)
    assert out.shape == (128, 128, 3) and out.dtype == np.float32
    # The centre 300 columns of 400 survive: values run from ~0.125 to ~0.875.
    assert out[0, 0, 0] == pytest.approx(0.125, abs=0.01) and out[0, -1, 0] == pytest.approx(0.875, abs=0.01)
    assert "centre-cropped to 300x300" in note and "128x128" in policy.describe()


def test_fit_photo_budget_is_accurate_on_float_data():
    rgb = np.full((300, 400, 3), 0.123456, dtype=np.float32)
    out, note = fit_photo(rgb, ResolutionPolicy())
    assert out.shape == (320, 384, 3)
    np.testing.assert_allclose(out, 0.123456, atol=1e-5)  # no 8-bit rounding on the way
    assert "400x300 -> 384x320" in note


@pytest.mark.parametrize(
    "kwargs", [{"fixed": (500, 400)}, {"max_pixels": 1000}, {"multiple": 0}, {"fixed": (0, 64)}]
)
def test_invalid_policies_rejected(kwargs):
    with pytest.raises(InvalidArgumentError):
        ResolutionPolicy(**kwargs)


OWN_SHAPE = ResolutionPolicy(max_pixels=131_072, multiple=64, min_short_side=256, max_aspect=2.0)


@pytest.mark.parametrize(
    "size, expected",
    [
        ((4032, 3024), (320, 256)),  # 4:3 -> 1.25 (a 6 % crop); 384x256 would crop 11 %
        ((3024, 4032), (256, 320)),  # portrait keeps its orientation
        ((1920, 1080), (448, 256)),  # 16:9 at the minimum short side
        ((1000, 1000), (320, 320)),  # square: the largest short side under the budget
        ((200, 150), (320, 256)),  # small photos are raised to the minimum short side
        ((5000, 1000), (512, 256)),  # 5:1 panorama: cropped to 2:1
    ],
)
def test_own_shape_sizes(size, expected):
    tw, th = target_size(*size, OWN_SHAPE)
    assert (tw, th) == expected
    assert tw * th <= OWN_SHAPE.max_pixels and min(tw, th) >= 256 and tw % 64 == 0 and th % 64 == 0


def test_own_shape_crops_to_the_snapped_aspect_instead_of_stretching():
    ramp = np.tile(np.linspace(0, 1, 5000, dtype=np.float32)[None, :, None], (1000, 1, 3))
    out, note = fit_photo(ramp, OWN_SHAPE)
    assert out.shape == (256, 512, 3)
    # 2:1 of 5:1: the centre 2000 of 5000 columns, values ~0.3 .. ~0.7
    assert out[0, 0, 0] == pytest.approx(0.3, abs=0.01) and out[0, -1, 0] == pytest.approx(0.7, abs=0.01)
    assert "centre-cropped to 2000x1000" in note and "own shape: short side >= 256" in note


@pytest.mark.parametrize("kwargs", [{"min_short_side": 200}, {"min_short_side": 512, "max_pixels": 131_072},
                                    {"min_short_side": 256, "max_aspect": 0.5}])
def test_invalid_own_shape_policies_rejected(kwargs):
    with pytest.raises(InvalidArgumentError):
        ResolutionPolicy(**kwargs)
