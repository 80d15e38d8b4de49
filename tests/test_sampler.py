"""Sampler semantics on a tiny random refocuser built from the real diffusers classes."""
from __future__ import annotations

import math

import pytest
import torch

from refocus_edge.runtime import sampler as sampler_mod
from refocus_edge.runtime.conditioning import clip_pixels, conditioning_latents, conditioning_latents_literal
from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack


def _image(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3, size, size), generator=g) * 2 - 1


class UNetSpy(torch.nn.Module):
    """Wraps the real UNet with the same call signature and records every call."""

    def __init__(self, unet):
        super().__init__()
        self.inner = unet
        self.calls = []

    @property
    def config(self):
        return self.inner.config

    @property
    def attn_processors(self):
        return self.inner.attn_processors

    def set_attn_processor(self, procs):
        self.inner.set_attn_processor(procs)

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
        out = self.inner(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False)[0]
        self.calls.append(dict(sample=sample.clone(), t=torch.as_tensor(timestep).clone(),
                               emb=encoder_hidden_states.clone(), ids=added_time_ids.clone(), out=out.clone()))
        return (out,)


@pytest.fixture
def spy_refocuser(random_refocuser):
    original = random_refocuser.unet
    spy = UNetSpy(original)
    random_refocuser.unet = spy
    yield random_refocuser, spy
    random_refocuser.unet = original


def test_output_shape_range_and_call_counts(random_refocuser):
    img = _image()
    for mode, calls in (("reference", 8), ("fast", 4)):  # the random model runs 4 steps
        res = sample_focal_stack(random_refocuser, img, SamplerConfig(position=3, mode=mode, progress=False))
        assert res.frames.shape == (9, 3, 64, 64)
        assert res.frames.min() >= 0 and res.frames.max() <= 1
        assert res.unet_calls == calls and res.num_inference_steps == 4


def test_step_observer_sees_every_step_and_changes_nothing(random_refocuser):
    from refocus_edge.runtime.sampler import decode_latents

    img, cfg = _image(3), SamplerConfig(position=2, seed=4, progress=False)
    plain = sample_focal_stack(random_refocuser, img, cfg)
    seen = []
    observed = sample_focal_stack(random_refocuser, img, cfg,
                                  on_step=lambda i, sigma, denoised: seen.append((i, sigma, denoised)))
    assert torch.equal(plain.frames, observed.frames)
    assert [i for i, _, _ in seen] == list(range(4))
    assert [sigma for _, sigma, _ in seen] == pytest.approx(plain.sigmas[:4])
    assert seen[0][2].shape == (1, 9, random_refocuser.latent_channels, 8, 8)
    # Euler's last step lands on its denoised estimate: the sample itself.
    last = decode_latents(random_refocuser.vae, seen[-1][2], random_refocuser.config.decode_chunk_sizes)
    assert (last - plain.frames).abs().max().item() < 1e-5


def test_fast_path_matches_literal_reference(random_refocuser):
    img = _image(1)
    for position in (0, 4, 8):
        ref = sample_focal_stack(random_refocuser, img, SamplerConfig(position=position, seed=7,
                                                                       mode="reference", progress=False))
        fast = sample_focal_stack(random_refocuser, img, SamplerConfig(position=position, seed=7,
                                                                        mode="fast", progress=False))
        assert (ref.frames - fast.frames).abs().max().item() <= 1e-3


def test_seed_reproducibility_and_initial_noise(spy_refocuser):
    refocuser, spy = spy_refocuser
    img = _image(2)
    a = sample_focal_stack(refocuser, img, SamplerConfig(position=1, seed=11, progress=False))
    b = sample_focal_stack(refocuser, img, SamplerConfig(position=1, seed=11, progress=False))
    c = sample_focal_stack(refocuser, img, SamplerConfig(position=1, seed=12, progress=False))
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)
    # The first UNet input is the documented noise, scaled by 1/sqrt(sigma^2 + 1).
    sched = sampler_mod.make_scheduler(refocuser, 4)
    noise = torch.randn((1, 9, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(11),
                        dtype=torch.float32) * sched.init_noise_sigma
    sigma0 = float(sched.sigmas[0])
    first = spy.calls[0]["sample"][1:, :, :4]  # fast mode: [uncond, cond] batch; noisy part
    torch.testing.assert_close(first[0], (noise / math.sqrt(sigma0 ** 2 + 1))[0], rtol=1e-5, atol=1e-5)


def test_conditioning_placement_time_ids_and_timesteps(spy_refocuser):
    refocuser, spy = spy_refocuser
    img = _image(3)
    k = 6
    sample_focal_stack(refocuser, img, SamplerConfig(position=k, mode="reference", progress=False))
    expected_cond = conditioning_latents(refocuser.vae, img, k, 9)[0]
    sched = sampler_mod.make_scheduler(refocuser, 4)
    assert len(spy.calls) == 8
    for step in range(4):
        cond_call, uncond_call = spy.calls[2 * step], spy.calls[2 * step + 1]
        # Channels 4..7 carry the conditioning latent at frame k only, unscaled .mode() latent.
        torch.testing.assert_close(cond_call["sample"][0, :, 4:], expected_cond, rtol=1e-5, atol=1e-5)
        others = [f for f in range(9) if f != k]
        assert torch.count_nonzero(cond_call["sample"][0, others, 4:]) == 0
        # Unconditional branch: both conditioning latents and image embedding are zero.
        assert torch.count_nonzero(uncond_call["sample"][0, :, 4:]) == 0
        assert torch.count_nonzero(uncond_call["emb"]) == 0
        assert torch.count_nonzero(cond_call["emb"]) > 0
        assert cond_call["emb"].shape == (1, 1, 32)
        # Timestep input is 0.25 ln sigma; added time ids are [6, 0, 0].
        sigma = float(sched.sigmas[step])
        assert float(cond_call["t"]) == pytest.approx(0.25 * math.log(sigma), rel=1e-5)
        assert cond_call["ids"].tolist() == [[6.0, 0.0, 0.0]]


def test_guidance_combination(spy_refocuser, monkeypatch):
    refocuser, spy = spy_refocuser
    seen = []
    real_make = sampler_mod.make_scheduler

    def recording_scheduler(r, steps):
        sched = real_make(r, steps)
        real_step = sched.step

        def step(model_output, t, sample, **kw):
            seen.append(model_output.clone())
            return real_step(model_output, t, sample, **kw)

        sched.step = step
        return sched

    monkeypatch.setattr(sampler_mod, "make_scheduler", recording_scheduler)
    sample_focal_stack(refocuser, _image(4), SamplerConfig(position=2, mode="reference", progress=False))
    for i, guided in enumerate(seen):
        cond, uncond = spy.calls[2 * i]["out"], spy.calls[2 * i + 1]["out"]
        torch.testing.assert_close(guided, uncond + 1.5 * (cond - uncond), rtol=1e-5, atol=1e-6)


def test_decode_in_chunks_of_8_then_1(random_refocuser, monkeypatch):
    sizes = []
    real = random_refocuser.vae.decode

    def decode(z, num_frames, **kw):
        sizes.append((z.shape[0], num_frames))
        return real(z, num_frames=num_frames, **kw)

    monkeypatch.setattr(random_refocuser.vae, "decode", decode)
    sample_focal_stack(random_refocuser, _image(5), SamplerConfig(position=0, progress=False))
    assert sizes == [(8, 8), (1, 1)]


def test_literal_conditioning_equals_masked_single_encode(random_refocuser):
    img = _image(6)
    a = conditioning_latents_literal(random_refocuser.vae, img, 5, 9)
    b = conditioning_latents(random_refocuser.vae, img, 5, 9)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_clip_normalisation_quirk_uses_minus1_1_input():
    x = torch.full((1, 3, 224, 224), -1.0)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    out = clip_pixels(x, (224, 224), mean, std)
    # [-1, 1] fed straight into mean/std: (-1 - 0.5) / 0.25 = -6, not (0 - 0.5) / 0.25 = -2.
    torch.testing.assert_close(out, torch.full_like(out, -6.0), rtol=1e-4, atol=1e-4)


def test_bad_position_and_steps(random_refocuser):
    from refocus_edge.runtime.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="outside 0..8"):
        sample_focal_stack(random_refocuser, _image(), SamplerConfig(position=9, progress=False))
    with pytest.raises(InvalidArgumentError, match="steps"):
        sample_focal_stack(random_refocuser, _image(), SamplerConfig(num_inference_steps=0, progress=False))
