"""Silence diffusers/transformers chatter (progress bars, install advice, backend notices)
around a block: the CLI's stderr is for the user's report."""
from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_libraries():
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    levels = (dlog.get_verbosity(), tlog.get_verbosity())
    bars = tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        if bars:
            tlog.enable_progress_bar()
