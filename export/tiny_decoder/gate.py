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


GUIDED_METRIC = "lpips_alex_median_vs_truth_minus_full_decoder"


@torch.no_grad()
def guided_gate(guided, latents, full_frames, truth, positions, margin: float) -> tuple[GateResult, dict]:
    """Against the true frames of held-out stacks: the guided decoder's median per-frame LPIPS minus
    the full decoder's (same latents, the model's own samples); passes at most `margin`. The identity
    baseline (the input photo as every frame) is recorded beside them."""
    from refocus_edge.export.tiny_decoder.trainer import guide_offsets
    from refocus_edge.runtime.metrics.lpips import LPIPS

    lpips = LPIPS("alex")
    guided = guided.eval()
    ours, full, identity = [], [], []
    for z, ref, gt, k in zip(latents, full_frames, truth, positions.tolist()):
        gt = gt.float()
        photo = gt[k:k + 1]
        got = guided(z.float(), photo, guide_offsets(k, gt.shape[0], "cpu")).clamp(-1, 1)
        ours.append(lpips(got, gt).flatten())
        full.append(lpips(ref.float().clamp(-1, 1), gt).flatten())
        identity.append(lpips(photo.expand_as(gt), gt).flatten())
    ours, full, identity = torch.cat(ours), torch.cat(full), torch.cat(identity)
    stats = {"guided_median": float(ours.median()), "full_median": float(full.median()),
             "identity_median": float(identity.median()), "guided_mean": float(ours.mean()),
             "full_mean": float(full.mean()), "identity_mean": float(identity.mean()), "frames": int(ours.numel())}
    result = GateResult(component="guided_decoder", artifact="guided_decoder", precision="fp32", metric=GUIDED_METRIC,
                        value=stats["guided_median"] - stats["full_median"], threshold=float(margin),
                        detail=f"median LPIPS to the true frames: guided {stats['guided_median']:.4f}, full decoder "
                               f"{stats['full_median']:.4f}, input photo copied {stats['identity_median']:.4f} over "
                               f"{stats['frames']} held-out frames")
    return result, stats
