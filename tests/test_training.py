"""The training script's data plumbing and EDM pieces (no training runs here)."""
import torch

from training import edm
from training.train_tiny import _vae_batch, to_m11


def _stacks(n=5, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 9, size, size, 3), generator=g, dtype=torch.uint8)


def test_vae_batch_mixed_crops_have_nine_frames_of_the_crop_size():
    frames = _vae_batch(_stacks(), 16, False, torch.Generator().manual_seed(1))
    assert frames.shape == (9, 3, 16, 16)
    assert frames.min() >= -1 and frames.max() <= 1


def test_vae_batch_whole_stack_is_one_stack_at_one_place():
    stacks = _stacks()
    frames = _vae_batch(stacks, 32, True, torch.Generator().manual_seed(2))
    # A full-size crop of one stack: equal to some stack's 9 frames, possibly mirrored.
    candidates = [to_m11(s) for s in stacks]
    assert any(torch.equal(frames, c) or torch.equal(frames, c.flip(-1)) for c in candidates)


def test_vae_batch_is_deterministic_by_seed():
    stacks = _stacks()
    a = _vae_batch(stacks, 16, False, torch.Generator().manual_seed(3))
    b = _vae_batch(stacks, 16, False, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_conditioning_dropout_rates_match_the_reference():
    keep_emb, keep_lat = edm.conditioning_dropout_masks(200_000, torch.Generator().manual_seed(0))
    drop_emb, drop_lat = 1 - keep_emb, 1 - keep_lat
    assert abs(drop_emb.mean().item() - 0.2) < 0.01  # 10% embedding only + 10% both
    assert abs(drop_lat.mean().item() - 0.2) < 0.01
    assert abs((drop_emb * drop_lat).mean().item() - 0.1) < 0.01


def test_edm_v_loss_is_zero_for_a_perfect_denoiser_and_weights_low_sigma_more():
    target = torch.randn(2, 9, 4, 4, 4)
    sig = torch.tensor([0.1, 10.0])
    assert edm.edm_v_loss(target, target, sig).item() == 0.0
    err = target + 0.1
    low = edm.edm_v_loss(err[:1], target[:1], sig[:1]).item()
    high = edm.edm_v_loss(err[1:], target[1:], sig[1:]).item()
    assert low > 50 * high
