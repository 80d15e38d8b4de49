"""`refocus distill-decoder`: a tiny temporal decoder distilled from a model's own VAE decoder."""
from __future__ import annotations

import sys
from pathlib import Path

from refocus_edge.cli.arg_types import non_negative_int, positive_int, seed, size_wxh
from refocus_edge.runtime.zoo import DEFAULT_MODEL


def register(sub) -> None:
    from refocus_edge.export.tiny_decoder.config import GATE_LPIPS_MEDIAN, GUIDED_GATE_MARGIN, TinyDecoderConfig as D

    p = sub.add_parser(
        "distill-decoder", help="train the model's tiny temporal decoder (10x+ faster decoding), LPIPS-gated",
        description="Distil a small convolutional decoder with neighbour-frame mixing from the model's own "
                    "temporal VAE decoder, on the model's own samples and the VAE latents of training stacks; "
                    "gate it by LPIPS against the full decoder's frames of held-out stacks and write it into "
                    "the model folder as tiny_decoder/. With --guided: the photo-guided decoder instead (the same "
                    "architecture, also given the input photo and each frame's focus offset), trained toward the "
                    "true frames and gated against the full decoder's distance to them; written as guided_decoder/, "
                    "which `refocus run` then uses by default. Rerun the same command to resume an interrupted run.")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
                   help=f"shipped model name or model folder (default: {DEFAULT_MODEL})")
    p.add_argument("--guided", action="store_true",
                   help="train the photo-guided decoder toward the true frames (default: the tiny decoder, "
                        "toward the full decoder's frames)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="decoder folder to write (default: MODEL/tiny_decoder, or MODEL/guided_decoder with "
                        "--guided, where `refocus run` finds them)")
    p.add_argument("--samples", type=positive_int, default=D.samples,
                   help="training stacks, each giving two latent stacks (default %(default)s)")
    p.add_argument("--held-out", type=positive_int, default=D.held_out,
                   help="held-out stacks the gate decodes (default %(default)s)")
    p.add_argument("--iterations", type=non_negative_int, default=D.iterations,
                   help="updates (default %(default)s); 0 with --init: gate that decoder as it is, with what is new "
                        "in it (a --lens-head)")
    p.add_argument("--batch", type=positive_int, default=D.batch, help="stacks per update (default %(default)s)")
    p.add_argument("--lr", type=float, default=D.lr, help="peak AdamW learning rate (default %(default)s)")
    p.add_argument("--ema", type=float, default=D.ema_decay, help="EMA decay of the shipped weights (default %(default)s)")
    p.add_argument("--perceptual-weight", type=float, default=D.perceptual_weight,
                   help="weight of LPIPS (alex) beside the L1 (default %(default)s)")
    p.add_argument("--focus-weight", type=float, default=D.focus_weight,
                   help="weight of an L1 between log focus maps of its frames and the target's, the sharpness "
                        "pattern depth from focus reads (default %(default)s)")
    p.add_argument("--curve-weight", type=float, default=D.curve_weight,
                   help="weight of a cross-entropy between its per-pixel focus curves across frames and the "
                        "target's: only which frame is sharpest where, the order depth from focus ranks "
                        "(default %(default)s)")
    p.add_argument("--sizes", type=size_wxh, nargs="+", default=[], metavar="WxH",
                   help="larger sizes it also learns from, as random crops of stacks rendered there: the blur of a "
                        "photo served at its own shape (default: the working size only)")
    p.add_argument("--size-samples", type=positive_int, default=D.size_samples,
                   help="training stacks per --sizes size (default %(default)s)")
    p.add_argument("--size-mix", type=float, default=D.size_mix,
                   help="share of each batch's stacks drawn from the --sizes stacks (default %(default)s)")
    p.add_argument("--photo-blurs", type=float, nargs="+", default=list(D.photo_blurs), metavar="SIGMA",
                   help="with --guided: Gaussian sigmas (px at the working size) of a bank of re-blurred copies of "
                        "the photo that it mixes into each frame per pixel, the blur a frame farther from the scene's "
                        "focus needs (default: none)")
    p.add_argument("--photo-sharpen", type=float, nargs="+", default=list(D.photo_sharpen), metavar="SIGMA",
                   help="with --photo-blurs: sigmas (px) of unsharp masks of the photo (2 x photo - its blur) joining "
                        "that bank, so it can sharpen past the photo where a frame's focal plane meets the scene "
                        "(default: none)")
    p.add_argument("--lens-head", type=Path, default=None, metavar="HEAD.pt",
                   help="with --guided: a focus-depth head (`python -m training.depth_head`) whose per-pixel focus "
                        "index makes a thin-lens stack from the photo (re-blurred or sharpened per frame), mixed into "
                        "the output; frozen while the decoder trains (default: none)")
    p.add_argument("--lens-mix", type=float, default=D.lens_mix,
                   help="with --lens-head: the lens stack's share of each output frame, in (0, 1] (default %(default)s)")
    p.add_argument("--lens-amount", type=float, default=D.lens_amount,
                   help="with --lens-head: unsharp amount per frame of focus a frame gains over the photo "
                        "(default %(default)s)")
    p.add_argument("--init", type=Path, default=None, metavar="DIR",
                   help="start from this decoder folder's weights (same architecture; default: the model's tiny "
                        "decoder for --guided, else random)")
    p.add_argument("--channels", type=positive_int, nargs="+", default=list(D.channels),
                   help="feature channels per level, latent resolution first (default %(default)s)")
    p.add_argument("--blocks", type=positive_int, nargs="+", default=list(D.blocks),
                   help="residual blocks per level (default %(default)s)")
    p.add_argument("--data", default=D.data, help="'synthetic' (training split), a .npy stack cache or a "
                                                   "learn2refocus dataset folder (default %(default)s)")
    p.add_argument("--gate", type=float, default=None,
                   help=f"largest median LPIPS to the full decoder's frames that passes (default {GATE_LPIPS_MEDIAN}); "
                        f"with --guided: the largest excess of its median LPIPS to the true frames over the full "
                        f"decoder's (default {GUIDED_GATE_MARGIN})")
    p.add_argument("--seed", type=seed, default=D.seed, help="seeds data, initial weights and order (default 0)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="pairs cache and checkpoints (default runs/tiny-decoder/<model name>, or "
                        "runs/guided-decoder/<model name>)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--force", action="store_true", help="replace an existing tiny decoder folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from refocus_edge.export.tiny_decoder.config import TinyDecoderConfig
    from refocus_edge.export.tiny_decoder.pipeline import run_decoder_distillation
    from refocus_edge.runtime.errors import InvalidArgumentError

    if len(args.blocks) != len(args.channels):
        raise InvalidArgumentError(f"--blocks needs one count per level of --channels ({len(args.channels)}), "
                                   f"got {len(args.blocks)}")
    from refocus_edge.export.tiny_decoder.config import GATE_LPIPS_MEDIAN, GUIDED_GATE_MARGIN

    gate = args.gate if args.gate is not None else (GUIDED_GATE_MARGIN if args.guided else GATE_LPIPS_MEDIAN)
    if not 0 < args.ema < 1 or args.lr <= 0 or args.perceptual_weight < 0 or args.focus_weight < 0 or \
            args.curve_weight < 0 or not 0 <= args.size_mix <= 1 or (gate <= 0 and not args.guided) or \
            any(not s > 0 for s in args.photo_blurs + args.photo_sharpen):
        raise InvalidArgumentError("--ema must be in (0, 1), --lr and --gate > 0, --perceptual-weight, "
                                   "--focus-weight and --curve-weight >= 0, --size-mix in [0, 1], --photo-blurs and "
                                   "--photo-sharpen > 0")
    if args.photo_blurs and not args.guided:
        raise InvalidArgumentError("--photo-blurs re-blur the input photo, which only the photo-guided decoder "
                                   "sees; add --guided")
    if args.photo_sharpen and not args.photo_blurs:
        raise InvalidArgumentError("--photo-sharpen adds unsharp masks to the --photo-blurs bank; give --photo-blurs "
                                   "too (for example --photo-blurs 0.5 1.0 2.6 5.0)")
    if args.lens_head and not args.guided:
        raise InvalidArgumentError("--lens-head builds frames from the input photo, which only the photo-guided "
                                   "decoder sees; add --guided")
    if args.lens_head and (not 0 < args.lens_mix <= 1 or args.lens_amount < 0):
        raise InvalidArgumentError(f"--lens-mix must be in (0, 1] and --lens-amount >= 0, got {args.lens_mix}, "
                                   f"{args.lens_amount}")
    if args.iterations == 0 and args.init is None:
        raise InvalidArgumentError("--iterations 0 gates a decoder without training it: give --init DIR (the decoder "
                                   "to start from)")
    cfg = TinyDecoderConfig(model=args.model, out=args.out, samples=args.samples, held_out=args.held_out,
                            iterations=args.iterations, batch=args.batch, lr=args.lr, ema_decay=args.ema,
                            perceptual_weight=args.perceptual_weight, focus_weight=args.focus_weight,
                            curve_weight=args.curve_weight, sizes=tuple(tuple(s) for s in args.sizes),
                            size_samples=args.size_samples, size_mix=args.size_mix, init=args.init,
                            photo_blurs=tuple(args.photo_blurs), photo_sharpen=tuple(args.photo_sharpen),
                            lens_head=args.lens_head, lens_mix=args.lens_mix, lens_amount=args.lens_amount,
                            channels=tuple(args.channels),
                            blocks=tuple(args.blocks), seed=args.seed, data=args.data, gate_threshold=gate, guided=args.guided,
                            run_dir=args.run_dir, device=args.device, force=args.force, progress=not args.quiet)
    command = "refocus distill-decoder " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else ""
    out = run_decoder_distillation(cfg, log=lambda msg: print(msg, file=sys.stderr), command=command)
    print(out)
    return 0
