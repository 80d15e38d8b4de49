"""Backend registry: every module `backend_<name>.py` in this package that defines
`BACKEND` is a backend. Discovery imports only these small modules; each imports
its heavy package (onnxruntime, openvino, tensorrt, coremltools) when a component loads."""
from __future__ import annotations

import functools
import importlib
import pkgutil

BACKEND_ORDER = ("torch", "onnxruntime", "openvino", "tensorrt", "coreml", "executorch")  # listing order only
# Convention: backend_<name>.py defines BACKEND with BACKEND.name == <name> (tests/test_cli_help.py checks).


def backend_names() -> list[str]:
    """The registered backends' names, in listing order, from the module names alone: the CLI
    builds its --backend choices from this without importing any backend (or torch)."""
    order = {n: i for i, n in enumerate(BACKEND_ORDER)}
    names = [info.name.removeprefix("backend_") for info in pkgutil.iter_modules(__path__)
             if info.name.startswith("backend_")]
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


@functools.lru_cache(maxsize=1)
def registry() -> dict:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("backend_"):
            backend = getattr(importlib.import_module(f"{__name__}.{info.name}"), "BACKEND", None)
            if backend is not None:
                found[backend.name] = backend
    order = {n: i for i, n in enumerate(BACKEND_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def get_backend(name: str):
    from refocus_edge.runtime.errors import InvalidArgumentError

    backends = registry()
    if name not in backends:
        raise InvalidArgumentError(f"unknown backend {name!r}; choose auto or one of: {', '.join(backends)}")
    return backends[name]
