"""Export target registry: every module `target_<name>.py` in this package that defines
`EXPORTER` is a target of `refocus export` (the interface: base.py; the skeleton they
plug into: export/driver.py). Target modules import nothing heavy at module level, so
the CLI builds its `refocus export <target>` subcommands from this registry instantly."""
from __future__ import annotations

import functools
import importlib
import pkgutil

TARGET_ORDER = ("onnx", "coreml", "executorch")  # listing order only
# Convention: target_<name>.py defines EXPORTER with EXPORTER.name == <name> (tests/test_export_driver.py checks).


def target_names() -> list[str]:
    """The registered targets' names, in listing order, from the module names alone."""
    order = {n: i for i, n in enumerate(TARGET_ORDER)}
    names = [info.name.removeprefix("target_") for info in pkgutil.iter_modules(__path__)
             if info.name.startswith("target_")]
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


@functools.lru_cache(maxsize=1)
def registry() -> dict:
    """{name: Exporter} of every target, in listing order."""
    found = {}
    for name in target_names():
        exporter = getattr(importlib.import_module(f"{__name__}.target_{name}"), "EXPORTER", None)
        if exporter is not None:
            found[exporter.name] = exporter
    return found


def get_target(name: str):
    from refocus_edge.runtime.errors import InvalidArgumentError

    targets = registry()
    if name not in targets:
        raise InvalidArgumentError(f"unknown export target {name!r}; choose one of: {', '.join(targets)}")
    return targets[name]
