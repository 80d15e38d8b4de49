"""The tiny decoder's gate: LPIPS (alex) of its frames against the full decoder's frames of the
same latents, per frame, median over the held-out stacks; above the threshold nothing is written."""
from __future__ import annotations

import torch

from refocus_edge.export.parity import GateResult

METRIC = "lpips_alex_median_vs_full_decoder"


@torch.no_grad()
def per_frame_lpips(tiny, latents: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """[N * F] LPIPS of tiny(latents[n]) against frames[n] (both clipped to [-1, 1] as the sampler clips)."""
    from refocus_edge.runtime.metrics.lpips import LPIPS

    lpips = LPIPS("alex")
    values = []
    for z, ref in zip(latents, frames):
        got = tiny(z.float()).clamp(-1, 1)
        values.append(lpips(got, ref.float().clamp(-1, 1)).flatten())
    return torch.cat(values)


def decoder_gate(tiny, latents: torch.Tensor, frames: torch.Tensor, threshold: float) -> tuple[GateResult, dict]:
    values = per_frame_lpips(tiny.eval(), latents, frames)
    stats = {"median": float(values.median()), "mean": float(values.mean()), "worst": float(values.max()),
             "frames": int(values.numel())}
    result = GateResult(component="tiny_decoder", artifact="tiny_decoder", precision="fp32", metric=METRIC,
                        value=stats["median"], threshold=float(threshold),
                        detail=f"mean {stats['mean']:.4f}, worst frame {stats['worst']:.4f} over "
                               f"{stats['frames']} held-out frames")
    return result, stats
