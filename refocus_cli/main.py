"""Entry point of the `refocus` command.

Each verb lives in its own module `refocus_cli/cmd_<verb>.py` exposing
`register(subparsers)`, which adds the verb's parser and sets `func` to a
callable taking the parsed namespace and returning an exit code. The namespace
is turned into typed config objects inside the verb module; library code never
sees argparse.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Verb modules, in the order `refocus --help` lists them.
VERBS = ("run", "edit", "models", "lpips", "export", "quantize", "distill", "backends", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refocus",
        description="Generative refocusing: one photo in, a 9-frame focal stack out.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        importlib.import_module(f"refocus_cli.cmd_{verb}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from runtime.errors import RefocusError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RefocusError as exc:
        print(f"refocus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refocus: interrupted; earlier results were left untouched", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
