"""The tiny decoders' training: L1 + LPIPS to the full decoder's frames (the tiny decoder) or to the
true frames (the photo-guided one, given the input photo and the frames' offsets), AdamW with warm-up and
cosine decay, on the shared checkpointed loop (export/training_loop.py: EMA weights, the ones
shipped; atomic checkpoints that a resumed run continues exactly; a progress bar)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from refocus_edge.export.tiny_decoder.config import TinyDecoderConfig
from refocus_edge.export.tiny_decoder.data import DecoderPairs
from refocus_edge.export.training_loop import CheckpointedTrainer, warmup_cosine

WARMUP = 100


def guide_offsets(position: int, frames: int, device) -> torch.Tensor:
    """The frames' focus offsets the sampler gives a guided decoder (runtime/euler_loop.frame_offsets)."""
    from refocus_edge.runtime.euler_loop import frame_offsets

    return torch.from_numpy(frame_offsets(0, frames, position, frames)).to(device)


def lr_at(step: int, cfg: TinyDecoderConfig) -> float:
    return warmup_cosine(step, cfg.iterations, cfg.lr, WARMUP, floor=0.05)


class TinyDecoderTrainer(CheckpointedTrainer):
    desc = "distill-decoder"
    ckpt_key = "tiny"

    def __init__(self, tiny, pairs: DecoderPairs, cfg: TinyDecoderConfig, ckpt: Path, log=print,
                 extra: tuple[DecoderPairs, ...] = ()):
        """`extra`: pairs at the larger training sizes (cfg.sizes), cut to `pairs`' size in each draw."""
        from refocus_edge.runtime.metrics.lpips import LPIPS

        self.cfg, self.pairs, self.ckpt, self.log = cfg, pairs, Path(ckpt), log
        self.extra = tuple(extra)
        self.device = torch.device(cfg.device)
        self.model = tiny.to(self.device).train()
        self.params = list(self.model.parameters())
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.lpips = LPIPS("alex").to(self.device).requires_grad_(False) if cfg.perceptual_weight > 0 else None
        self._start_counters()

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.cfg)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One training stack: (latents, target frames, input position). With extra sizes, a share
        cfg.size_mix of the draws is a random latent-aligned crop of a larger stack, to the working
        size, transposed half the time (the blur is isotropic, so a transposed stack is a real one)."""
        g = self.gen
        if self.extra and float(torch.rand((), generator=g)) < self.cfg.size_mix:
            pairs = self.extra[int(torch.randint(len(self.extra), (), generator=g))]
            i = int(torch.randint(len(pairs), (), generator=g))
            z, frames = pairs.latents[i], pairs.frames[i]
            lh, lw = self.pairs.latents.shape[-2:]
            factor = frames.shape[-1] // z.shape[-1]
            y = int(torch.randint(z.shape[-2] - lh + 1, (), generator=g))
            x = int(torch.randint(z.shape[-1] - lw + 1, (), generator=g))
            z = z[..., y:y + lh, x:x + lw]
            frames = frames[..., y * factor:(y + lh) * factor, x * factor:(x + lw) * factor]
            if lh == lw and float(torch.rand((), generator=g)) < 0.5:
                z, frames = z.transpose(-1, -2), frames.transpose(-1, -2)
        else:
            pairs = self.pairs
            i = int(torch.randint(len(pairs), (), generator=g))
            z, frames = pairs.latents[i], pairs.frames[i]
        position = int(pairs.positions[i]) if pairs.positions is not None else 0
        return z.to(self.device), frames.to(self.device).float(), position

    def loss(self) -> torch.Tensor:
        outs, targets = [], []
        for _ in range(self.cfg.batch):  # one stack per call: the temporal mixing stays inside a stack
            z, target, k = self.draw()
            if self.model.guided:  # the input photo is the true frame at the input position
                outs.append(self.model(z, target[k:k + 1], guide_offsets(k, target.shape[0], self.device)))
            else:
                outs.append(self.model(z))
            targets.append(target)
        out, target = torch.cat(outs), torch.cat(targets)
        loss = (out - target).abs().mean()
        if self.lpips is not None:
            loss = loss + self.cfg.perceptual_weight * self.lpips(out, target).mean()
        from refocus_edge.export.distillation.ground_truth import focus_terms

        terms = focus_terms(out, target, self.pairs.frames.shape[1], self.cfg.focus_weight, self.cfg.curve_weight)
        return loss + self.cfg.focus_weight * terms.get("focus", 0.0) + self.cfg.curve_weight * terms.get("curve", 0.0)
