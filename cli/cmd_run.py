"""`refocus run IMAGE`: one photo in, a 9-frame focal stack folder out."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from refocus_edge.cli.arg_types import positive_int, seed
from refocus_edge.runtime.backends import backend_names  # module names only: no backend is imported
from refocus_edge.runtime.component_names import DECODERS
from refocus_edge.runtime.zoo import DEFAULT_MODEL  # a name only: zoo imports nothing heavy


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="refocus a photo into a 9-frame focal stack",
        description="Generate the 9-frame focal stack (near to far) of one photo with the "
                    "learn2refocus sampler. Writes frame_0.png..frame_8.png, all_in_focus.png, depth.png, "
                    "focus_sweep.gif, viewer.html (stack slider, all-in-focus image, depth map, focus and "
                    "strength sliders over precomputed re-renders) and run.json into --out.")
    p.add_argument("image", type=Path, help="the input photo (JPEG, PNG, TIFF, WebP, ...)")
    p.add_argument("--position", type=int, default=None, metavar="0..8",
                   help="focal position of the input photo: 0 = focused near, 8 = focused far "
                        "(default: the model's default, 4 for the shipped models, announced)")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="shipped model name (see `refocus models`) or a model folder "
                        f"(default: $REFOCUS_MODEL or {DEFAULT_MODEL})")
    p.add_argument("--unet", type=Path, default=None, metavar="DIR",
                   help="UNet folder overriding the model's (released layout: SVD base + checkpoint-200000/unet)")
    p.add_argument("--steps", type=positive_int, default=None, help="Euler steps (default: the model's own, 25 for the reference)")
    p.add_argument("--seed", type=seed, default=0, help="noise seed (default 0)")
    p.add_argument("--mode", choices=["fast", "reference"], default="fast",
                   help="fast: same result, batched guidance and no wasted work (default); "
                        "reference: the literal 50-call reference loop")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: ./refocus_out/<image name>)")
    p.add_argument("--backend", default=None, choices=["auto", *backend_names()],
                   help="backend for a bundle's components (default: $REFOCUS_BACKEND or auto = the "
                        "fastest measured here that passed its parity gate); a model folder runs on torch")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16", "int8", "fp8", "any"],
                   help="bundle artifact precision (default: a quantized bundle's own recipe, else any "
                        "that passed its parity gate; any: the fastest gated precision per component, also "
                        "for a quantized bundle)")
    p.add_argument("--decoder", default=None, choices=list(DECODERS),
                   help="full: the VAE's temporal decoder; tiny: the model's gated tiny decoder (`refocus "
                        "distill-decoder`), 10x+ faster; guided: its gated photo-guided decoder (`refocus "
                        "distill-decoder --guided`: also sees the photo, trained toward true focal stacks); "
                        "auto: guided, else tiny, where the model has one that passed its gate. Default for a "
                        "model folder: guided where it has one, else full (full in --mode reference). A bundle "
                        "runs the decoder it was exported with")
    p.add_argument("--low-memory", action="store_true",
                   help="load each component only for its stage and free it after (8 GB boards, "
                        "phones): lower peak memory, slower")
    p.add_argument("--no-dof", action="store_true",
                   help="skip the depth-of-field views: no all_in_focus.png, depth.png or focus/strength "
                        "re-renders in viewer.html (saves their time: ~0.4 s at 128x128, ~3 s at 1024x576 "
                        "on one CPU thread; `refocus edit` makes them later)")
    p.add_argument("--force", action="store_true", help="replace frames already in --out")
    p.add_argument("--wait", action="store_true",
                   help="if another refocus process is writing --out, wait for it instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress bar or stage report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from refocus_edge.dof.stack_views import StackViewsConfig
    from refocus_edge.app.run_photo import RunConfig, refocus_photo

    out = args.out if args.out is not None else Path("refocus_out") / args.image.stem
    cfg = RunConfig(image=args.image, out_dir=out, model=args.model, unet=args.unet,
                    position=args.position, steps=args.steps, seed=args.seed, mode=args.mode,
                    force=args.force, progress=not args.quiet, backend=args.backend,
                    precision=args.precision, low_memory=args.low_memory, wait=args.wait, decoder=args.decoder,
                    dof_views=None if args.no_dof else StackViewsConfig())
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    report = refocus_photo(cfg, log=log)
    print(report.out_dir)
    return 0
