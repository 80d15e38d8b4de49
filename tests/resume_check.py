"""One check shared by the student-training tests: a run killed and resumed equals one never stopped."""
from __future__ import annotations

import torch


def assert_resume_is_seamless(straight, make_cut_trainer, stop_after: int) -> None:
    """`straight` ran to the end; `make_cut_trainer()` builds a fresh trainer of the same run in another
    folder (as a new process would). Killed after `stop_after` updates then resumed, the run must end with
    the same loss history, EMA and live weights."""
    first = make_cut_trainer()
    first.run(stop_after=stop_after)
    assert first.step == stop_after and first.ckpt.is_file()
    second = make_cut_trainer()
    assert second.resume() and second.step == stop_after
    second.run()
    assert second.history == straight.history
    for a, b in zip(second.ema.state_dict().values(), straight.ema.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(second.student.parameters(), straight.student.parameters()):
        assert torch.equal(a, b)
