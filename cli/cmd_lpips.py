"""`refocus lpips A B [--net alex|vgg]`: LPIPS distance between two images or two stacks.

With two files it prints the distance. With two folders it compares the image
files they share by name, frame by frame, and prints `name  distance` lines and a
final `mean  distance`: the form in which focal stacks are compared.
"""
from __future__ import annotations

import argparse
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lpips",
        help="LPIPS perceptual distance between two images or two folders of frames",
        description="LPIPS v0.1 distance (0 = identical). A and B are two images, or two folders "
        "whose image files are matched by name.",
    )
    parser.add_argument("a", type=Path, metavar="A", help="image file or folder of frames")
    parser.add_argument("b", type=Path, metavar="B", help="image file or folder of frames")
    parser.add_argument("--net", choices=("alex", "vgg"), default="alex",
                        help="backbone (default: alex, the one LPIPS recommends as a metric)")
    parser.set_defaults(func=run)


def _image_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def _pairs(a: Path, b: Path) -> list[tuple[str, Path, Path]]:
    """(label, file in A, file in B) for each comparison to make."""
    from refocus_edge.runtime.errors import InputImageError

    for path in (a, b):
        if not path.exists():
            raise InputImageError("no such file or folder", path)
    if a.is_dir() != b.is_dir():
        raise InputImageError(f"cannot compare a folder with a file ({b}); give two files or two folders", a)
    if not a.is_dir():
        return [(a.name, a, b)]
    names_a, names_b = _image_names(a), _image_names(b)
    if not names_a and not names_b:
        raise InputImageError(f"no image files in this folder nor in {b}", a)
    if names_a != names_b:
        def some(names: set[str]) -> str:  # keep the message one short line
            listed = sorted(names)
            if not listed:
                return "none"
            return ", ".join(listed[:3]) + (f" and {len(listed) - 3} more" if len(listed) > 3 else "")
        raise InputImageError(
            f"frames differ from {b}: only here: {some(names_a - names_b)}; only there: {some(names_b - names_a)}", a
        )
    return [(name, a / name, b / name) for name in sorted(names_a)]


def run(args: argparse.Namespace) -> int:
    import torch

    from refocus_edge.runtime.errors import InputImageError
    from refocus_edge.runtime.metrics.lpips import LPIPS, MIN_SIZE, load_image_01

    pairs = _pairs(args.a, args.b)
    per_frame = args.a.is_dir()
    model = LPIPS(args.net)
    min_size = MIN_SIZE[args.net]
    width = max(len(label) for label, _, _ in pairs + [("mean", None, None)])
    distances = []
    for label, pa, pb in pairs:
        ima, imb = load_image_01(pa), load_image_01(pb)
        (ha, wa), (hb, wb) = ima.shape[:2], imb.shape[:2]
        if (ha, wa) != (hb, wb):
            raise InputImageError(f"size {wa}x{ha} differs from {pb} ({wb}x{hb})", pa)
        if min(ha, wa) < min_size:
            raise InputImageError(f"{wa}x{ha} is too small for LPIPS-{args.net} (needs {min_size}x{min_size})", pa)
        with torch.inference_mode():
            ta, tb = (torch.from_numpy(im).permute(2, 0, 1)[None] * 2 - 1 for im in (ima, imb))
            d = float(model(ta, tb)[0])
        distances.append(d)
        if per_frame:
            print(f"{label:<{width}}  {d:.4f}")
    if per_frame:
        print(f"{'mean':<{width}}  {sum(distances) / len(distances):.4f}")
    else:
        print(f"{distances[0]:.4f}")
    return 0
