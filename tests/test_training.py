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


def test_sigma_mixture_reaches_the_samplers_top_sigmas_and_stays_in_range():
    g = torch.Generator().manual_seed(0)
    plain = edm.sample_sigmas(20000, g)
    mixed = edm.sample_sigmas(20000, torch.Generator().manual_seed(0), uniform_fraction=0.6)
    # LogNormal(0.7, 1.6) alone almost never trains where sampling starts (sigma > 100) ...
    assert (plain > 100).float().mean() < 0.01
    # ... the mixture does: 60% log-uniform over [0.002, 700] puts ~9% there.
    share = (mixed > 100).float().mean().item()
    assert 0.07 < share < 0.11
    assert mixed.min() > 0 and (mixed > edm.SAMPLER_SIGMA_MAX).float().mean() < 0.01


def test_sigma_mixture_of_zero_draws_exactly_the_plain_lognormal():
    a = edm.sample_sigmas(64, torch.Generator().manual_seed(3))
    b = edm.sample_sigmas(64, torch.Generator().manual_seed(3), uniform_fraction=0.0)
    assert torch.equal(a, b)


def test_probe_reports_the_denoiser_and_the_copy_estimate_per_sigma(random_model_dir):
    from training.probe import probe

    result = probe(random_model_dir, count=1, positions=(0,), sigmas=(700.0, 1.0))
    assert set(result) == {700.0, 1.0}
    for row in result.values():
        assert set(row) == {"model", "model_far", "copy", "copy_far", "model_by_jump", "copy_by_jump"}
        assert all(row[key] >= 0 and row[key] == row[key] for key in ("model", "model_far", "copy", "copy_far"))
        # Input at position 0: output frames at every distance 0..8, the first being the input's own.
        assert len(row["model_by_jump"]) == len(row["copy_by_jump"]) == 9
    # On its own frame the copy is the ground truth's latent; with distance it gets worse.
    by_jump = result[1.0]["copy_by_jump"]
    assert by_jump[0] < 1e-6 < by_jump[8]
    assert abs(sum(by_jump) / 9 - result[1.0]["copy"]) < 1e-6
    # Copying the input's latent does not depend on the noise level; the far frames
    # (|j - k| >= 4) are the ones a copy gets most wrong.
    assert result[700.0]["copy"] == result[1.0]["copy"]
    assert result[700.0]["copy_far"] > result[700.0]["copy"]
    # An untrained UNet is far from the clean latents where sampling starts.
    assert result[700.0]["model"] > result[700.0]["copy"]


def test_trajectory_follows_the_models_own_sampler_step_by_step(random_model_dir):
    from refocus_edge.runtime.loading import load_refocuser
    from training.probe import trajectory

    rows = trajectory(random_model_dir, count=1)
    steps = load_refocuser(random_model_dir).config.num_inference_steps
    assert len(rows) == steps
    sigmas = [row["sigma"] for row in rows]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[-1] > 0
    assert all(row["mse"] >= 0 and row["mse_own"] >= 0 for row in rows)


def test_min_snr_caps_the_low_sigma_weight_and_edm_is_the_reference():
    sig = torch.tensor([0.01, 0.1, 1.0, 10.0])
    torch.testing.assert_close(edm.sigma_weight(sig, "edm"), (1 + sig ** 2) / sig ** 2)
    torch.testing.assert_close(edm.sigma_weight(sig, "min-snr", gamma=5.0), torch.tensor([5.0, 5.0, 1.0, 0.01]))
    target = torch.randn(4, 9, 4, 4, 4)
    assert torch.equal(edm.weighted_loss(target + 0.1, target, sig), edm.edm_v_loss(target + 0.1, target, sig))


def test_own_frame_weight_counts_the_input_frame_more_at_the_same_scale():
    target = torch.zeros(2, 9, 4, 2, 2)
    sig, pos = torch.ones(2), torch.tensor([0, 5])
    uniform = torch.ones_like(target)
    # Equal error everywhere: the normalised frame weights leave the loss as it was.
    base = edm.weighted_loss(uniform, target, sig)
    torch.testing.assert_close(edm.weighted_loss(uniform, target, sig, own_frame=pos, own_weight=4.0), base)
    # Error only on the input frames: 4x weight (normalised by (8 + 4) / 9) raises the loss 3x.
    own = torch.zeros_like(target)
    own[0, 0], own[1, 5] = 1.0, 1.0
    ratio = (edm.weighted_loss(own, target, sig, own_frame=pos, own_weight=4.0)
             / edm.weighted_loss(own, target, sig))
    assert abs(ratio.item() - 3.0) < 1e-5


def test_latent_crops_and_accumulation_train_the_real_unet(random_model_dir, tmp_path):
    """The crop lever runs the real tiny UNet on a quarter of the latent (with the matching pixel crop,
    the image encoder on the whole photo), with accumulation, the own-frame weight and min-SNR together:
    a run trains, saves and caches whole latents; a batch encodes only the cropped photo."""
    import shutil

    from training.train_tiny import StageConfig, train_unet

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(random_model_dir / "vae", run / "vae")
    stacks = torch.randint(0, 256, (1, 9, 64, 64, 3), dtype=torch.uint8).repeat(2, 1, 1, 1, 1)
    cfg = StageConfig(12, 2e-3, 2, latent_crop=4, accumulate=2, own_weight=3.0, loss_weight="min-snr")
    stats = train_unet(stacks, cfg, run, random_model_dir)
    assert stats["updates"] == 12 and (run / "unet" / "config.json").is_file()
    from training.train_tiny import unet_loss
    from diffusers import AutoencoderKLTemporalDecoder

    latents = torch.load(run / "latents.pt")
    assert latents.shape[-1] == 8  # whole latents cached; the crop is taken per batch
    vae = AutoencoderKLTemporalDecoder.from_pretrained(run / "vae")
    seen = []
    orig = vae.encode

    def spy(x):
        seen.append(tuple(x.shape[-2:]))
        return orig(x)
    vae.encode = spy
    from diffusers import UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    unet = UNetSpatioTemporalConditionModel.from_pretrained(run / "unet")
    enc = CLIPVisionModelWithProjection.from_pretrained(run / "image_encoder")
    unet_loss(unet, enc, vae, stacks, latents, cfg, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert seen == [(32, 32)]  # the conditioning photo cropped to the latent crop's pixels
