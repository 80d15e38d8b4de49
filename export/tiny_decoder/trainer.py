"""The tiny decoder's training: L1 + LPIPS to the full decoder's frames, AdamW with warm-up and
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


def lr_at(step: int, cfg: TinyDecoderConfig) -> float:
    return warmup_cosine(step, cfg.iterations, cfg.lr, WARMUP, floor=0.05)


class TinyDecoderTrainer(CheckpointedTrainer):
    desc = "distill-decoder"
    ckpt_key = "tiny"

    def __init__(self, tiny, pairs: DecoderPairs, cfg: TinyDecoderConfig, ckpt: Path, log=print):
        from refocus_edge.runtime.metrics.lpips import LPIPS

        self.cfg, self.pairs, self.ckpt, self.log = cfg, pairs, Path(ckpt), log
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

    def loss(self) -> torch.Tensor:
        picks = torch.randint(len(self.pairs), (self.cfg.batch,), generator=self.gen)
        outs, targets = [], []
        for i in picks.tolist():  # one stack per call: the temporal mixing stays inside a stack
            outs.append(self.model(self.pairs.latents[i].to(self.device)))
            targets.append(self.pairs.frames[i].to(self.device).float())
        out, target = torch.cat(outs), torch.cat(targets)
        loss = (out - target).abs().mean()
        if self.lpips is not None:
            loss = loss + self.cfg.perceptual_weight * self.lpips(out, target).mean()
        return loss
