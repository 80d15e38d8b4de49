"""Entry point of the `refocus` command.

Each verb lives in its own module `cli/cmd_<verb>.py` (refocus_edge.cli) exposing
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
VERBS = ("run", "edit", "models", "lpips", "export", "quantize", "distill", "distill_decoder", "backends", "bench")
# The pyproject extra that installs an optional package (anything else heavy comes with [export]).
EXTRA_OF = {"onnxruntime": "onnx", "coremltools": "coreml", "tensorrt": "tensorrt"}


def _version() -> str:
    """The installed distribution's version (the package's own when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("refocus-edge")
    except PackageNotFoundError:
        from refocus_edge import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refocus",
        description="Generative refocusing: one photo in, a 9-frame focal stack out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        importlib.import_module(f"{__package__}.cmd_{verb}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from refocus_edge.runtime.errors import RefocusError

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
    except ModuleNotFoundError as exc:
        # The thin install (numpy, pillow, a backend) runs bundles; the toolchain needs its extra.
        package = (exc.name or "").split(".")[0]
        if not package or package.startswith("refocus_edge"):
            raise
        print(f"refocus: error: `refocus {args.verb}` needs the package '{package}', which is not installed "
              f"here; pip install 'refocus-edge[{EXTRA_OF.get(package, 'export')}]'", file=sys.stderr)
        return 2
    except OSError as exc:
        # Disk full, read-only or unreadable folders, I/O errors: one line, and (every result is
        # published all at once, runtime/publish.py) nothing partial was left behind.
        print(f"refocus: error: {os_error_line(exc)}", file=sys.stderr)
        return 2


def os_error_line(exc: OSError) -> str:
    """`path: what went wrong (ENOSPC)` for any OSError, with a hint for the common ones."""
    import errno

    hints = {errno.ENOSPC: "free some space or pick an --out on another disk; nothing was written",
             errno.EROFS: "the folder is on a read-only file system; pick another --out",
             errno.EACCES: "no permission; pick another --out or fix the folder's permissions",
             errno.EIO: "the disk reported an I/O error reading or writing this file"}
    where = exc.filename if exc.filename is not None else ""
    code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    text = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
    hint = hints.get(exc.errno)
    return (f"{where}: " if where else "") + text + (f"; {hint}" if hint else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
