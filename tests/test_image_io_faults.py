"""load_photo against hostile files (issue 20): the decode-memory estimate bounds the measured peak, a file
over the budget is refused before decoding, and links and damaged headers get their own messages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refocus_edge.runtime.errors import InputImageError
from refocus_edge.runtime.image_io import decode_peak_bytes, load_photo

REPO = Path(__file__).resolve().parents[1]
# VmHWM of this process, reset to the current RSS first (/proc/self/clear_refs): ru_maxrss
# would start at the (large) pytest parent's high-water mark.
MEASURE = """
import json, sys
from PIL import Image
from refocus_edge.runtime import image_io

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

path, hint = sys.argv[1], int(sys.argv[2])
with Image.open(path) as im:
    estimate = image_io.decode_peak_bytes(im, hint)
open("/proc/self/clear_refs", "w").write("5")
base = hwm()
image_io.load_photo(path, max_side_hint=hint, memory_budget=1 << 40)
print(json.dumps({"peak": hwm() - base, "estimate": estimate}))
"""


def _image(path: Path, mode: str, side: int) -> Path:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)).resize((side, side))
    im = rgb.convert(mode)
    if mode == "RGBA":
        im.putalpha(128)
    im.save(path, compress_level=1)
    return path


@pytest.mark.parametrize("mode, hint", [("RGB", 1024), ("RGB", 4096), ("RGBA", 1024), ("L", 1024), ("P", 4096)])
def test_the_estimate_bounds_the_measured_peak(tmp_path, mode, hint):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure a process's peak memory")
    path = _image(tmp_path / f"{mode}.png", mode, 3000)  # 9 MP: large enough that pixels dominate
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(hint)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["peak"] <= result["estimate"], result
    assert result["estimate"] <= 3 * max(result["peak"], 1), result  # a bound, not a wild guess


def test_over_budget_is_refused_before_decoding_with_the_pixel_count_and_budget(tmp_path, monkeypatch):
    path = _image(tmp_path / "big.png", "RGBA", 1000)
    with Image.open(path) as im:
        need = decode_peak_bytes(im, 2048)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded anyway"))
    with pytest.raises(InputImageError, match=r"declares 1000x1000 pixels \(1 MP, RGBA\); decoding it needs "
                                              r"about 0\.0 GiB, above the 0\.0 GiB decode budget.*downscale"):
        load_photo(path, max_side_hint=2048, memory_budget=need - 1)


def test_a_symlink_loop_and_a_dangling_link_say_so(tmp_path):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    with pytest.raises(InputImageError, match="a.png: is a symbolic link loop"):
        load_photo(tmp_path / "a.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(InputImageError, match=r"gone.png: is a symbolic link to a missing file \(.*missing.png\)"):
        load_photo(tmp_path / "gone.png")


def test_a_damaged_png_header_is_called_damaged_not_unrecognised(tmp_path):
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ok)
    data = bytearray(ok.read_bytes())
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputImageError, match="bad.png: looks like a PNG file but its data is damaged.*re-copy"):
        load_photo(bad)


def test_an_io_error_and_a_vanished_input_are_named_as_such(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)

    def eio(*_a, **_k):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(Image, "open", eio)
    with pytest.raises(InputImageError, match=r"p.png: cannot be read \(Input/output error, EIO\); check the disk"):
        load_photo(path)

    def vanished(*_a, **_k):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))

    monkeypatch.setattr(Image, "open", vanished)
    with pytest.raises(InputImageError, match="p.png: vanished while being read"):
        load_photo(path)
