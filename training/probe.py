"""Probe a refocuser's denoiser where sampling needs it, in seconds instead of a quality run.

For held-out synthetic stacks and an input at position k, the UNet's one-shot
estimate of the clean latents (EDM preconditioning, guided as the sampler guides)
is compared with the ground-truth latents at some of the sampler's own sigmas.
Beside it: the "copy" estimate, the input's latent repeated on all 9 frames. A
denoiser that cannot beat copying at the top sigmas starts every sample from a
worse guess than the identity baseline (what refocus-tiny's card measured).

    python -m training.probe --model models/refocus-tiny --count 16

Prints one row per sigma: latent MSE (latents scaled, unit variance) of the
denoiser and of the copy estimate, over all 9 frames and over |j - k| >= 4.
"""
from __future__ import annotations

import argparse

import torch

from training import edm

PROBE_SIGMAS = (700.0, 100.0, 20.0, 5.0, 1.0)


@torch.no_grad()
def probe(model, count: int = 16, positions=(0, 4, 8), sigmas=PROBE_SIGMAS,
          guidance: float | None = None, seed: int = 0) -> dict:
    """{sigma: {"model": mse, "model_far": mse, "copy": mse, "copy_far": mse}} averaged over stacks and positions.

    `model`: a shipped name or a refocuser folder. Stacks are rendered at its working size.
    `guidance`: the weight of the guided estimate (default: the model's own; 1 = conditional only).
    """
    from benchmarks.models import working_size
    from benchmarks.quality import LARGE_JUMP
    from focalstacks.synthetic import SyntheticFocalStacks
    from runtime.conditioning import conditioning_latents, image_embedding
    from runtime.loading import load_refocuser

    r = load_refocuser(model)
    unet, vae, enc = r.unet.eval(), r.vae.eval(), r.image_encoder.eval()
    sf = vae.config.scaling_factor
    guidance = r.config.guidance_scale if guidance is None else guidance
    num_frames = r.config.num_frames
    w, h = working_size(r)
    data = SyntheticFocalStacks("heldout", (h, w), length=count)
    time_ids = torch.tensor([list(r.config.added_time_ids)], dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    sums: dict[float, dict[str, float]] = {s: dict(model=0.0, model_far=0.0, copy=0.0, copy_far=0.0) for s in sigmas}
    n = 0
    for i in range(count):
        frames = data[i]["frames"] * 2 - 1  # [9, 3, H, W]
        target = vae.encode(frames).latent_dist.mode()[None] * sf  # [1, 9, C, h, w]
        for k in positions:
            image = frames[k:k + 1]
            cond = conditioning_latents(vae, image, k, num_frames)  # as the sampler conditions
            emb = image_embedding(enc, image, r.clip_size, r.clip_mean, r.clip_std)
            far = torch.tensor([abs(j - k) >= LARGE_JUMP for j in range(num_frames)])
            # The copy estimate does not depend on the noise: its error is the same at every sigma.
            cerr = ((cond[:, k:k + 1] * sf - target) ** 2).mean(dim=(0, 2, 3, 4))
            copy, copy_far = cerr.mean().item(), cerr[far].mean().item()
            for s in sigmas:
                sig = torch.tensor([s])
                noisy = target + torch.randn(target.shape, generator=gen) * s
                cond_x0 = edm.denoise(unet, noisy, sig, cond, emb, time_ids)
                if guidance > 0 and guidance != 1.0:  # the reference guides whenever the weight is > 0
                    unc = edm.denoise(unet, noisy, sig, torch.zeros_like(cond), torch.zeros_like(emb), time_ids)
                    x0 = unc + guidance * (cond_x0 - unc)
                else:
                    x0 = cond_x0
                err = ((x0 - target) ** 2).mean(dim=(0, 2, 3, 4))  # per frame
                row = sums[s]
                row["model"] += err.mean().item(); row["model_far"] += err[far].mean().item()
                row["copy"] += copy; row["copy_far"] += copy_far
            n += 1
    return {s: {key: v / n for key, v in row.items()} for s, row in sums.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="refocus-tiny", help="shipped name or refocuser folder")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's own; 1 = conditional only")
    args = p.parse_args(argv)
    result = probe(args.model, args.count, guidance=args.guidance)
    print(f"{'sigma':>7} {'model':>8} {'copy':>8} {'model|far':>10} {'copy|far':>9}")
    for s, row in result.items():
        print(f"{s:7.1f} {row['model']:8.4f} {row['copy']:8.4f} {row['model_far']:10.4f} {row['copy_far']:9.4f}")


if __name__ == "__main__":
    main()
