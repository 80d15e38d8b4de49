"""The re-blur oracle (benchmarks/reblur_oracle.py) adds blur, never detail: each output pixel is the
true frame where that frame is at least as defocused as the photo, else the photo."""

import numpy as np
import pytest
import torch

from benchmarks.reblur_oracle import reblur_oracle


def test_the_oracle_keeps_the_photo_where_a_frame_would_be_sharper():
    frames = torch.rand(9, 3, 2, 2)
    index = np.full((2, 2), 2.0, dtype=np.float32)  # the scene sits at focus index 2, the photo at k = 4
    index[0, 0] = 4.0  # ... except one pixel the photo has in focus: every frame is blurrier there
    out = reblur_oracle(frames, index, k=4)
    for j in range(9):
        blurrier = abs(j - 2) >= 2  # frames 0 and 4..8 blur the scene at least as much as the photo does
        want = frames[j] if blurrier else frames[4]
        assert torch.equal(out[j, :, 1, 1], want[:, 1, 1]), j
        assert torch.equal(out[j, :, 0, 0], frames[j, :, 0, 0]), j
    assert torch.equal(out[4], frames[4])  # the photo's own frame is the photo


def test_sharpen_unsharp_masks_the_photo_only_where_a_frame_would_be_sharper():
    torch.manual_seed(0)
    frames = torch.rand(9, 3, 8, 8)
    index = np.full((8, 8), 2.0, dtype=np.float32)
    plain, sharp = reblur_oracle(frames, index, k=4), reblur_oracle(frames, index, k=4, sharpen=(1.0, 2.0))
    for j in range(9):
        if abs(j - 2) >= 2:  # blurrier than the photo: the true frame either way
            assert torch.equal(sharp[j], frames[j]), j
        else:  # sharper: more high-frequency energy than the photo, and not the photo
            lap = lambda x: (x[..., 1:-1, 1:-1] * 4 - x[..., :-2, 1:-1] - x[..., 2:, 1:-1]
                             - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]).abs().mean()
            assert not torch.equal(sharp[j], plain[j]) and lap(sharp[j]) > 1.5 * lap(plain[j]), j


def test_graded_sharpening_grows_toward_the_frame_focused_on_the_pixel():
    torch.manual_seed(0)
    frames = torch.rand(9, 3, 8, 8)
    index = np.full((8, 8), 1.0, dtype=np.float32)  # the scene at focus index 1, the photo at k = 5
    graded = reblur_oracle(frames, index, k=5, sharpen=(1.0, 0.5), graded=True)
    lap = lambda x: (x[..., 1:-1, 1:-1] * 4 - x[..., :-2, 1:-1] - x[..., 2:, 1:-1]
                     - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]).abs().mean()
    detail = [float(lap(graded[j])) for j in range(2, 5)]  # frames 2, 3, 4: 3, 2, 1 frames of focus gained
    assert detail[0] > detail[1] > detail[2] > float(lap(frames[5]))
    assert torch.equal(graded[5], frames[5]) and torch.equal(graded[8], frames[8])  # as blurred: the true frame
    with pytest.raises(ValueError, match="graded sharpening needs"):
        reblur_oracle(frames, index, k=5, graded=True)
