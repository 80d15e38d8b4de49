"""`refocus backends`: every backend, whether it runs here, why not, and measured times."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("backends", help="list backends, their availability and measured speed",
                       description="List every backend and whether it is available on this machine. "
                                   "With --model BUNDLE, time each backend per component (the same "
                                   "measurement `--backend auto` uses, cached per machine).")
    p.add_argument("--model", default=None, metavar="BUNDLE", help="a bundle to time the backends on")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16", "int8", "fp8"],
                   help="only artifacts of this precision compete (default: every gated precision in the bundle)")
    p.set_defaults(func=run)


def run(args) -> int:
    from refocus_edge.runtime.backends import registry

    for name, backend in registry().items():
        state = backend.availability()
        mark = "yes" if state.available else "no "
        print(f"{name:12s} {mark}  {state.reason}")
    if args.model is None:
        return 0
    from refocus_edge.runtime.bundle import open_bundle
    from refocus_edge.runtime.dispatch import load_runners

    bundle = open_bundle(args.model)
    _, choices = load_runners(bundle, "auto", args.precision)
    print(f"\nmeasured on this machine (median of warm calls at the opt shapes), bundle {bundle.root}:")
    for c in choices:
        measured = sorted((v, k) for k, v in c.timings_ms.items() if isinstance(v, (int, float)))
        times = ", ".join(f"{k} {v:.1f} ms" for v, k in measured)
        failed = [f"{k}: {v}" for k, v in c.timings_ms.items()
                  if isinstance(v, str) and not v.startswith("unavailable")]
        times += "".join(f"; {f}" for f in failed)
        print(f"{c.component:14s} -> {c.backend}/{c.precision}   [{times}]")
    return 0
