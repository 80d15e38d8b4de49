"""Hide the heavy packages from a Python process, as if they were not installed.

Put this folder first on PYTHONPATH: Python imports `sitecustomize` at start-up, and from then
on `import torch` (diffusers, transformers, torchvision and their submodules) raises
ModuleNotFoundError, and importlib.util.find_spec refuses them the same way. With
$REFOCUS_HIDDEN_LOG set, every refused name is appended to that file (one a line), so a test can
tell "never tried" from "tried and handled". Used by tests/test_thin_runtime.py and
benchmarks/thin_runtime.py to run the thin runtime where the packages are on disk but must not
be used.
"""
import os
import sys

HIDDEN = ("torch", "torchvision", "diffusers", "transformers")


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in HIDDEN:
            return None
        log = os.environ.get("REFOCUS_HIDDEN_LOG")
        if log:
            with open(log, "a") as f:
                f.write(name + "\n")
        raise ModuleNotFoundError(f"No module named {name!r} (hidden by tests/no_torch)", name=name)


sys.meta_path.insert(0, _Hide())
