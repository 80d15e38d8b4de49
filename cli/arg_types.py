"""Argument types shared by several verbs."""
from __future__ import annotations

import argparse


def size_wxh(text: str) -> tuple[int, int]:
    """'512x320' -> (512, 320): width x height."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x320 (W x H), got {text!r}") from None
    return w, h
