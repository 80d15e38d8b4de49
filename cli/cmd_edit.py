"""`refocus edit STACK_DIR`: new focus, blur strength and aperture shape for a rendered focal stack."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "edit", help="re-render a focal stack with a new focus, blur strength and bokeh shape",
        description="Fuse the 9 frames of a stack written by `refocus run` into an all-in-focus image and "
                    "a depth map, then render it focused at --focus with --strength x the stack's blur "
                    "through an aperture of --shape. Writes edited.png, all_in_focus.png, depth.png, "
                    "confidence.png, viewer.html (sliders over precomputed edits) and edit.json into --out.")
    p.add_argument("stack_dir", type=Path, metavar="STACK_DIR",
                   help="folder holding frame_0.png .. frame_8.png (the output of `refocus run`)")
    p.add_argument("--focus", type=float, required=True, metavar="0..8",
                   help="focus position: 0 = the nearest plane of the stack, 8 = the farthest; fractions allowed")
    p.add_argument("--strength", type=float, default=1.0, metavar="K",
                   help="blur scale >= 0: 1 = the stack's own lens (default), 2 = twice the blur, 0 = all in focus")
    p.add_argument("--shape", default="circle", metavar="SHAPE",
                   help="aperture: circle (default), blades:N (N-bladed iris, optionally blades:N:DEGREES), "
                        "heart, star, or a PNG mask (alpha or grey level; white/opaque = open)")
    p.add_argument("--blend", choices=["linear", "srgb"], default="linear",
                   help="colour space the blur averages in: linear (default) = linear light, physically "
                        "right, so defocused highlights bloom into bright discs; srgb = the stored "
                        "gamma-encoded values, darker bokeh but matching renderers that blend those "
                        "(e.g. the project's synthetic stacks)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: STACK_DIR/edit); must be new or empty unless --force")
    p.add_argument("--force", action="store_true", help="replace the edit files in a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no stage report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from refocus_edge.dof.bokeh import DofConfig
    from refocus_edge.dof.edit import EditConfig, edit_stack

    cfg = EditConfig(focus=args.focus, strength=args.strength, shape=args.shape, out=args.out, force=args.force,
                     dof=DofConfig(linear_light=args.blend == "linear"))
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    result = edit_stack(args.stack_dir, cfg, log=log)
    print(result.out_dir)
    return 0
