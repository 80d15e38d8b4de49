"""Teacher trajectories, computed once and kept in a resumable cache.

Each sample is (stack, focal position, noise seed). The teacher solves its own
guided Euler grid with the student levels inserted, from the initial noise the
runtime draws for that seed (runtime.sampler.initial_noise), and the cache keeps
its state at every student level and its final sample. The teacher's 50 calls a
sample are paid once; every student update reuses them.

Layout: DIR/meta.json (what the cache was made from: a different teacher, grid
or data source is refused, not mixed in) and DIR/shard_NNNNN.pt, each written
atomically, so a killed run resumes at the first missing shard.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from refocus_edge.export.distillation.data import FocalStackSource
from refocus_edge.export.distillation.teacher import Conditioning, encode_inputs, place_at_positions, solve
from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.sampler import initial_noise

SHARD_SIZE = 8  # samples per shard (and per teacher batch: 2 x 8 UNet rows per call)


@dataclass
class Trajectories:
    """All cached samples, in memory."""

    levels: list[float]  # recorded levels, descending; states[:, i] is the state at levels[i]
    states: torch.Tensor  # [N, L, F, C, h, w] float32
    final: torch.Tensor  # [N, F, C, h, w]: the teacher's sample
    cond_latents: torch.Tensor  # [N, C, h, w]: the input's latent (placed at its position)
    positions: torch.Tensor  # [N]
    embeddings: torch.Tensor  # [N, 1, D]
    noise_seeds: torch.Tensor  # [N]
    num_frames: int

    def __len__(self) -> int:
        return len(self.final)

    def state_at(self, idx: torch.Tensor, level: float) -> torch.Tensor:
        return self.states[idx, self.levels.index(float(level))]

    def conditioning(self, idx: torch.Tensor) -> Conditioning:
        cond = place_at_positions(self.cond_latents[idx], self.positions[idx], self.num_frames)
        return Conditioning(cond, self.embeddings[idx], self.positions[idx])


def sample_plan(index: int, seed: int, num_stacks: int, num_frames: int) -> tuple[int, int, int]:
    """(stack, position, noise seed) of sample `index`: deterministic, positions cycle evenly."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    stack = int(torch.randint(num_stacks, (1,), generator=g))
    return stack, index % num_frames, seed * 1_000_003 + index


def build_cache(refocuser, source: FocalStackSource, out: Path, count: int, grid: torch.Tensor,
                levels, init_noise_sigma: float, meta: dict, seed: int = 0, progress: bool = True) -> Path:
    """Fill `out` with `count` samples (resuming a partial cache); returns `out`."""
    from tqdm.auto import tqdm

    out = Path(out)
    levels = sorted({float(v) for v in levels}, reverse=True)
    meta = dict(meta, levels=levels, grid=[float(g) for g in grid], seed=int(seed),
                init_noise_sigma=float(init_noise_sigma), shard_size=SHARD_SIZE)
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        differs = sorted(k for k in meta if k != "count" and old.get(k) != meta[k])
        if differs:
            raise InvalidArgumentError(f"{out}: this trajectory cache was made with different {differs}; "
                                       "point --cache at a new folder or delete this one")
    out.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(dict(meta, count=int(count)), indent=2) + "\n")
    frames_n = refocuser.config.num_frames
    w, h = source.size
    factor = refocuser.vae_scale_factor
    shape = (frames_n, refocuser.latent_channels, h // factor, w // factor)
    shards = (count + SHARD_SIZE - 1) // SHARD_SIZE
    todo = [s for s in range(shards) if not (out / f"shard_{s:05d}.pt").is_file()]
    steps = len(grid) - 1
    bar = tqdm(total=len(todo) * steps, desc="teacher trajectories", unit="step", disable=not progress,
               mininterval=5)
    for s in todo:
        ids = list(range(s * SHARD_SIZE, min(count, (s + 1) * SHARD_SIZE)))
        plans = [sample_plan(i, seed, len(source), frames_n) for i in ids]
        images = torch.cat([source.input_image(stack, pos) for stack, pos, _ in plans])
        c = encode_inputs(refocuser, images, [pos for _, pos, _ in plans])
        x = torch.cat([initial_noise((1, *shape), ns, init_noise_sigma) for _, _, ns in plans])
        rec = solve(refocuser, x, grid, c, record=levels, progress=bar.update)
        shard = {
            "ids": torch.tensor(ids), "stacks": torch.tensor([p[0] for p in plans]),
            "positions": c.positions, "noise_seeds": torch.tensor([p[2] for p in plans]),
            "states": torch.stack([rec[v] for v in levels], dim=1), "final": rec[0.0],
            "cond_latents": c.latents[torch.arange(len(ids)), c.positions], "embeddings": c.embeddings,
        }
        tmp = out / f".shard_{s:05d}.tmp"
        torch.save(shard, tmp)
        tmp.replace(out / f"shard_{s:05d}.pt")
    bar.close()
    return out


def load_cache(folder: Path, count: int | None = None) -> tuple[Trajectories, dict]:
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise InvalidArgumentError(f"{folder}: not a trajectory cache (no meta.json)")
    meta = json.loads(meta_path.read_text())
    shards = sorted(folder.glob("shard_*.pt"))
    if not shards:
        raise InvalidArgumentError(f"{folder}: the trajectory cache has no shards yet")
    parts = [torch.load(p, weights_only=True) for p in shards]
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    n = len(cat["final"]) if count is None else min(int(count), len(cat["final"]))
    traj = Trajectories(levels=[float(v) for v in meta["levels"]], states=cat["states"][:n],
                        final=cat["final"][:n], cond_latents=cat["cond_latents"][:n],
                        positions=cat["positions"][:n], embeddings=cat["embeddings"][:n],
                        noise_seeds=cat["noise_seeds"][:n], num_frames=int(cat["states"].shape[2]))
    return traj, meta
