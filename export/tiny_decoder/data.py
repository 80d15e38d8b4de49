"""What the tiny decoders learn from: latents the model really decodes, and their targets.

Two kinds of latents per training stack, so that a decoder sees both what the sampler produces
and the clean latent manifold: the model's own sample of the stack (fast sampler, input frame at
a seeded position, the model's steps), and the VAE encoding of the true frames. The target of
each is, for the tiny decoder (target "model"), the full temporal decoder's output, decoded in the
model's own chunks exactly as `refocus run` decodes; for the photo-guided decoder (target
"truth"), the true frames themselves, with the input position (the true frame at that position
is the input photo, the guide). Built once into atomic shards under the run folder, so a killed
build resumes; a build for another model or settings is refused, not mixed in.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from refocus_edge.runtime.errors import InvalidArgumentError

SHARD = 16  # stacks per shard file


@dataclass
class DecoderPairs:
    latents: torch.Tensor  # [N, F, C, h, w] float32, unscaled (the decoder's input)
    frames: torch.Tensor  # [N, F, 3, H, W] float16 in [-1, 1]: the full decoder's output, or the true frames
    positions: torch.Tensor | None = None  # [N] int: the input photo's position (target "truth" only)

    def __len__(self) -> int:
        return len(self.latents)


@torch.no_grad()
def model_sample_latents(refocuser, image: torch.Tensor, position: int, seed: int):
    """(unscaled final latents [F, C, h, w], the full decoder's frames [F, 3, H, W] in [-1, 1]) of one
    fast-mode stack. The last Euler step ends at sigma 0, where the latents equal the last denoised
    estimate, so observing the steps gives the latents the decoder is handed."""
    from refocus_edge.runtime.sampler import sample_focal_stack
    from refocus_edge.runtime.sampler_config import SamplerConfig

    seen = {}
    result = sample_focal_stack(refocuser, image, SamplerConfig(position=position, seed=seed, progress=False),
                                on_step=lambda i, s, d: seen.update(last=d, sigma=s))
    if result.sigmas[-1] != 0:
        raise InvalidArgumentError("the model's sampler does not end at sigma 0; its final latents are not "
                                   "its last denoised estimate")
    latents = seen["last"][0] / refocuser.vae.config.scaling_factor
    return latents.float(), (result.frames * 2 - 1).float()


@torch.no_grad()
def model_final_latents(refocuser, image: torch.Tensor, position: int, seed: int) -> torch.Tensor:
    """The unscaled final latents [F, C, h, w] of one fast-mode stack, not decoded."""
    from refocus_edge.runtime.sampler import sample_focal_stack
    from refocus_edge.runtime.sampler_config import SamplerConfig

    result = sample_focal_stack(refocuser, image, SamplerConfig(position=position, seed=seed, progress=False),
                                decode=False)
    return (result.latents[0] / refocuser.vae.config.scaling_factor).float()


@torch.no_grad()
def true_latents(refocuser, frames01: torch.Tensor) -> torch.Tensor:
    """Unscaled VAE posterior modes [F, C, h, w] of true frames (in [0, 1])."""
    return refocuser.vae.encode(frames01 * 2 - 1).latent_dist.mode().float()


@torch.no_grad()
def true_frame_latents(refocuser, frames01: torch.Tensor):
    """(unscaled VAE posterior modes of the true frames, the full decoder's frames of them)."""
    from refocus_edge.runtime.sampler import decode_latents

    latents = true_latents(refocuser, frames01)
    decoded = decode_latents(refocuser.vae, latents[None] * refocuser.vae.config.scaling_factor,
                             refocuser.config.decode_chunk_sizes)
    return latents.float(), (decoded * 2 - 1).float()


def _pairs_of_stack(refocuser, source, index: int, seed: int, target: str) -> list[tuple]:
    frames = source.frames(index)
    position = int(np.random.default_rng([seed, index]).integers(0, frames.shape[0]))
    photo = frames[position:position + 1] * 2 - 1
    if target == "truth":  # no full decode: the true frames are the target
        truth = frames * 2 - 1
        return [(model_final_latents(refocuser, photo, position, seed + index), truth, position),
                (true_latents(refocuser, frames), truth, position)]
    return [(*model_sample_latents(refocuser, photo, position, seed + index), position),
            (*true_frame_latents(refocuser, frames), position)]


def build_pairs(refocuser, source, folder: Path, count: int, facts: dict, seed: int, progress: bool = True,
                log=print, target: str = "model") -> DecoderPairs:
    """`count` stacks of `source` -> 2 x count (latents, frames[, positions]) pairs, cached in `folder`;
    frames are the full decoder's (target "model") or the true ones (target "truth")."""
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    facts_path = folder / "facts.json"
    if facts_path.is_file():
        old = json.loads(facts_path.read_text())
        if old != facts:
            changed = sorted(k for k in set(old) | set(facts) if old.get(k) != facts.get(k))
            raise InvalidArgumentError(f"{folder} holds decoder pairs built with other settings {changed}; "
                                       "use another --run-dir or delete it")
    else:
        facts_path.write_text(json.dumps(facts, indent=2))
    shards = range(0, count, SHARD)
    missing = [s for s in shards if not (folder / f"pairs-{s:05d}.pt").is_file()]
    if missing:
        todo = sum(min(SHARD, count - s) for s in missing)
        what = "true frames" if target == "truth" else "full-decoder frames"
        log(f"distill-decoder: building {todo} of {count} training stacks' decoder pairs "
            f"(the model's sample + the true frames' latents, {what}) in {folder}")
    bar = tqdm(total=sum(min(SHARD, count - s) for s in missing), desc="decoder pairs", unit="stack", disable=not progress, mininterval=2)
    for start in missing:
        pairs = []
        for i in range(start, min(start + SHARD, count)):
            pairs += _pairs_of_stack(refocuser, source, i, seed, target)
            bar.update()
        tmp = folder / f".pairs-{start:05d}.tmp"
        torch.save({"latents": torch.stack([p[0] for p in pairs]),
                    "frames": torch.stack([p[1] for p in pairs]).half(),
                    "positions": torch.tensor([p[2] for p in pairs])}, tmp)
        tmp.replace(folder / f"pairs-{start:05d}.pt")  # atomic: a killed build leaves whole shards only
    bar.close()
    parts = [torch.load(folder / f"pairs-{s:05d}.pt", weights_only=True) for s in shards]
    positions = torch.cat([p["positions"] for p in parts]) if all("positions" in p for p in parts) else None
    return DecoderPairs(torch.cat([p["latents"] for p in parts]), torch.cat([p["frames"] for p in parts]),
                        positions)


def held_out_samples(refocuser, count: int, size: tuple[int, int], seed: int):
    """The model's own samples of `count` stacks of the renderer's held-out split (never trained on),
    at input positions 0, 4, 8 in turn: (latents [N, F, C, h, w], full-decoder frames [N, F, 3, H, W],
    true frames [N, F, 3, H, W] in [-1, 1], input positions [N])."""
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

    stacks = SyntheticFocalStacks("heldout", size=(size[1], size[0]), length=count)
    out, truth, positions = [], [], []
    for i in range(count):
        frames = stacks[i]["frames"]
        position = (0, 4, 8)[i % 3] if frames.shape[0] == 9 else i % frames.shape[0]
        out.append(model_sample_latents(refocuser, frames[position:position + 1] * 2 - 1, position, seed + i))
        truth.append(frames * 2 - 1)
        positions.append(position)
    return (torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out]), torch.stack(truth),
            torch.tensor(positions))


def held_out_latents(refocuser, count: int, size: tuple[int, int], seed: int):
    """(latents, full-decoder frames) of `held_out_samples`."""
    return held_out_samples(refocuser, count, size, seed)[:2]
