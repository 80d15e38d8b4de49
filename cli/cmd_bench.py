"""`refocus bench`: latency, drift and memory of a bundle on every backend (bench/backends.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from refocus_edge.runtime.component_names import DECODERS
from refocus_edge.runtime.zoo import DEFAULT_MODEL, TEACHER_MODEL  # names only: zoo imports nothing heavy


def register(sub) -> None:
    from refocus_edge.bench.backends import add_arguments

    p = sub.add_parser(
        "bench", help="benchmark a bundle on every backend: latency, drift vs torch, memory",
        description="Load a bundle once per backend and precision (each in a fresh process), time every "
                    "stage and both sampler modes, measure LPIPS drift against torch fp32 on held-out "
                    "synthetic stacks and the peak memory, and write bench.json-style results, a markdown "
                    "report and charts into --out. A model folder (not a bundle) can only be measured on "
                    "torch; export it first (`refocus export onnx`) to compare backends.")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH_OR_BUNDLE",
                   help="a bundle (from `refocus export onnx`), or a model folder / shipped name for a "
                        f"torch-only run (default: $REFOCUS_MODEL or {DEFAULT_MODEL})")
    p.add_argument("--out", type=Path, default=Path("out/bench"), metavar="DIR",
                   help="folder for backends.json, backends.md and the PNG charts (default out/bench)")
    add_arguments(p)
    p.add_argument("--against-reference", action="store_true",
                   help="instead: time --model as `refocus run` would run it (dispatch picks backends and precisions "
                        "unless --backend/--precision name one) against the reference (--reference, --mode reference, "
                        "torch fp32) on samples/coffee.jpg in one interleaved run (--repeats rounds), per stage, plus "
                        "LPIPS to the truth of both on --count held-out stacks; writes edge.json and edge.md")
    p.add_argument("--reference", default=TEACHER_MODEL, metavar="NAME_OR_PATH",
                   help=f"--against-reference: the reference model (default {TEACHER_MODEL})")
    p.add_argument("--decoder", default=None, choices=list(DECODERS),
                   help="--against-reference with a model folder as --model: its decoder (see `refocus run`)")
    p.set_defaults(func=run)


def run_against_reference(args) -> int:
    from refocus_edge.bench.edge import EdgeBenchConfig, run_edge_bench, write_edge_report
    from refocus_edge.runtime.errors import InvalidArgumentError
    from refocus_edge.runtime.zoo import default_model_name

    for name in ("backend", "precision"):
        if len(getattr(args, name) or ()) > 1:
            raise InvalidArgumentError(f"--against-reference runs one edge configuration: give at most one --{name}")
    cfg = EdgeBenchConfig(edge=args.model or default_model_name(), reference=args.reference,
                          backend=(args.backend or [None])[0], precision=(args.precision or [None])[0],
                          decoder=args.decoder, rounds=args.repeats, warmup=args.warmup, count=args.count,
                          positions=tuple(args.positions), seed=args.seed)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_edge_bench(cfg, log=lambda msg: print(msg, file=sys.stderr))
    command = "refocus bench " + " ".join(sys.argv[2:])
    paths = write_edge_report(result, args.out, command)
    print(f"speed-up {result['speedup']:.1f}x; wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    print(args.out)
    return 0


def run(args) -> int:
    if args.against_reference:
        return run_against_reference(args)
    from refocus_edge.bench.backends import (command_line, config_from_args, run_backend_bench, summary_lines,
                                     write_backend_report)
    from refocus_edge.runtime.bundle import is_bundle
    from refocus_edge.runtime.zoo import resolve_model

    folder = resolve_model(args.model)
    others = [b for b in (args.backend or ()) if b != "torch"]
    if folder.is_dir() and not is_bundle(folder) and not others:
        # Said before the (long) run, not only in the report: the user may have meant the bundle.
        print(f"refocus bench: {folder} is a model folder, not a bundle: only torch can be measured. To "
              f"compare backends, export it first: refocus export onnx --model {args.model or folder} "
              "--out BUNDLE, then refocus bench --model BUNDLE", file=sys.stderr)
    cfg = config_from_args(args, args.model)
    result = run_backend_bench(cfg)
    result["command"] = command_line(cfg, "refocus bench", args.out)
    paths = write_backend_report(result, args.out)
    print("\n".join(summary_lines(result)))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    print(args.out)
    return 0
