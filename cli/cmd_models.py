"""`refocus models`: the shipped models, addressable by name."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list the shipped models",
                       description="List shipped models (use the name with --model).")
    p.set_defaults(func=run)


def run(args) -> int:
    from refocus_edge.runtime.zoo import DEFAULT_MODEL, list_models, models_dir

    models = list_models()
    if not models:
        print(f"no shipped models found in {models_dir()}")
        return 0
    width = max(len(m.name) for m in models)
    for m in models:
        flag = " (default)" if m.name == DEFAULT_MODEL else ""
        print(f"{m.name:<{width}}  {m.summary}{flag}  [{m.path}]")
    return 0
