"""`refocus distill`: a few-step, guidance-free student of a refocuser."""
from __future__ import annotations

import sys
from pathlib import Path

from refocus_edge.cli.arg_types import positive_int, seed, size_wxh
from refocus_edge.runtime.zoo import TEACHER_MODEL


def register(sub) -> None:
    p = sub.add_parser(
        "distill", help="distill a refocuser into a few-step student without guidance",
        description="Record the teacher's guided trajectories once, train a student whose every Euler "
                    "step lands on them, and write it as a model folder. Rerun the same command to "
                    "resume an interrupted run.")
    p.add_argument("--teacher", default=TEACHER_MODEL, metavar="NAME_OR_PATH",
                   help=f"shipped model name or model folder (default: {TEACHER_MODEL})")
    p.add_argument("--teacher-unet", type=Path, default=None, metavar="DIR",
                   help="UNet folder overriding the teacher's (the released layout: SVD base + checkpoint UNet)")
    p.add_argument("--steps", type=int, default=4, help="student sampling steps = UNet calls (default 4)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="student model folder to write")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (training split), a .npy stack cache, or a learn2refocus dataset folder")
    p.add_argument("--size", type=size_wxh, default=None, metavar="WxH",
                   help="working size (default: the teacher's fixed size; required for the released model)")
    p.add_argument("--samples", type=int, default=512,
                   help="teacher trajectories to record, or ground-truth stacks to encode (default 512)")
    p.add_argument("--iterations", type=int, default=2000, help="student updates (default 2000)")
    p.add_argument("--batch", type=int, default=4, help="stacks per update (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4,
                   help="peak AdamW learning rate, after warm-up, decayed by a cosine (default %(default)s)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the shipped weights")
    p.add_argument("--rollout-fraction", type=float, default=0.5,
                   help="share of updates from the student's own states (default 0.5)")
    p.add_argument("--init", type=Path, default=None, metavar="DIR",
                   help="start the student from this model's UNet (default: the teacher's)")
    p.add_argument("--trainable", choices=["all", "temporal"], default="all",
                   help="'temporal': only the temporal transformer blocks, as the reference finetuned")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast precision")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute UNet activations in the backward pass: less memory, more time (full-size UNets)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--sigma-max", type=float, default=None, help="student's first sigma (default 20)")
    p.add_argument("--sigma-min", type=float, default=None, help="student's last nonzero sigma")
    p.add_argument("--objective", choices=["teacher", "ground-truth"], default="teacher",
                   help="'teacher': each step lands on the teacher's trajectory; 'ground-truth': the student's "
                        "own sampler, trained end to end toward the true stacks of --data (default teacher)")
    p.add_argument("--perceptual-weight", type=float, default=1.0,
                   help="ground-truth: weight of LPIPS on decoded crops beside the latent MSE (default 1)")
    p.add_argument("--perceptual-crop", type=int, default=8,
                   help="ground-truth: latent side of the decoded crop, 0 = whole frames (default 8 = 64 px)")
    p.add_argument("--teacher-weight", type=float, default=0.0,
                   help="ground-truth: weight of the trajectory-distillation term to the teacher (default 0)")
    p.add_argument("--focus-weight", type=float, default=0.0,
                   help="ground-truth: weight of the L1 between log focus maps (local Laplacian energy) of the "
                        "decoded crop and the true frames, for a stack whose sharpness sweeps with depth (default 0)")
    p.add_argument("--curve-weight", type=float, default=0.0,
                   help="ground-truth: weight of the cross-entropy between the decoded crop's per-pixel focus curves "
                        "across frames and the truth's: which frame is sharpest where, the order depth from focus "
                        "ranks (default 0)")
    p.add_argument("--sizes", type=size_wxh, nargs="+", default=[], metavar="WxH",
                   help="ground-truth: larger sizes the student also learns from, as random working-size crops "
                   "of stacks rendered there (the blur of a photo served at that size)")
    p.add_argument("--size-samples", type=positive_int, default=192, help="ground-truth: stacks per --sizes size "
                   "(default %(default)s)")
    p.add_argument("--size-mix", type=float, default=0.5, help="ground-truth: share of the updates drawn from "
                   "the --sizes stacks (default %(default)s)")
    p.add_argument("--seed", type=seed, default=0, help="seeds data order, noise and initial states (default 0)")
    p.add_argument("--run-dir", type=Path, default=None, help="checkpoints (default runs/distill/<out name>)")
    p.add_argument("--cache", type=Path, default=None, help="trajectory cache folder (default: keyed by teacher)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from refocus_edge.export.distillation.config import DistillConfig
    from refocus_edge.export.distillation.pipeline import run_distillation
    from refocus_edge.runtime.errors import InvalidArgumentError

    if args.steps < 1:
        raise InvalidArgumentError(f"--steps must be >= 1, got {args.steps}")
    if args.samples < 4 or args.iterations < 1 or args.batch < 1:
        raise InvalidArgumentError("--samples must be >= 4, --iterations and --batch >= 1")
    if not 0.0 <= args.rollout_fraction <= 1.0:
        raise InvalidArgumentError(f"--rollout-fraction must be in [0, 1], got {args.rollout_fraction}")
    if min(args.perceptual_weight, args.teacher_weight, args.perceptual_crop, args.focus_weight,
           args.curve_weight) < 0:
        raise InvalidArgumentError("--perceptual-weight, --teacher-weight, --focus-weight, --curve-weight and "
                                   "--perceptual-crop must be >= 0")
    if args.objective == "teacher" and (args.teacher_weight or args.perceptual_weight != 1.0 or args.focus_weight
                                        or args.curve_weight or args.sizes):
        raise InvalidArgumentError("--teacher-weight, --perceptual-weight, --focus-weight, --curve-weight and --sizes "
                                   "belong to --objective ground-truth")
    if not 0.0 <= args.size_mix <= 1.0:
        raise InvalidArgumentError(f"--size-mix must be in [0, 1], got {args.size_mix}")
    cfg = DistillConfig(
        teacher=args.teacher, teacher_unet=args.teacher_unet, out=args.out, steps=args.steps, data=args.data,
        size=args.size, samples=args.samples, iterations=args.iterations, batch=args.batch, lr=args.lr,
        ema_decay=args.ema, rollout_fraction=args.rollout_fraction, seed=args.seed, init=args.init,
        trainable=args.trainable, precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
        device=args.device, sigma_max=args.sigma_max, sigma_min=args.sigma_min, run_dir=args.run_dir,
        cache=args.cache, force=args.force, objective=args.objective, perceptual_weight=args.perceptual_weight,
        perceptual_crop=args.perceptual_crop, teacher_weight=args.teacher_weight, focus_weight=args.focus_weight,
        curve_weight=args.curve_weight,
        sizes=tuple(tuple(s) for s in args.sizes), size_samples=args.size_samples, size_mix=args.size_mix)
    out = run_distillation(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(out)
    return 0
