"""runtime/edm.py (distillation's and training's EDM maths) against diffusers' Euler scheduler,
the arithmetic the reference sampler runs: the same numbers, step for step."""
from __future__ import annotations

import torch

from refocus_edge.runtime import edm
from training.tiny_architecture import build_scheduler


def test_edm_functions_match_the_reference_scheduler_step_for_step():
    scheduler = build_scheduler()
    scheduler.set_timesteps(6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, 4, 8, 8, generator=g) * scheduler.init_noise_sigma
    ours = x.clone()
    for i, t in enumerate(scheduler.timesteps):
        sigma, sigma_next = scheduler.sigmas[i], scheduler.sigmas[i + 1]
        torch.testing.assert_close(edm.timestep(sigma), t.float(), rtol=1e-6, atol=1e-6)
        scaled = scheduler.scale_model_input(x, t)
        torch.testing.assert_close(edm.scale_input(ours, sigma), scaled, rtol=1e-6, atol=1e-6)
        v = torch.randn(x.shape, generator=g)  # any UNet output
        out = scheduler.step(v, t, x)
        denoised = edm.denoised_from_v(v, ours, sigma)
        torch.testing.assert_close(denoised, out.pred_original_sample, rtol=1e-5, atol=1e-5)
        ours = edm.euler_step(ours, denoised, sigma, sigma_next)
        x = out.prev_sample
        torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_denoise_calls_the_unet_with_the_preconditioned_input_and_per_sample_sigmas():
    seen = {}

    class SpyUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, sample, t, encoder_hidden_states, added_time_ids, return_dict=False):
            seen.update(sample=sample, t=t, ids=added_time_ids)
            return (sample[:, :, :4] * self.w,)

    x, sigmas = torch.randn(2, 9, 4, 4, 4), torch.tensor([0.5, 20.0])
    cond, emb, ids = torch.zeros(2, 9, 4, 4, 4), torch.zeros(2, 1, 8), torch.tensor([[6.0, 0.0, 0.0]])
    d = edm.denoise(SpyUNet(), x, sigmas, cond, emb, ids)
    torch.testing.assert_close(seen["t"], 0.25 * sigmas.log())
    assert seen["ids"].shape == (2, 3)  # one row of time ids expanded to the batch
    scaled = edm.scale_input(x, sigmas)
    torch.testing.assert_close(seen["sample"][:, :, :4], scaled)
    torch.testing.assert_close(d, edm.denoised_from_v(scaled, x, sigmas))
