"""Train the focus-depth head (runtime/lens_stack.FocusDepthHead): photo + its focus position -> each
pixel's focus index, on the rendered training stacks with their true depth. Resumable:

    python -m training.depth_head --data runs/refocus-tiny/train_128.npy \\
        --more-data runs/depth-head/train_256x128.npy --iterations 3000 --out runs/depth-head/head.pt

Each update draws `batch` stacks and for each a random input position; the photo is that frame (flipped
left-right half the time) and the target is the true focus index of every pixel, as a soft one-hot over
the two nearest positions (cross-entropy). `--more-data` caches (other sizes: the renderer's blur grows
with the width) give a share `--more-mix` of the draws, each a random crop of the --data size, the head
told the blur step of the whole stack's width, so it learns to read blur at each scale it serves. EMA weights, checkpoints every few minutes under --run-dir
(the shared loop in export/training_loop.py: a killed run continues exactly) and a progress bar; the
EMA weights are written to --out with the settings beside them (<out>.json).
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from refocus_edge.export.training_loop import CheckpointedTrainer, warmup_cosine
from refocus_edge.runtime.lens_stack import FocusDepthHead


@dataclass(frozen=True)
class DepthHeadConfig:
    data: Path  # a render_cache .npy of training stacks with its .depth.npy sidecar
    out: Path
    more_data: tuple = ()  # caches at other sizes, drawn as random crops of data's size
    more_mix: float = 0.5  # the share of draws from more_data
    iterations: int = 3000
    batch: int = 8
    lr: float = 2e-3
    ema_decay: float = 0.999
    channels: tuple = (24, 48, 96, 128)
    colour: bool = True  # False: the head sees blur cues only (runtime/lens_stack.FocusDepthHead)
    seed: int = 0
    run_dir: Path = Path("runs/depth-head")
    checkpoint_minutes: float = 5.0
    threads: int = 0  # torch CPU threads; 0: torch's default
    progress: bool = True

    def training_facts(self) -> dict:
        keep = ("data", "more_data", "more_mix", "iterations", "batch", "lr", "ema_decay", "channels", "seed") \
            + (() if self.colour else ("colour",))
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else str(v) if isinstance(v, Path) else v

        return {k: plain(v) for k, v in asdict(self).items() if k in keep}


def soft_index_target(index: torch.Tensor, positions: int) -> torch.Tensor:
    """[B, H, W] continuous focus indices -> [B, positions, H, W]: weight split between the two
    nearest positions (so the target's expectation is the index itself)."""
    index = index.clamp(0, positions - 1)
    lo = index.floor().long().clamp(0, positions - 2)
    frac = (index - lo).unsqueeze(1)
    target = torch.zeros(index.shape[0], positions, *index.shape[1:], dtype=index.dtype)
    target.scatter_(1, lo.unsqueeze(1), 1 - frac)
    target.scatter_add_(1, lo.unsqueeze(1) + 1, frac)
    return target


def lens_step(data) -> float:
    """Blur radius (px) per frame of focus of a render_cache's stacks: the renderer's lens
    (focalstacks/lens.py) at the stacks' width."""
    from refocus_edge.focalstacks.lens import LensConfig, blur_radius_px, focus_planes

    lens = LensConfig(**(data.meta or {}).get("lens", {}))
    planes = focus_planes(lens)
    return blur_radius_px(planes[0], planes[1], int(data.frames.shape[3]), lens)


class DepthHeadTrainer(CheckpointedTrainer):
    desc = "depth-head"
    ckpt_key = "head"

    def __init__(self, cfg: DepthHeadConfig, log=print):
        from refocus_edge.focalstacks.synthetic import CachedFocalStacks
        from refocus_edge.runtime.errors import InvalidArgumentError

        self.cfg, self.log = cfg, log
        self.sets = []
        for path in (cfg.data, *cfg.more_data):
            data = CachedFocalStacks(path)
            if data.depth is None:
                raise InvalidArgumentError(f"{path}: no depth sidecar ({Path(path).with_suffix('')}.depth.npy) of the "
                                           "same stacks; render the data with `python -m training.train_tiny data`")
            self.sets.append((data, lens_step(data)))
        self.data = self.sets[0][0]
        self.positions = int(self.data.frames.shape[1])
        self.crop = tuple(self.data.frames.shape[2:4])  # (H, W) of every draw
        for data, _ in self.sets[1:]:
            if data.frames.shape[1] != self.positions or any(a < b for a, b in zip(data.frames.shape[2:4], self.crop)):
                raise InvalidArgumentError(f"{data.path}: stacks of {data.frames.shape[1]} frames at "
                                           f"{data.frames.shape[3]}x{data.frames.shape[2]}; --more-data needs "
                                           f"{self.positions} frames and sides at least --data's "
                                           f"{self.crop[1]}x{self.crop[0]}")
        self.model = FocusDepthHead(self.positions, cfg.channels, colour=cfg.colour).train()
        self.params = list(self.model.parameters())
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=1e-4)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.ckpt = Path(cfg.run_dir) / "checkpoint.pt"
        self._start_counters()

    def lr_at(self, step: int) -> float:
        return warmup_cosine(step, self.cfg.iterations, self.cfg.lr, 100, floor=0.05)

    def batch(self):
        """(photos [B, 3, h, w] in [-1, 1], positions [B], blur steps [B], true focus indices [B, h, w])."""
        from refocus_edge.dof.depth import diopters_to_index

        g, (ch, cw) = self.gen, self.crop
        photos, positions, steps, indices = [], [], [], []
        for _ in range(self.cfg.batch):
            more = len(self.sets) > 1 and float(torch.rand((), generator=g)) < self.cfg.more_mix
            data, step = self.sets[1 + int(torch.randint(len(self.sets) - 1, (), generator=g))] if more else self.sets[0]
            i = int(torch.randint(len(data), (), generator=g))
            k = int(torch.randint(self.positions, (), generator=g))
            h, w = data.frames.shape[2:4]
            y, x = (int(torch.randint(n - c + 1, (), generator=g)) for n, c in ((h, ch), (w, cw)))
            photo = torch.from_numpy(np.array(data.frames[i, k, y:y + ch, x:x + cw])).permute(2, 0, 1).float() / 127.5 - 1
            index = torch.from_numpy(diopters_to_index(np.array(data.depth[i, y:y + ch, x:x + cw], dtype=np.float32),
                                                       num=self.positions))
            if float(torch.rand((), generator=g)) < 0.5:
                photo, index = photo.flip(-1), index.flip(-1)
            photos.append(photo)
            positions.append(k)
            steps.append(step)
            indices.append(index)
        return torch.stack(photos), torch.tensor(positions), torch.tensor(steps), torch.stack(indices)

    def loss(self) -> torch.Tensor:
        photos, positions, steps, indices = self.batch()
        logits = self.model(photos, positions, steps)
        target = soft_index_target(indices, self.positions)
        return -(target * F.log_softmax(logits, 1)).sum(1).mean()


def train(cfg: DepthHeadConfig, log=print) -> Path:
    """Train (or resume) and write the EMA weights to cfg.out with <out>.json; returns cfg.out."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    trainer = DepthHeadTrainer(cfg, log)
    trainer.resume()
    trainer.run()
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(trainer.ema.state_dict(), tmp)
    tmp.replace(out)
    facts = {**cfg.training_facts(), "colour": cfg.colour, "positions": trainer.positions, "seconds": round(trainer.seconds, 1),
             "final_loss_mean_last_100": float(np.mean([v for _, v in trainer.history[-100:]]))}
    out.with_suffix(".json").write_text(json.dumps(facts, indent=1))
    log(f"depth-head: {trainer.step} updates in {trainer.seconds / 60:.1f} min; wrote {out}")
    return out


def load_head(path: Path) -> FocusDepthHead:
    """The EMA weights `train` wrote, with the architecture from <path>.json."""
    facts = json.loads(Path(path).with_suffix(".json").read_text())
    head = FocusDepthHead(facts["positions"], tuple(facts["channels"]), colour=facts.get("colour", True))
    head.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return head.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.depth_head", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--more-data", type=Path, nargs="+", default=[], help="caches at other (larger) sizes")
    p.add_argument("--more-mix", type=float, default=0.5, help="share of the draws from --more-data")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-colour", action="store_true",
                   help="the head sees only blur cues (detail energies), not the photo's colours")
    p.add_argument("--channels", type=int, nargs="+", default=[24, 48, 96, 128],
                   help="the head's U-Net widths, one per level (each level halves the size: more levels "
                        "see wider context, e.g. which region surrounds the others)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/depth-head"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    for name in ("iterations", "batch"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(a, name)}")
    for path in (a.data, *a.more_data):
        if not path.is_file():
            p.error(f"{path}: no such file; render it with `python -m training.train_tiny data --count 3000`")
    if len(a.channels) < 2 or min(a.channels) < 4 or any(c % 4 for c in a.channels):
        p.error(f"--channels needs at least two widths, each a multiple of 4 (group norm), got {a.channels}")
    if not 0 <= a.more_mix <= 1:
        p.error(f"--more-mix must be in [0, 1], got {a.more_mix}")
    train(DepthHeadConfig(data=a.data, out=a.out, more_data=tuple(a.more_data), more_mix=a.more_mix,
                          colour=not a.no_colour, channels=tuple(a.channels), iterations=a.iterations, batch=a.batch, lr=a.lr, seed=a.seed,
                          run_dir=a.run_dir, threads=a.threads, progress=not a.no_progress))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
