"""The thread budget every CPU backend gets, so that their timings compare like with like."""
from __future__ import annotations

import os
import sys


def thread_budget() -> int:
    """PyTorch's thread count where torch is loaded (OMP_NUM_THREADS / torch.set_num_threads), else
    $OMP_NUM_THREADS, else 0: the backend's own default (ONNX Runtime and OpenVINO both read 0 as
    "choose for this machine")."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "0")), 0)
    except ValueError:
        return 0
