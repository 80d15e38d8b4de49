"""End-to-end drift: what a quantized component does to the focal stack.

A quantized graph is judged by the frames it helps produce, not by its raw
output error: held-out synthetic photos are sampled with fixed seeds through
the fp32 bundle once (the reference stacks), then again with some components
swapped for their quantized graphs, and every output frame is compared with
LPIPS (alex). The sensitivity scan, the quantized artifacts' gates and the
benchmark all measure drift this way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from refocus_edge.export.runner_swap import swapped_runners


@dataclass(frozen=True)
class DriftConfig:
    photos: int = 4  # held-out synthetic photos
    seed: int = 0  # photo i is sampled with seed + first + i
    positions: tuple[int, ...] = (0, 8, 4)  # input positions cycled over the photos
    # Index of the first held-out photo: the gates use 0..; the benchmark starts further on, so
    # it checks the budget on photos the sensitivity scan never saw.
    first: int = 0

    def to_json(self) -> dict:
        return {"photos": self.photos, "first": self.first, "seed": self.seed, "positions": list(self.positions),
                "split": "heldout (synthetic)", "metric": "LPIPS alex per output frame vs the fp32 stack"}


@dataclass
class Drift:
    per_frame: torch.Tensor  # [photos, frames]

    @property
    def median(self) -> float:
        return float(self.per_frame.median())

    @property
    def worst(self) -> float:
        return float(self.per_frame.max())

    def within(self, budget: tuple[float, float]) -> bool:
        return self.median <= budget[0] and self.worst <= budget[1]  # NaN fails

    def to_json(self) -> dict:
        # Per photo too: a few-step sampler can turn one photo's stack into a visibly different
        # sample under a tiny perturbation, and that shows as one photo drifting on every frame.
        return {"median": round(self.median, 6), "worst": round(self.worst, 6),
                "mean_per_frame": [round(float(x), 6) for x in self.per_frame.mean(0)],
                "median_per_photo": [round(float(x), 6) for x in self.per_frame.median(1).values]}


class DriftMeter:
    """Reference stacks of a bundle refocuser, and drift of variants of it."""

    def __init__(self, refocuser, cfg: DriftConfig = DriftConfig(), lpips=None):
        from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks
        from refocus_edge.runtime.metrics.lpips import LPIPS

        self.refocuser, self.cfg = refocuser, cfg
        self.lpips = lpips or LPIPS("alex")
        w, h = refocuser.config.working_size
        stacks = SyntheticFocalStacks("heldout", size=(h, w), length=cfg.first + cfg.photos)
        self.inputs = []
        for i in range(cfg.first, cfg.first + cfg.photos):
            position = cfg.positions[i % len(cfg.positions)]
            frames = stacks[i]["frames"]
            self.inputs.append((frames[position:position + 1] * 2 - 1, position, cfg.seed + i, frames))
        self.reference = [self._sample(photo, position, seed) for photo, position, seed, _ in self.inputs]

    @torch.no_grad()
    def _sample(self, photo, position, seed) -> torch.Tensor:
        from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

        return sample_focal_stack(self.refocuser, photo, SamplerConfig(seed=seed, position=position,
                                                                       mode="fast", progress=False)).frames

    @torch.no_grad()
    def measure(self, swaps: dict | None = None) -> Drift:
        """Drift with the runners in `swaps` ({component: Runner}) in place of the fp32 ones."""
        rows = []
        with swapped_runners(self.refocuser, swaps):
            for (photo, position, seed, _), ref in zip(self.inputs, self.reference):
                frames = self._sample(photo, position, seed)
                rows.append(self.lpips(frames * 2 - 1, ref * 2 - 1).float())
        return Drift(torch.stack(rows))
