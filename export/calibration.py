"""Calibration data: the inputs each component really sees, recorded while the
fp32 model samples focal stacks.

Activations are calibrated on what the sampler feeds the graphs, not on random
tensors: the model's own sampler runs on calibration photos and every call into
every component is recorded by name. For a distilled student that means the
UNet is seen at exactly its own few sigmas (timestep-aware calibration: a
4-step student is calibrated at its 4 timesteps, never at a teacher's 25).

Photos come from the synthetic training split (never the held-out split the
gates and benchmarks measure on) or from a learn2refocus-layout folder. Photo
i is sampled with seed `seed + i` at input position `positions[i % len]`, so a
calibration set is a pure function of its config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from refocus_edge.runtime.errors import InvalidArgumentError

from refocus_edge.export.runner_swap import swapped_runners


@dataclass(frozen=True)
class CalibrationConfig:
    samples: int = 24  # calibration photos; each gives one call per component (num_steps for the UNet)
    seed: int = 0
    data: str = "synthetic"  # "synthetic" (training split) or a learn2refocus-layout folder
    positions: tuple[int, ...] = (0, 2, 4, 6, 8)  # input focal positions cycled over the photos
    progress: bool = True

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("progress")
        out["positions"] = list(self.positions)
        return out


@dataclass
class CalibrationSet:
    """Recorded feeds per component (dicts of named fp32 tensors, in call order)."""

    feeds: dict[str, list[dict[str, torch.Tensor]]]
    config: CalibrationConfig
    unet_timesteps: list[float]  # the distinct UNet timesteps seen (0.25 ln sigma)

    def to_json(self) -> dict:
        return {**self.config.to_json(),
                "calls": {name: len(items) for name, items in self.feeds.items()},
                "unet_timesteps": self.unet_timesteps}


def _calibration_stacks(cfg: CalibrationConfig, size: tuple[int, int]):
    """(dataset, indices) the calibration photos come from; raises for a bad config or folder."""
    if cfg.samples < 1:
        raise InvalidArgumentError(f"calibration needs at least 1 sample, got {cfg.samples}")
    if cfg.data == "synthetic":
        from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

        # Offset into the training split so calibration scenes differ from the first
        # scenes the models were trained on; still disjoint from the held-out split.
        stacks = SyntheticFocalStacks("train", size=size, length=cfg.samples + 500_000)
        return stacks, range(500_000, 500_000 + cfg.samples)
    from refocus_edge.focalstacks.learn2refocus import Learn2RefocusLayoutError, Learn2RefocusStacks

    root = Path(cfg.data)
    if not root.is_dir():
        raise InvalidArgumentError(f"calibration data folder {root} does not exist; pass 'synthetic' or a "
                                   "learn2refocus-layout folder (FSK_*/.../focal_position_000N_frame_0000.jpg)")
    try:
        stacks = Learn2RefocusStacks(root, size=size)
    except Learn2RefocusLayoutError as exc:  # a folder with no complete scene: a one-line error
        raise InvalidArgumentError(f"calibration data: {exc}") from None
    if len(stacks) == 0:
        raise InvalidArgumentError(f"no learn2refocus focal stacks under {root}")
    return stacks, [i % len(stacks) for i in range(cfg.samples)]


def check_calibration_source(cfg: CalibrationConfig) -> None:
    """Raise now for a calibration config or folder that cannot work, before any export or
    sampling is spent on it (only the folder layout is read, no frames)."""
    _calibration_stacks(cfg, (64, 64))


def calibration_photos(cfg: CalibrationConfig, size: tuple[int, int]) -> list[tuple[torch.Tensor, int]]:
    """(photo [1, 3, H, W] in [-1, 1], input position) for each calibration sample; size is (H, W)."""
    stacks, indices = _calibration_stacks(cfg, size)
    photos = []
    for n, i in enumerate(indices):
        position = cfg.positions[n % len(cfg.positions)]
        frames = stacks[i]["frames"]
        photos.append((frames[position:position + 1] * 2 - 1, position))
    return photos


class _Recorder:
    """A Runner stand-in that records each call's feeds and forwards them."""

    def __init__(self, runner, store: list):
        self.runner, self.store = runner, store
        self.spec, self.device = runner.spec, runner.device

    def __call__(self, feeds):
        self.store.append({k: v.detach().float().clone() for k, v in feeds.items()})
        return self.runner(feeds)

    def close(self):
        self.runner.close()


@torch.no_grad()
def collect_calibration(refocuser, cfg: CalibrationConfig) -> CalibrationSet:
    """Sample a stack per calibration photo through `refocuser` (a bundle refocuser whose
    components are runners) and record every component call."""
    from tqdm.auto import tqdm

    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    feeds: dict[str, list] = {}
    size = tuple(reversed(refocuser.config.working_size))  # (H, W)
    with swapped_runners(refocuser, lambda name, runner: _Recorder(runner, feeds.setdefault(name, []))):
        photos = calibration_photos(cfg, size)
        for i, (photo, position) in enumerate(tqdm(photos, desc="calibrating", unit="stack",
                                                   disable=not cfg.progress)):
            sample_focal_stack(refocuser, photo, SamplerConfig(seed=cfg.seed + i, position=position,
                                                               mode="fast", progress=False))
    steps = sorted({round(float(t), 6) for f in feeds.get("unet", []) for t in f["timestep"].reshape(-1)},
                   reverse=True)
    return CalibrationSet(feeds=feeds, config=cfg, unet_timesteps=steps)
