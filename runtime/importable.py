"""Whether an optional package can be imported here, without importing it."""
from __future__ import annotations

import importlib.util
import sys


def importable(name: str) -> bool:
    """True when `name` is loaded already or its import system finds it. A finder that refuses the
    name (ImportError: how tests hide torch) or a broken parent package count as "not installed"."""
    if sys.modules.get(name) is not None:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
