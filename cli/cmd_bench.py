"""`refocus bench`: latency, drift and memory of a bundle on every backend (bench/backends.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from refocus_edge.runtime.zoo import DEFAULT_MODEL  # a name only: zoo imports nothing heavy


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
    p.set_defaults(func=run)


def run(args) -> int:
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
