"""How fast does a UNet shape learn to carry the conditioning frame? A quick architecture check.

The first thing a refocuser must learn is the identity part of the job: from
pure noise (sigma 7..700, where sampling starts), return the input's latent on
its own frame and spread it to the other eight. This trains a fresh
`UNetSpatioTemporalConditionModel` of the given block widths on exactly that
(conditioning latents only, no image embedding, EDM v-preconditioning, MSE on
the clean latents) from a training run's cached latents, and prints the held-out
error at sigma 700 every 100 steps with the wall time, so two shapes can be
compared per second of CPU.

    python -m training.copy_task --widths 32,64,128 --steps 600
    python -m training.copy_task --widths 64,64,128 --steps 600

Stacks 0..2799 of the cache train, 2900..2915 are held out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training import edm
from training.tiny_architecture import UNET_CONFIG


def copy_task(latents: torch.Tensor, scaling_factor: float, widths: tuple[int, ...], steps: int,
              lr: float = 5e-4, batch: int = 4, seed: int = 0, log=print) -> list[tuple[int, float, float, float]]:
    """Rows (step, held-out MSE over all frames, MSE on the input's frame, seconds) every 100 steps."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**dict(UNET_CONFIG, block_out_channels=widths)).train()
    emb_dim = unet.config.cross_attention_dim
    opt = torch.optim.AdamW(unet.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def batch_of(idx, k):
        target = latents[idx] * scaling_factor
        cond = torch.zeros_like(target)
        cond[torch.arange(len(idx)), k] = latents[idx, k]  # unscaled, as the sampler conditions
        return target, cond

    def estimate(target, cond, sigma):
        n = len(target)
        noisy = target + torch.randn(target.shape, generator=gen) * sigma
        return edm.denoise(unet, noisy, torch.full((n,), sigma), cond, torch.zeros(n, 1, emb_dim),
                           torch.tensor([[6.0, 0.0, 0.0]]).repeat(n, 1))

    rows, t0 = [], time.time()
    for step in range(steps + 1):
        idx = torch.randint(2800, (batch,), generator=gen)
        k = torch.randint(latents.shape[1], (batch,), generator=gen)
        target, cond = batch_of(idx, k)
        sigma = float(torch.exp(torch.empty(1).uniform_(2.0, 6.55)))  # sigma 7..700, log-uniform
        loss = ((estimate(target, cond, sigma) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            unet.eval()
            with torch.no_grad():
                idx = torch.arange(2900, 2916)
                k = torch.arange(16) % latents.shape[1]
                target, cond = batch_of(idx, k)
                err = (estimate(target, cond, 700.0) - target) ** 2
            unet.train()
            row = (step, err.mean().item(), err[torch.arange(16), k].mean().item(), time.time() - t0)
            rows.append(row)
            log(f"{step} held-out sigma 700: all frames {row[1]:.4f}, input's frame {row[2]:.4f} ({row[3]:.0f} s)")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="64,64,128", help="block_out_channels, comma-separated")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--run-dir", type=Path, default=Path("runs/refocus-tiny-v2"),
                   help="a train_tiny run with latents.pt and vae/")
    args = p.parse_args(argv)
    latents = torch.load(args.run_dir / "latents.pt", mmap=True)
    sf = json.loads((args.run_dir / "vae" / "config.json").read_text())["scaling_factor"]
    widths = tuple(int(c) for c in args.widths.split(","))
    print(f"widths {widths}", flush=True)
    copy_task(latents, sf, widths, args.steps, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
