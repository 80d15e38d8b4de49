"""Which model a benchmark runs, and at what size: shared by the quality and latency benchmarks."""
from __future__ import annotations

DEFAULT_SIZE = (128, 128)  # (W, H) for models without a fixed working size


def load(model):
    """A Refocuser as is; a shipped name or folder is loaded."""
    from refocus_edge.runtime.loading import Refocuser, load_refocuser

    return model if isinstance(model, Refocuser) else load_refocuser(model)


def working_size(refocuser) -> tuple[int, int]:
    """(W, H) the model is benchmarked at: its fixed working size, else DEFAULT_SIZE."""
    fixed = refocuser.config.fixed_size
    return (int(fixed[0]), int(fixed[1])) if fixed is not None else DEFAULT_SIZE
