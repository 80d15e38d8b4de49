"""`refocus export onnx|coreml|tensorrt`: verified bundles of a refocuser."""
from __future__ import annotations

import sys
from pathlib import Path

from refocus_edge.cli.arg_types import size_wxh
from refocus_edge.runtime.zoo import DEFAULT_MODEL, default_model_name  # names only: zoo imports nothing heavy


def _model_and_out(parser) -> None:
    """The source model and the bundle folder: the same two options for every exporter."""
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                        help=f"shipped model name or model folder (default: $REFOCUS_MODEL or {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, required=True, metavar="BUNDLE", help="bundle folder to write")


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX / Core ML / TensorRT (parity-gated bundles)",
                       description="Export a refocuser into a bundle; every artifact passes a parity "
                                   "gate against PyTorch before the bundle is written.")
    targets = p.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True

    onnx = targets.add_parser("onnx", help="one ONNX graph per component, parity-gated, as a bundle")
    _model_and_out(onnx)
    onnx.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "fp16"],
                      help="one or more graph precisions (default fp32)")
    onnx.add_argument("--resolution", nargs="+", type=size_wxh, default=None, metavar="WxH",
                      help="working sizes the graphs must accept; the first is the optimisation "
                           "target, min/max span them (default: the model's working size)")
    onnx.add_argument("--gate-steps", type=int, default=None,
                      help="Euler steps of the end-to-end gate (default: the model's own)")
    onnx.add_argument("--force", action="store_true", help="replace an existing bundle")
    onnx.set_defaults(func=run_onnx)

    cml = targets.add_parser("coreml", help="Core ML packages for iPhone/Mac (fp16 mlprograms, chunked UNet, "
                                            "compressed variants), verified without a Mac",
                             description="One .mlpackage per component (iOS 17 / macOS 14 mlprogram), built from "
                                         "conversion-ready rewrites that must match the PyTorch modules; each "
                                         "package's spec is checked and the whole stack is sampled through the "
                                         "same modules in PyTorch before the bundle is written.")
    _model_and_out(cml)
    cml.add_argument("--precision", default="fp16", choices=["fp16", "fp32"],
                     help="compute precision (default fp16; a component whose activations leave fp16's "
                          "safe range is kept in fp32 and the export says so)")
    cml.add_argument("--compress", nargs="+", default=["none"], choices=["none", "w8", "p6", "p4"],
                     help="compress the UNet's weights: w8 (8-bit linear), p6 / p4 (6- / 4-bit palettes), "
                          "none; one package set per value (default none)")
    cml.add_argument("--resolution", type=size_wxh, default=None, metavar="WxH",
                     help="the packages' static working size (default: the model's working size)")
    cml.add_argument("--max-package-mb", type=float, default=1024.0, metavar="MB",
                     help="split the UNet at block boundaries when its weights exceed this "
                          "(default 1024, what iOS loads comfortably; ignored at <= 6 bits)")
    cml.add_argument("--gate-steps", type=int, default=None,
                     help="Euler steps of the end-to-end check (default: the model's own)")
    cml.add_argument("--force", action="store_true", help="replace an existing bundle")
    cml.set_defaults(func=run_coreml)

    trt = targets.add_parser("tensorrt", help="build and cache TensorRT engines for a bundle on this machine")
    trt.add_argument("--model", required=True, metavar="BUNDLE", help="a bundle written by `refocus export onnx`")
    trt.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16", "int8", "fp8"],
                     help="engine precision (default fp16; int8 / fp8 need a bundle from `refocus quantize`)")
    trt.set_defaults(func=run_tensorrt)


def run_onnx(args) -> int:
    from refocus_edge.export.onnx_export import OnnxExportConfig, export_onnx

    cfg = OnnxExportConfig(model=args.model or default_model_name(), out=args.out, precisions=tuple(args.precision),
                           resolutions=tuple(args.resolution or ()), force=args.force,
                           gate_steps=args.gate_steps)
    export_onnx(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(args.out)
    return 0


def run_coreml(args) -> int:
    from refocus_edge.export.coreml.export import CoreMLExportConfig, export_coreml
    from refocus_edge.export.coreml.recipes import CoreMLRecipe

    recipes = tuple(CoreMLRecipe(args.precision, None if c == "none" else c) for c in dict.fromkeys(args.compress))
    cfg = CoreMLExportConfig(model=args.model or default_model_name(), out=args.out, recipes=recipes,
                             resolution=args.resolution, max_package_mb=args.max_package_mb, force=args.force,
                             gate_steps=args.gate_steps)
    export_coreml(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(args.out)
    return 0


def run_tensorrt(args) -> int:
    from refocus_edge.runtime.backends.backend_tensorrt import build_engines
    from refocus_edge.runtime.bundle import open_bundle

    for row in build_engines(open_bundle(args.model), args.precision):
        state = "built" if row["built"] else "cached"
        print(f"{row['name']:14s} {state:6s} {row['seconds']:7.1f} s  {row['path']}", file=sys.stderr)
    return 0
