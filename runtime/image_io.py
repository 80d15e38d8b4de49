"""Load the user's photo into float RGB, robustly and without memory blow-ups.

Everything Pillow can open in the usual photo modes is accepted and normalised
(grayscale, palettes, alpha, 16-bit, CMYK, EXIF rotation); what cannot be used
raises InputImageError with a one-line message naming the file. Huge images are
reduced while decoding (JPEG DCT scaling) or right after (integer box reduce),
before any float conversion, so memory follows the working size, not the file.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from refocus_edge.runtime.errors import InputImageError, InvalidArgumentError

# Declared sizes above this are treated as decompression bombs. Pillow's default
# (~89 MP warning, ~179 MP error) would trip on ordinary 100+ MP camera files.
BOMB_PIXELS = 1_000_000_000
# Memory the decoder may use for one photo (the decoded image plus the working copies the
# mode's conversion makes): an 8 GB Jetson or a phone must survive any file. Checked from the
# declared size before decoding; JPEGs are first reduced while decoding (draft).
DECODE_BUDGET_BYTES = 1536 * 2 ** 20
# Peak memory of a decode = declared pixels x bytes per pixel of the mode's conversion chain
# + pixels after the integer reduction x the float32 output and its temporaries. Measured as
# the RSS high-water mark of load_photo on 36 MP PNG/TIFF files (Pillow 12, numpy 2), one
# byte per pixel of margin added; tests/test_image_io_faults.py checks they bound the peak.
_PEAK_BYTES_PER_PIXEL = {"rgb": 6, "gray": 3, "alpha": 14, "palette": 3, "high_bit": 3, "cmyk": 6}
_PEAK_BYTES_PER_OUTPUT_PIXEL = 20

# Same table as ImageOps.exif_transpose. We apply it ourselves so the rotation
# can happen after reduction, on the small image, with the tag read from the file.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112

_RGB_MODES = {"RGB", "RGBX", "YCbCr"}
_GRAY_MODES = {"1", "L"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "PA"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_SUPPORTED_MODES = _RGB_MODES | _GRAY_MODES | _ALPHA_MODES | _HIGH_BIT_MODES | {"P", "CMYK"}

# Pillow's limit is a module global; the lock keeps concurrent loads from
# restoring each other's value out of order.
_LIMIT_LOCK = threading.Lock()


@dataclass
class Photo:
    """A decoded photo ready for resizing."""

    rgb: np.ndarray  # float32, H x W x 3, values in [0, 1], in the file's colour space
    icc_profile: bytes | None  # RGB ICC profile to embed in outputs, if any
    source_size: tuple[int, int]  # (w, h) as stored in the file, before rotation
    notes: list[str] = field(default_factory=list)  # what was done, for the user


@contextlib.contextmanager
def _pixel_limit(limit: int):
    """Temporarily set Image.MAX_IMAGE_PIXELS, restoring it even on errors.

    Pillow's warning (issued above the limit, before our own check rejects the
    file with a clear message) is silenced here: it would only duplicate that.
    """
    with _LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def load_photo(path: str | Path, max_side_hint: int | None = None,
               memory_budget: int = DECODE_BUDGET_BYTES) -> Photo:
    """Decode `path` into a Photo.

    max_side_hint: the longest side the caller will need. Decoding is reduced
    by an integer factor as long as the longest side stays >= the hint (so the
    final resize still has enough pixels); None decodes at full resolution.
    """
    if max_side_hint is not None:
        if isinstance(max_side_hint, bool) or not isinstance(max_side_hint, (int, np.integer)) or max_side_hint < 1:
            raise InvalidArgumentError(f"max_side_hint must be a positive integer, got {max_side_hint!r}")
        max_side_hint = int(max_side_hint)
    path = Path(path)
    _check_file(path)
    # Pillow raises DecompressionBombError above 2 * MAX_IMAGE_PIXELS (and warns
    # above it); our own check below rejects anything above BOMB_PIXELS first.
    with _pixel_limit(BOMB_PIXELS):
        try:
            with Image.open(path) as im:
                return _decode(im, path, max_side_hint, memory_budget)
        except InputImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise InputImageError(_bomb_message(None), path) from exc
        except Image.UnidentifiedImageError as exc:
            kind = _signature(path)
            if kind is not None:  # the right magic bytes, then damage Pillow could not read past
                detail = " ".join(str(exc.__context__ or "").split())
                raise InputImageError(
                    f"looks like a {kind} file but its data is damaged"
                    + (f" ({detail})" if detail else "") + "; re-export or re-copy the file", path
                ) from exc
            raise InputImageError(
                "not a recognised image file; pass a JPEG, PNG, TIFF or WebP photo", path
            ) from exc
        except MemoryError as exc:
            raise InputImageError(
                "too large to decode in the available memory; downscale it first", path
            ) from exc
        except FileNotFoundError as exc:
            raise InputImageError("vanished while being read (moved or deleted meanwhile); check the path",
                                  path) from exc
        except OSError as exc:
            if exc.errno is not None:  # a real I/O fault (EIO, ...), not Pillow's "truncated" OSError
                raise InputImageError(f"cannot be read ({exc.strerror or exc}, "
                                      f"{errno.errorcode.get(exc.errno, exc.errno)}); check the disk and the file",
                                      path) from exc
            raise _damaged(exc, path) from exc
        except (SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
            raise _damaged(exc, path) from exc


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"GIF8", "GIF"), (b"BM", "BMP"))


def _signature(path: Path) -> str | None:
    """The image format the file's first bytes announce, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _damaged(exc: Exception, path: Path) -> InputImageError:
    # Truncated or corrupt data surfaces on load(); never patch it over with
    # LOAD_TRUNCATED_IMAGES, the result would be silently grey.
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return InputImageError(f"image data is damaged or truncated ({detail}); re-export or re-copy the file", path)


def _check_file(path: Path) -> None:
    """Reject paths that are not a non-empty regular file, before Pillow sees them."""
    if path.is_symlink() and not path.exists():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13
            raise InputImageError("is a symbolic link loop; point it at a photo file", path) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputImageError("is a symbolic link loop; point it at a photo file", path) from None
            raise InputImageError(f"is a symbolic link to a missing file ({os.readlink(path)}); "
                                  "check the link", path) from None
    if not path.exists():
        raise InputImageError("file not found; check the path", path)
    if path.is_dir():
        raise InputImageError("is a directory, not an image file; pass a photo file", path)
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputImageError(f"cannot be read ({exc.strerror or exc}); check its permissions", path) from exc
    if size == 0:
        raise InputImageError("file is empty (0 bytes); pass a complete photo file", path)


def _bomb_message(size: tuple[int, int] | None) -> str:
    declared = f"declares {size[0]}x{size[1]} pixels, " if size else ""
    return (
        f"{declared}more than the {BOMB_PIXELS // 1_000_000} MP limit "
        "(possible decompression bomb); downscale the image before using it"
    )


def _family(im: Image.Image) -> str:
    mode = im.mode
    if mode == "CMYK":
        return "cmyk"
    if mode in _HIGH_BIT_MODES:
        return "high_bit"
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return "alpha"
    if mode == "P":
        return "palette"
    return "gray" if mode in _GRAY_MODES else "rgb"


def decode_peak_bytes(im: Image.Image, hint: int | None) -> int:
    """Estimated peak memory of decoding `im` at its current (possibly drafted) size and
    reducing it for `hint` (see _reduce)."""
    w, h = im.size
    factor = max(1, max(w, h) // hint) if hint is not None else 1
    return w * h * _PEAK_BYTES_PER_PIXEL[_family(im)] + (w // factor) * (h // factor) * _PEAK_BYTES_PER_OUTPUT_PIXEL


def _decode(im: Image.Image, path: Path, hint: int | None, budget: int = DECODE_BUDGET_BYTES) -> Photo:
    notes: list[str] = []
    w, h = im.size
    if w * h > BOMB_PIXELS:
        raise InputImageError(_bomb_message((w, h)), path)
    if im.mode not in _SUPPORTED_MODES:
        # Checked before decoding: no point spending time on pixels we cannot use.
        raise InputImageError(
            f"unsupported pixel mode {im.mode!r}; save the photo as 8- or 16-bit RGB or grayscale", path
        )
    if getattr(im, "n_frames", 1) > 1:
        notes.append("multi-frame file: used the first frame")

    if hint is not None and max(w, h) > hint:
        # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale. draft() keeps
        # both sides >= the request, so ask for the hint-sized box of this aspect.
        scale = hint / max(w, h)
        im.draft(None, (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))))
    need = decode_peak_bytes(im, hint)  # at the drafted size: what load() and the conversions will take
    if need > budget:
        dw, dh = im.size
        raise InputImageError(
            f"declares {w}x{h} pixels ({w * h / 1e6:.0f} MP, {im.mode}); decoding it needs about "
            f"{need / 2 ** 30:.1f} GiB, above the {budget / 2 ** 30:.1f} GiB decode budget"
            + (f" (even reduced to {dw}x{dh} while decoding)" if (dw, dh) != (w, h) else "")
            + "; downscale it (or save it as JPEG, which decodes reduced) first", path)
    im.load()
    if im.size != (w, h):
        notes.append(f"downscaled on decode from {w}x{h} to {im.size[0]}x{im.size[1]}")

    orientation = im.getexif().get(_EXIF_ORIENTATION_TAG)
    icc = im.info.get("icc_profile") or None
    mode = im.mode

    if mode == "CMYK":
        im = _reduce(im, hint, notes)  # before the colour transform: far fewer pixels
        im, icc = _cmyk_to_rgb(im, icc, notes)
    elif mode in _HIGH_BIT_MODES:
        # Reduce works on 32-bit "I" but not "I;16"; values keep their 16-bit range.
        im = im.convert("I") if mode != "I" else im
        notes.append("16-bit input scaled to [0, 1] (full precision kept)")
    elif mode in _ALPHA_MODES or (mode in _RGB_MODES | _GRAY_MODES | {"P"} and "transparency" in im.info):
        # Composite at 8 bits before reducing, so colours hidden under fully
        # transparent pixels cannot bleed into visible ones.
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
        notes.append("alpha composited on white")
    elif mode == "P":
        im = im.convert("RGB")
        notes.append("palette image converted to RGB")
    elif mode in _GRAY_MODES:
        im = im.convert("L")  # 1-bit cannot be reduced; L expands to RGB at the end
        notes.append("grayscale input expanded to RGB")
    else:  # _RGB_MODES
        im = im.convert("RGB")

    im = _reduce(im, hint, notes)
    if orientation in _ORIENTATION:
        im = im.transpose(_ORIENTATION[orientation])
        notes.append(f"rotated per EXIF orientation {orientation}")

    icc = _usable_icc(icc, notes)
    return Photo(rgb=_to_float_rgb(im), icc_profile=icc, source_size=(w, h), notes=notes)


def _reduce(im: Image.Image, hint: int | None, notes: list[str]) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps the longest side >= hint."""
    factor = max(im.size) // hint if hint is not None else 1
    if factor < 2:
        return im
    before = im.size
    im = im.reduce(factor)
    notes.append(f"reduced {factor}x on load from {before[0]}x{before[1]} to {im.size[0]}x{im.size[1]}")
    return im


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]):
    """Convert CMYK to RGB, colour-managed when the file carries a CMYK profile."""
    if icc:
        try:
            from PIL import ImageCms

            srgb = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(
                im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode="RGB"
            )
            notes.append("CMYK converted to sRGB using the embedded ICC profile")
            # The pixels are now sRGB; the CMYK profile must not travel further.
            return out, ImageCms.ImageCmsProfile(srgb).tobytes()
        except Exception:  # ImageCms missing, or a profile LCMS cannot use
            pass
    notes.append("CMYK converted to RGB without colour management (no usable ICC profile)")
    return im.convert("RGB"), None


def _usable_icc(icc: bytes | None, notes: list[str]) -> bytes | None:
    """Keep only RGB profiles: outputs are RGB PNGs, a gray profile would be invalid there."""
    if icc is None:
        return None
    # ICC header: bytes 16..19 hold the data colour space signature.
    if len(icc) >= 20 and icc[16:20] == b"RGB ":
        return icc
    space = icc[16:20].decode("ascii", "replace").strip() if len(icc) >= 20 else "unknown"
    notes.append(f"dropped the embedded {space or 'unknown'} ICC profile (outputs are RGB)")
    return None


def _to_float_rgb(im: Image.Image) -> np.ndarray:
    # In-place arithmetic on one float32 copy: at full resolution every extra
    # temporary would cost 4 bytes per sample.
    arr = np.asarray(im).astype(np.float32)
    if im.mode == "I":
        np.clip(arr, 0.0, 65535.0, out=arr)
        arr *= np.float32(1.0 / 65535.0)
    else:
        arr *= np.float32(1.0 / 255.0)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr
