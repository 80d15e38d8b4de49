"""The lens route (runtime/lens_stack.py, training/depth_head.py): a stack made from the photo by the
thin-lens model is sharpest where it should be, and the focus-depth head trains, resumes and refuses
what it cannot take."""

import numpy as np
import pytest
import torch

from refocus_edge.runtime.lens_stack import LENS_BLURS, FocusDepthHead, LensStack


def _offsets(k: int) -> torch.Tensor:
    return (torch.arange(9.0) - k) / 8


def _detail(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute Laplacian per frame of [F, 3, H, W], away from the border."""
    x = frames[..., 4:-4, 4:-4]
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return lap.abs().mean(dim=(1, 2, 3))


def test_weights_blur_where_a_frame_is_farther_from_focus_and_sharpen_where_closer():
    lens = LensStack(9, (8, 8, 8, 8), amount=0.5)
    w = lens.weights(_offsets(4), torch.tensor(0.8))  # photo at position 4, 0.8 px of blur per frame
    blur_part = w[..., :-1]
    assert torch.allclose(blur_part.sum(-1), torch.ones(9, 9))  # photo + blurs: a convex mix, always
    assert w[4, 4, 0] == 1 and w[4, 4, 1:].abs().sum() == 0  # the photo's own frame at its focus: the photo
    assert w[0, 4, 0] == 0  # frame 0 of an in-focus pixel: blurred, not the photo
    assert w[2, 0, -1] == pytest.approx(0.5 * (4 - 2))  # two frames of focus gained: twice the amount
    assert w[6, 0, -1] == 0  # farther than the photo: no sharpening
    sigmas = LENS_BLURS
    assert sigmas[0] == pytest.approx(0.2) and sigmas[-1] >= 3.2 * 8 / 2  # the widest blur at 512 px wide
    assert all(b > a for a, b in zip(sigmas, sigmas[1:]))


def test_a_stack_from_a_known_depth_peaks_in_sharpness_at_that_depth():
    torch.manual_seed(0)
    photo = torch.rand(3, 48, 48) * 0.5 + 0.25
    from refocus_edge.dof.focus_measure import gaussian_blur

    photo = gaussian_blur(photo, 1.5)  # the photo at position 6 of a scene at focus index 2: blurred
    probs = torch.zeros(9, 48, 48)
    probs[2] = 1.0
    lens = LensStack(9, (8, 8, 8, 8), amount=0.5)
    stack = (lens.draw(photo[None] * 2 - 1, probs, _offsets(6), torch.tensor(1.0)) + 1) / 2
    assert stack.shape == (9, 3, 48, 48)
    assert torch.allclose(stack[6], photo.clamp(0, 1), atol=1e-6)  # the input frame is the photo
    detail = _detail(stack)
    assert int(detail.argmax()) == 2  # sharpest at the scene's own focus
    assert all(detail[j] > detail[j + 1] for j in range(2, 8))  # and blurrier frame by frame beyond it
    assert all(detail[j] > detail[j - 1] for j in range(1, 3))


def test_the_head_reads_the_position_and_refuses_sides_it_cannot_take():
    torch.manual_seed(0)
    head = FocusDepthHead(9, (8, 8, 8, 8)).eval()
    photo = torch.rand(1, 3, 32, 48) * 2 - 1
    step = torch.tensor([0.8])
    a, b = head(photo, torch.tensor([0]), step), head(photo, torch.tensor([8]), step)
    assert a.shape == (1, 9, 32, 48) and not torch.allclose(a, b)
    assert not torch.allclose(a, head(photo, torch.tensor([0]), torch.tensor([1.6])))  # it reads the blur scale
    with pytest.raises(ValueError, match="multiples of 8"):
        head(torch.rand(1, 3, 30, 48), torch.tensor([0]), step)
    grey = FocusDepthHead(9, (8, 8, 8, 8), colour=False).eval()  # blur cues only: colours do not reach it
    swapped = photo[:, [2, 0, 1]]  # the same grey level, other colours
    assert torch.allclose(grey(photo, torch.tensor([0]), step), grey(swapped, torch.tensor([0]), step), atol=1e-6)
    assert not torch.allclose(head(photo, torch.tensor([0]), step), head(swapped, torch.tensor([0]), step))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from refocus_edge.focalstacks.synthetic import render_cache

    return render_cache("train", 6, (32, 32), tmp_path_factory.mktemp("lens") / "train.npy", progress=False)


def _cfg(tiny_data, tmp_path, **kw):
    from training.depth_head import DepthHeadConfig

    base = dict(data=tiny_data, out=tmp_path / "head.pt", iterations=40, batch=4, lr=3e-3, channels=(8, 8, 8, 8),
                run_dir=tmp_path / "run", progress=False)
    return DepthHeadConfig(**{**base, **kw})


def test_training_lowers_the_loss_and_a_resumed_run_continues_it_exactly(tiny_data, tmp_path):
    from training.depth_head import DepthHeadTrainer, load_head, train

    torch.manual_seed(0)
    whole = DepthHeadTrainer(_cfg(tiny_data, tmp_path / "a"), log=lambda *_: None)
    whole.run()
    losses = [v for _, v in whole.history]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])

    torch.manual_seed(0)
    first = DepthHeadTrainer(_cfg(tiny_data, tmp_path / "b"), log=lambda *_: None)
    first.run(stop_after=15)  # killed after 15 updates (the checkpoint is written at the stop)
    torch.manual_seed(1)  # the resumed run must not depend on the global seed
    again = DepthHeadTrainer(_cfg(tiny_data, tmp_path / "b"), log=lambda *_: None)
    assert again.resume() and again.step == 15
    again.run()
    assert [v for _, v in again.history] == pytest.approx(losses, rel=1e-5)

    torch.manual_seed(0)
    out = train(_cfg(tiny_data, tmp_path / "c"), log=lambda *_: None)
    head = load_head(out)
    assert head(torch.zeros(1, 3, 32, 32), torch.tensor([4]), torch.tensor([0.4])).shape == (1, 9, 32, 32)


def test_larger_stacks_are_drawn_as_crops_with_their_own_blur_step(tiny_data, tmp_path):
    from refocus_edge.focalstacks.synthetic import render_cache
    from training.depth_head import DepthHeadTrainer

    wide = render_cache("train", 2, (32, 64), tmp_path / "wide.npy", progress=False)
    trainer = DepthHeadTrainer(_cfg(tiny_data, tmp_path, more_data=(wide,), more_mix=0.5), log=lambda *_: None)
    photos, positions, steps, indices = trainer.batch()
    assert photos.shape == (4, 3, 32, 32) and indices.shape == (4, 32, 32)
    assert {round(s, 4) for s in steps.tolist()} <= {0.2, 0.4}  # each draw: the step of its stack's width, 0.05 W / 8
    seen = set()
    for _ in range(10):
        seen |= {round(s, 4) for s in trainer.batch()[2].tolist()}
    assert seen == {0.2, 0.4}
    with pytest.raises(Exception, match="sides at least"):
        DepthHeadTrainer(_cfg(wide, tmp_path / "x", more_data=(tiny_data,)), log=lambda *_: None)


def test_a_run_with_other_settings_is_refused_and_data_without_depth_is_named(tiny_data, tmp_path):
    from refocus_edge.runtime.errors import InvalidArgumentError
    from training.depth_head import DepthHeadTrainer

    DepthHeadTrainer(_cfg(tiny_data, tmp_path), log=lambda *_: None).run(stop_after=2)
    with pytest.raises(InvalidArgumentError, match="different settings"):
        DepthHeadTrainer(_cfg(tiny_data, tmp_path, lr=1e-3), log=lambda *_: None).resume()
    bare = tmp_path / "bare.npy"
    np.save(bare, np.zeros((2, 9, 32, 32, 3), np.uint8))
    with pytest.raises(InvalidArgumentError, match="no depth sidecar"):
        DepthHeadTrainer(_cfg(bare, tmp_path / "bare"), log=lambda *_: None)


def test_the_command_line_sets_the_heads_depth_and_refuses_widths_it_cannot_build(tiny_data, tmp_path):
    import json

    from training.depth_head import load_head, main

    out = tmp_path / "head.pt"
    assert main(["--data", str(tiny_data), "--out", str(out), "--iterations", "2", "--batch", "2", "--no-colour",
                 "--channels", "8", "8", "8", "8", "8", "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["channels"] == [8, 8, 8, 8, 8]
    head = load_head(out)
    assert head.multiple == 16  # five levels: four halvings
    assert head(torch.zeros(1, 3, 32, 32), torch.tensor([4]), torch.tensor([0.4])).shape == (1, 9, 32, 32)
    for bad in (["8"], ["8", "6"]):
        with pytest.raises(SystemExit):
            main(["--data", str(tiny_data), "--out", str(tmp_path / "x.pt"), "--channels", *bad])
