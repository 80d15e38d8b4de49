"""`refocus export <target>`: verified bundles of a refocuser, one subcommand per export target
(refocus_edge.export.targets: ONNX, Core ML, ...), plus `tensorrt`, which builds engines for a
bundle on the machine that will run them."""
from __future__ import annotations

import sys
from pathlib import Path

from refocus_edge.cli.arg_types import size_wxh
from refocus_edge.runtime.zoo import DEFAULT_MODEL, default_model_name  # names only: zoo imports nothing heavy

# How an export target's option kinds (export/targets/base.py:Option) parse.
_KINDS = {"str": str, "int": int, "float": float, "size": size_wxh}


def _add_option(parser, option) -> None:
    extra = {"choices": list(option.choices)} if option.choices else {}
    if option.many:
        extra["nargs"] = "+"
    parser.add_argument(option.flag, type=_KINDS[option.kind], default=option.default, metavar=option.metavar,
                        help=option.help, **extra)


def register(sub) -> None:
    from refocus_edge.export.targets import registry  # target modules import nothing heavy

    p = sub.add_parser("export", help="export a model to ONNX / Core ML / TensorRT (parity-gated bundles)",
                       description="Export a refocuser into a bundle; every artifact passes a parity "
                                   "gate against PyTorch before the bundle is written.")
    targets = p.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True
    for name, exporter in registry().items():
        t = targets.add_parser(name, help=exporter.help, description=exporter.description or None)
        # The source model and the bundle folder, and the end-to-end gate: the same for every target.
        t.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                       help=f"shipped model name or model folder (default: $REFOCUS_MODEL or {DEFAULT_MODEL})")
        t.add_argument("--out", type=Path, required=True, metavar="BUNDLE", help="bundle folder to write")
        for option in exporter.options:
            _add_option(t, option)
        t.add_argument("--decoder", default="full", choices=["full", "tiny", "guided"],
                       help="full: the VAE's temporal decoder (default); tiny: the model's gated tiny decoder "
                            "(`refocus distill-decoder`), exported as one chunk of all frames; guided: its gated "
                            "photo-guided decoder (`refocus distill-decoder --guided`), which also takes the photo")
        t.add_argument("--gate-steps", type=int, default=None,
                       help="Euler steps of the end-to-end gate (default: the model's own)")
        t.add_argument("--force", action="store_true", help="replace an existing bundle")
        t.set_defaults(func=run_target)

    trt = targets.add_parser("tensorrt", help="build and cache TensorRT engines for a bundle on this machine")
    trt.add_argument("--model", required=True, metavar="BUNDLE", help="a bundle written by `refocus export onnx`")
    trt.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16", "int8", "fp8"],
                     help="engine precision (default fp16; int8 / fp8 need a bundle from `refocus quantize`)")
    trt.set_defaults(func=run_tensorrt)


def run_target(args) -> int:
    from refocus_edge.export.targets import get_target
    from refocus_edge.export.targets.base import ExportSettings

    exporter = get_target(args.target)
    settings = ExportSettings(model=args.model or default_model_name(), out=args.out, force=args.force,
                              gate_steps=args.gate_steps, decoder=args.decoder)
    cfg = exporter.config(settings, {o.dest: getattr(args, o.dest) for o in exporter.options})
    exporter.export(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(args.out)
    return 0


def run_tensorrt(args) -> int:
    from refocus_edge.runtime.backends.backend_tensorrt import build_engines
    from refocus_edge.runtime.bundle import open_bundle

    for row in build_engines(open_bundle(args.model), args.precision):
        state = "built" if row["built"] else "cached"
        print(f"{row['name']:14s} {state:6s} {row['seconds']:7.1f} s  {row['path']}", file=sys.stderr)
    return 0
