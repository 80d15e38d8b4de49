"""Argument types shared by several verbs."""
from __future__ import annotations

import argparse


SIDE_MIN, SIDE_MAX, SIDE_STEP = 8, 8192, 8  # every VAE here downsamples 8x; the model checks its own step


def size_wxh(text: str) -> tuple[int, int]:
    """'512x320' -> (512, 320): width x height, each side a multiple of 8 in [8, 8192] (the model later
    checks its own, stricter rule, e.g. multiples of 64 for the released UNet)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x320 (W x H), got {text!r}") from None
    for side in (w, h):
        if not SIDE_MIN <= side <= SIDE_MAX or side % SIDE_STEP:
            raise argparse.ArgumentTypeError(f"{text!r}: each side must be a multiple of {SIDE_STEP} from "
                                             f"{SIDE_MIN} to {SIDE_MAX}")
    return w, h


SEED_MAX = 2 ** 64 - 1  # torch.Generator.manual_seed takes 0 .. 2^64 - 1


def seed(text: str) -> int:
    """A noise seed, checked at parse time: an integer 0 .. 2^64 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer 0..{SEED_MAX}, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed must be in 0..{SEED_MAX} (2^64 - 1), got {value}")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a count that may be none), checked at parse time."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, counts), checked at parse time."""
    return _int_at_least(text, 1)
