"""`refocus quantize`: calibrated, sensitivity-scanned, drift-gated quantized bundles."""
from __future__ import annotations

import sys
from pathlib import Path

from refocus_edge.quantization.recipes import DEFAULT_RECIPE, RECIPES  # plain data: nothing heavy at import
from refocus_edge.cli.arg_types import seed, size_wxh
from refocus_edge.runtime.zoo import DEFAULT_MODEL, default_model_name

RECIPE_NAMES = tuple(RECIPES)


def register(sub) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a model (int8/fp8 QDQ, fp16/bf16, Core ML w8/p6/p4) into a gated bundle",
        description="Quantize a refocuser into a bundle. int8/fp8: static QDQ ONNX graphs calibrated on "
                    "focal stacks at the model's own sigmas, with a per-block sensitivity scan that keeps "
                    "blocks in float when they drift the stack too much; fp16/bf16: reduced-precision float; "
                    "w8/p6/p4: Core ML weight compression. Every recipe is gated by the LPIPS drift of "
                    "held-out stacks against the fp32 model; a failed gate writes nothing.")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help=f"shipped model name, model folder, or an fp32 ONNX bundle (default: $REFOCUS_MODEL or "
                        f"{DEFAULT_MODEL}, the shipped default)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=RECIPE_NAMES,
                   help="int8 (ONNX Runtime CPU + TensorRT; the default edge recipe), fp8 (TensorRT sm89+), "
                        "fp16, bf16 (TensorRT), w8 / p6 / p4 (Core ML)")
    p.add_argument("--out", type=Path, required=True, metavar="BUNDLE", help="bundle folder to write")
    p.add_argument("--calibration-samples", type=int, default=24, metavar="N",
                   help="calibration stacks (default 24; each gives one call per component per step)")
    p.add_argument("--calibration-data", default="synthetic", metavar="synthetic|DIR",
                   help="'synthetic' (training split) or a learn2refocus-layout folder (default synthetic)")
    p.add_argument("--seed", type=seed, default=0, help="calibration and drift seeds (default 0)")
    p.add_argument("--drift-photos", type=int, default=4, metavar="N",
                   help="held-out stacks the scan and the gates measure drift on (default 4)")
    p.add_argument("--unit-budget", type=float, default=None, metavar="LPIPS",
                   help="median-frame drift one block may cause alone before it stays in float "
                        "(default: the recipe's)")
    p.add_argument("--no-scan", action="store_true",
                   help="skip the sensitivity scan: keep only the known-sensitive blocks in float")
    p.add_argument("--resolution", nargs="+", type=size_wxh, default=None, metavar="WxH",
                   help="working sizes of the graphs (default: the model's working size)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from refocus_edge.export.calibration import CalibrationConfig
    from refocus_edge.quantization.drift import DriftConfig
    from refocus_edge.quantization.quantize import QuantizeConfig, quantize_model

    cfg = QuantizeConfig(
        model=args.model or default_model_name(), recipe=args.recipe, out=args.out,
        calibration=CalibrationConfig(samples=args.calibration_samples, seed=args.seed,
                                      data=args.calibration_data, progress=not args.quiet),
        drift=DriftConfig(photos=args.drift_photos, seed=args.seed), scan=not args.no_scan,
        unit_budget=args.unit_budget, resolutions=tuple(args.resolution or ()), force=args.force,
        progress=not args.quiet)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    report = quantize_model(cfg, log=log)
    print(report.out)
    return 0
