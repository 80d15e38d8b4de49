"""Probe a refocuser's denoiser where sampling needs it, in seconds instead of a quality run.

For held-out synthetic stacks and an input at position k, the UNet's one-shot
estimate of the clean latents (EDM preconditioning, guided as the sampler guides)
is compared with the ground-truth latents at some of the sampler's own sigmas.
Beside it: the "copy" estimate, the input's latent repeated on all 9 frames. A
denoiser that cannot beat copying at the top sigmas starts every sample from a
worse guess than the identity baseline (what refocus-tiny's card measured).

    python -m training.probe --model models/refocus-tiny --count 16
    python -m training.probe --model refocus-tiny --count 8 --by-jump      # error per |j - k|
    python -m training.probe --model refocus-tiny --count 4 --trajectory   # along real samples

Prints one row per sigma: latent MSE (latents scaled, unit variance) of the
denoiser and of the copy estimate, over all 9 frames and over |j - k| >= 4.
`--by-jump` splits both by the distance |j - k| between output frame and input
(0 is the input's own frame, where copying is exact). `--trajectory` follows the
model's own sampler instead of noised ground truth: the denoised estimate after
each step against the ground-truth latents, input at position 0.
"""
from __future__ import annotations

import argparse

import torch

from training import edm

PROBE_SIGMAS = (700.0, 100.0, 20.0, 5.0, 1.0)


def _heldout_with_latents(r, count: int):
    """Yield (frames [9, 3, H, W] in [-1, 1], ground-truth latents [1, 9, C, h, w] scaled) for
    the first `count` held-out stacks, rendered at the refocuser's working size."""
    from refocus_edge.bench.models import working_size
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

    w, h = working_size(r)
    data = SyntheticFocalStacks("heldout", (h, w), length=count)
    for i in range(count):
        frames = data[i]["frames"] * 2 - 1
        yield frames, r.vae.encode(frames).latent_dist.mode()[None] * r.vae.config.scaling_factor


@torch.no_grad()
def probe(model, count: int = 16, positions=(0, 4, 8), sigmas=PROBE_SIGMAS,
          guidance: float | None = None, seed: int = 0) -> dict:
    """{sigma: {"model": mse, "model_far": mse, "copy": mse, "copy_far": mse}} averaged over stacks and positions,
    plus "model_by_jump" / "copy_by_jump": the mean per distance |j - k| present (0 first).

    `model`: a shipped name or a refocuser folder. Stacks are rendered at its working size.
    `guidance`: the weight of the guided estimate (default: the model's own; 1 = conditional only).
    """
    from benchmarks.quality import LARGE_JUMP
    from refocus_edge.runtime.conditioning import conditioning_latents, image_embedding
    from refocus_edge.runtime.loading import load_refocuser

    r = load_refocuser(model)
    unet, vae, enc = r.unet.eval(), r.vae.eval(), r.image_encoder.eval()
    sf = vae.config.scaling_factor
    guidance = r.config.guidance_scale if guidance is None else guidance
    num_frames = r.config.num_frames
    time_ids = torch.tensor([list(r.config.added_time_ids)], dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    sums: dict[float, dict[str, float]] = {s: dict(model=0.0, model_far=0.0, copy=0.0, copy_far=0.0) for s in sigmas}
    # Per distance |j - k|: summed error and cell count, so positions with fewer far frames weigh
    # right. The copy and the cell count do not depend on sigma.
    model_jump = {s: torch.zeros(num_frames) for s in sigmas}
    copy_jump, cells = torch.zeros(num_frames), torch.zeros(num_frames)
    n = 0
    for frames, target in _heldout_with_latents(r, count):
        for k in positions:
            image = frames[k:k + 1]
            cond = conditioning_latents(vae, image, k, num_frames)  # as the sampler conditions
            emb = image_embedding(enc, image, r.clip_size, r.clip_mean, r.clip_std)
            jump = torch.tensor([abs(j - k) for j in range(num_frames)])
            far = jump >= LARGE_JUMP
            # The copy estimate does not depend on the noise: its error is the same at every sigma.
            cerr = ((cond[:, k:k + 1] * sf - target) ** 2).mean(dim=(0, 2, 3, 4))
            copy, copy_far = cerr.mean().item(), cerr[far].mean().item()
            copy_jump.index_add_(0, jump, cerr)
            cells.index_add_(0, jump, torch.ones(num_frames))
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
                model_jump[s].index_add_(0, jump, err)
            n += 1
    seen = cells > 0
    copy_by_jump = (copy_jump[seen] / cells[seen]).tolist()
    return {s: {**{key: v / n for key, v in row.items()},
                "model_by_jump": (model_jump[s][seen] / cells[seen]).tolist(), "copy_by_jump": copy_by_jump}
            for s, row in sums.items()}


@torch.no_grad()
def trajectory(model, count: int = 4, position: int = 0, seed: int = 0) -> list[dict]:
    """Per sampling step: {"sigma", "mse", "mse_own"}: the sampler's denoised estimate vs ground truth.

    Runs the model's own sampler (`runtime.sampler`, fast mode) on `count` held-out stacks
    with the input at `position`; `mse` over all frames, `mse_own` on the input's frame.
    The last row is the sample itself (in latent space).
    """
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    r = load_refocuser(model)
    r.vae.eval()
    rows: list[dict] = []
    for i, (frames, target) in enumerate(_heldout_with_latents(r, count)):

        def record(step: int, sigma: float, denoised: torch.Tensor) -> None:
            if step == len(rows):
                rows.append(dict(sigma=sigma, mse=0.0, mse_own=0.0))
            err = (denoised - target) ** 2
            rows[step]["mse"] += err.mean().item() / count
            rows[step]["mse_own"] += err[:, position].mean().item() / count

        sample_focal_stack(r, frames[position:position + 1],
                           SamplerConfig(position=position, seed=seed + i, progress=False), on_step=record)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="refocus-tiny", help="shipped name or refocuser folder")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's own; 1 = conditional only")
    p.add_argument("--by-jump", action="store_true", help="also the error per distance |j - k|")
    p.add_argument("--trajectory", action="store_true", help="the denoised estimate along real samples instead")
    args = p.parse_args(argv)
    if args.trajectory:
        print(f"{'step':>4} {'sigma':>9} {'mse':>7} {'own frame':>9}")
        for i, row in enumerate(trajectory(args.model, args.count)):
            print(f"{i:4d} {row['sigma']:9.3f} {row['mse']:7.4f} {row['mse_own']:9.4f}")
        return
    result = probe(args.model, args.count, guidance=args.guidance)
    print(f"{'sigma':>7} {'model':>8} {'copy':>8} {'model|far':>10} {'copy|far':>9}")
    for s, row in result.items():
        print(f"{s:7.1f} {row['model']:8.4f} {row['copy']:8.4f} {row['model_far']:10.4f} {row['copy_far']:9.4f}")
    if args.by_jump:
        print("by |j - k| (0 = the input's own frame): model / copy")
        for s, row in result.items():
            cells = "  ".join(f"{m:.3f}/{c:.3f}" for m, c in zip(row["model_by_jump"], row["copy_by_jump"]))
            print(f"{s:7.1f} {cells}")


if __name__ == "__main__":
    main()
