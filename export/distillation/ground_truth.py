"""Few-step students trained toward the true focal stack, through their own sampler.

Trajectory distillation (objective.py) can only make a student as good as its
teacher. This objective trains the student on the task itself: for a training
stack and an input position k, the student's exact N-step Euler sampler runs
from fresh noise with gradients (every UNet call of the stack in the graph),
and its final latents are regressed on the ground-truth stack's latents (MSE,
unit-variance latents) plus LPIPS (alex) of a decoded crop against the true
frames, the frozen temporal decoder decoding the crop 8 + 1 frames as the
sampler does; optionally plus an L1 between log focus maps of that crop and of
the truth (`focus_weight`), the sharpness-across-frames signal that depth from
focus reads and that MSE and LPIPS reward only weakly. The trajectory term to a teacher can be kept beside it
(`teacher_weight`). Single-step video generators built on SVD (SF-V, MobileVD)
train through the generator's own sampler the same way; the paper's Table 1
shows plain L2 regression networks coming close to its diffusion model on this
task, so a regression target is a sound one for a few-step student.

The ground truth is encoded once into a cache (latents of every frame, the
image embedding of every frame as an input, the frames themselves), written in
atomic shards so that a killed build resumes; a different VAE, image encoder,
data source or size is refused, not mixed in.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from refocus_edge.export.distillation.config import DistillConfig
from refocus_edge.export.distillation.data import FocalStackSource
from refocus_edge.export.distillation.teacher import Conditioning, place_at_positions
from refocus_edge.export.distillation.train import TrainerCore, TrajectoryObjective
from refocus_edge.runtime.edm import euler_step
from refocus_edge.runtime.errors import InvalidArgumentError

SHARD_STACKS = 64


@dataclass
class GroundTruthStacks:
    """Encoded training stacks, in memory."""

    latents: torch.Tensor  # [N, F, C, h, w] float16: VAE posterior modes, unscaled (as the sampler encodes)
    embeddings: torch.Tensor  # [N, F, 1, D] float16: image embedding of frame k as the input photo
    frames: torch.Tensor  # [N, F, 3, H, W] uint8: the true frames

    def __len__(self) -> int:
        return len(self.latents)


@dataclass
class GroundTruthBatch:
    """One update's stacks: latents [B, F, C, h, w] float32 unscaled, the input photos' embeddings [B, 1, D],
    the true frames [B, F, 3, H, W] uint8 and the input positions [B]."""

    latents: torch.Tensor
    embeddings: torch.Tensor
    frames: torch.Tensor
    pos: torch.Tensor


def ground_truth_facts(refocuser, cfg: DistillConfig, size) -> dict:
    from refocus_edge.runtime.artifacts import model_hash

    return {"model_hash": model_hash(Path(refocuser.source)), "data": str(cfg.data), "size": list(size),
            "scaling_factor": float(refocuser.vae.config.scaling_factor)}


@torch.no_grad()
def build_ground_truth(refocuser, source: FocalStackSource, folder: Path, count: int, facts: dict,
                       progress: bool = True) -> Path:
    """Encode the first `count` stacks of `source` into `folder` (resuming a partial build)."""
    from tqdm.auto import tqdm

    from refocus_edge.runtime.conditioning import component_dtype, image_embedding

    folder = Path(folder)
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        differs = sorted(k for k in facts if old.get(k) != facts[k])
        if differs:
            raise InvalidArgumentError(f"{folder}: this ground-truth cache was made with different {differs}; "
                                       "point --cache at a new folder or delete this one")
    folder.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(dict(facts, shard_stacks=SHARD_STACKS), indent=2) + "\n")
    vae, enc = refocuser.vae, refocuser.image_encoder
    shards = (count + SHARD_STACKS - 1) // SHARD_STACKS
    todo = [s for s in range(shards) if not (folder / f"gt_{s:05d}.pt").is_file()]
    bar = tqdm(total=len(todo) * SHARD_STACKS, desc="encode ground truth", unit="stack", disable=not progress,
               mininterval=5)
    for s in todo:
        lat, emb, u8 = [], [], []
        for i in range(s * SHARD_STACKS, (s + 1) * SHARD_STACKS):
            frames = source.frames(i % len(source))  # [F, 3, H, W] in [0, 1]
            pm1 = frames * 2 - 1
            lat.append(vae.encode(pm1.to(component_dtype(vae))).latent_dist.mode().float().half())
            emb.append(image_embedding(enc, pm1, refocuser.clip_size, refocuser.clip_mean,
                                       refocuser.clip_std).float().half())
            u8.append((frames * 255).round().clamp(0, 255).to(torch.uint8))
            bar.update()
        tmp = folder / f".gt_{s:05d}.tmp"
        torch.save({"latents": torch.stack(lat), "embeddings": torch.stack(emb), "frames": torch.stack(u8)}, tmp)
        tmp.replace(folder / f"gt_{s:05d}.pt")
    bar.close()
    return folder


def load_ground_truth(folder: Path, count: int) -> GroundTruthStacks:
    parts = [torch.load(p, weights_only=True) for p in sorted(Path(folder).glob("gt_*.pt"))]
    if not parts:
        raise InvalidArgumentError(f"{folder}: the ground-truth cache has no shards")
    cat = {k: torch.cat([p[k] for p in parts])[:count] for k in parts[0]}
    return GroundTruthStacks(cat["latents"], cat["embeddings"], cat["frames"])


def default_ground_truth_dir(facts: dict) -> Path:
    import hashlib

    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    return Path("runs/distill/cache") / f"ground-truth-{digest}"


def random_crop(gen: torch.Generator, h: int, w: int, crop: int) -> tuple[int, int, int, int]:
    """(y, x, ch, cw) of a latent crop; crop 0 or >= the side: the whole side."""
    ch, cw = (h if not crop or crop >= h else crop), (w if not crop or crop >= w else crop)
    y = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    x = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    return y, x, ch, cw


LUMA = (0.299, 0.587, 0.114)
FOCUS_WINDOW = 5  # px: the box over which Laplacian energy is summed
FOCUS_FLOOR = 1e-4  # added before the log, so textureless pixels give flat, equal curves


def log_focus_maps(frames: torch.Tensor) -> torch.Tensor:
    """[F, 3, H, W] frames in [-1, 1] -> [F, H, W] log local sharpness, differentiable.

    The energy of the luminance Laplacian over a small box, in the log domain: at every pixel its curve
    across frames is what depth from focus ranks (refocus_edge.dof uses the same kind of measure), and
    the log makes the loss care about sharpness ratios between frames, not only about textured areas.
    Grain in a region that should be out of focus raises its energy there, and a frame that stays soft
    where the truth is sharp lowers it, so both are penalised."""
    y = torch.einsum("fchw,c->fhw", (frames.float() + 1) * 0.5, frames.new_tensor(LUMA, dtype=torch.float32))
    y = torch.nn.functional.pad(y[:, None], (1, 1, 1, 1), mode="replicate")
    kernel = y.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    energy = torch.nn.functional.conv2d(y, kernel).pow(2)
    energy = torch.nn.functional.avg_pool2d(energy, FOCUS_WINDOW, stride=1, padding=FOCUS_WINDOW // 2,
                                            count_include_pad=False)
    return torch.log(energy[:, 0] + FOCUS_FLOOR)


CURVE_TEMPERATURE = 1.0  # log-energy units: one frame of defocus changes a textured pixel's by several


def focus_curve_loss(frames: torch.Tensor, target: torch.Tensor, frames_per_stack: int) -> torch.Tensor:
    """Cross-entropy between the per-pixel distributions over a stack's frames of where it is sharpest.

    frames, target: [S * F, 3, H, W] in [-1, 1], S stacks of F frames. At every pixel, the softmax across
    the F frames of the log focus maps says which frame is sharpest there; the loss is the target's
    distribution's cross-entropy with the frames' (minus its entropy: 0 when they agree). Unlike the L1
    of the log maps, it scores only the order of sharpness across frames, which is all depth from focus
    reads, and not how much texture there is: a decoder that copies the photo's sharpness into every
    frame has a flat curve and pays for it wherever the truth's curve has a peak."""
    return curve_cross_entropy(log_focus_maps(frames), log_focus_maps(target), frames_per_stack)


def curve_cross_entropy(maps: torch.Tensor, target_maps: torch.Tensor, frames_per_stack: int) -> torch.Tensor:
    """focus_curve_loss on log focus maps [S * F, H, W] already computed (a trainer that also takes their
    L1 computes them once)."""
    def curves(m):
        return m.view(-1, frames_per_stack, *m.shape[1:]) / CURVE_TEMPERATURE

    want = torch.softmax(curves(target_maps), dim=1)
    got = torch.log_softmax(curves(maps), dim=1)
    return (want * (torch.log(want.clamp_min(1e-12)) - got)).sum(dim=1).mean()


def focus_terms(frames: torch.Tensor, target: torch.Tensor, frames_per_stack: int, focus_weight: float,
                curve_weight: float) -> dict:
    """{'focus': L1 of log focus maps, 'curve': curve_cross_entropy} of frames against the target frames,
    each only when its weight is nonzero, the focus maps computed once for both."""
    if focus_weight <= 0 and curve_weight <= 0:
        return {}
    maps, target_maps = log_focus_maps(frames), log_focus_maps(target)
    terms = {}
    if focus_weight > 0:
        terms["focus"] = (maps - target_maps).abs().mean()
    if curve_weight > 0:
        terms["curve"] = curve_cross_entropy(maps, target_maps, frames_per_stack)
    return terms


class GroundTruthTrainer(TrainerCore):
    """The student's own sampler, end to end, regressed on the true stacks (see the module docstring)."""

    desc = "ground truth"

    def __init__(self, student, refocuser, data: GroundTruthStacks, sigmas: torch.Tensor, init_sigma: float,
                 cfg: DistillConfig, train_count: int, teacher_objective: TrajectoryObjective | None = None,
                 log=print, extra: list[GroundTruthStacks] | tuple = ()):
        """`extra`: ground truth at the larger training sizes (cfg.sizes), cut to `data`'s latent size in
        each draw."""
        from refocus_edge.runtime.metrics.lpips import LPIPS

        self.data, self.sigmas = data, sigmas.to(torch.float32)
        self.extra = list(extra)
        self.steps = len(sigmas) - 1
        self.init_sigma = float(init_sigma)
        self.train_count = int(train_count)
        if self.train_count < 1:
            raise InvalidArgumentError("no ground-truth stacks to train on; use --samples >= 4")
        self.vae = refocuser.vae.eval().requires_grad_(False).to(cfg.device)
        self.scaling = float(self.vae.config.scaling_factor)
        self.chunks = tuple(refocuser.config.decode_chunk_sizes)
        self.factor = refocuser.vae_scale_factor  # the loader's, not recomputed from the VAE config
        self.teacher_objective = teacher_objective
        if cfg.teacher_weight > 0 and teacher_objective is None:
            raise InvalidArgumentError("teacher_weight > 0 needs teacher trajectories")
        self._setup(student, refocuser.config, cfg, log)
        self.lpips = LPIPS("alex").to(self.device).requires_grad_(False) if cfg.perceptual_weight > 0 else None
        self.frames_n = data.latents.shape[1]

    # ------------------------------------------------------------- batches
    def batch(self, idx: torch.Tensor, pos: torch.Tensor, data: GroundTruthStacks | None = None,
              crop_gen: torch.Generator | None = None) -> GroundTruthBatch:
        """Stacks `idx` of `data` (default: the working-size ground truth) with inputs at `pos`; with
        `crop_gen`, each stack cut to a random latent-aligned crop of the working latent size (the
        image embedding stays the whole input photo's, as when a photo is served at that size)."""
        data = self.data if data is None else data
        latents, frames = data.latents[idx].float(), data.frames[idx]
        if crop_gen is not None:
            h, w = self.data.latents.shape[-2:]
            f = self.factor
            cut_l, cut_f = [], []
            for b in range(len(idx)):
                y = int(torch.randint(0, latents.shape[-2] - h + 1, (1,), generator=crop_gen))
                x = int(torch.randint(0, latents.shape[-1] - w + 1, (1,), generator=crop_gen))
                cut_l.append(latents[b, ..., y:y + h, x:x + w])
                cut_f.append(frames[b, ..., y * f:(y + h) * f, x * f:(x + w) * f])
            latents, frames = torch.stack(cut_l), torch.stack(cut_f)
        return GroundTruthBatch(latents, data.embeddings[idx, pos].float(), frames, pos)

    def conditioning(self, batch: GroundTruthBatch) -> Conditioning:
        lat = batch.latents[torch.arange(len(batch.pos)), batch.pos]
        return Conditioning(place_at_positions(lat, batch.pos, self.frames_n).to(self.device),
                            batch.embeddings.to(self.device), batch.pos)

    def sample(self, unet, c: Conditioning, noise: torch.Tensor) -> torch.Tensor:
        """The runtime's few-step Euler loop (guidance-free), differentiable when grads are on."""
        x = noise.to(self.device)
        for j in range(self.steps):
            s = self.sigmas[j].expand(len(x)).to(self.device)
            x = euler_step(x, self._d(unet, x, s, c), s, self.sigmas[j + 1])
        return x

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[F, C, h, w] scaled latents -> [F, 3, H, W] in [-1, 1], decoded in the sampler's chunks."""
        out, start = [], 0
        z = latents / self.scaling
        for size in self.chunks:
            part = z[start:start + size]
            if len(part):
                out.append(self.vae.decode(part, num_frames=len(part)).sample)
            start += size
        return torch.cat(out)

    def losses(self, unet, batch: GroundTruthBatch, noise: torch.Tensor, crop_gen) -> dict:
        """{'mse', 'perceptual', 'focus', 'curve'} of the student's samples for a batch of stacks and input positions
        (the decoded-crop terms only when their weight is nonzero)."""
        out = self.sample(unet, self.conditioning(batch), noise)
        target = batch.latents.to(self.device) * self.scaling
        terms = {"mse": (out - target).pow(2).mean()}
        if self.lpips is not None or self.cfg.focus_weight > 0 or self.cfg.curve_weight > 0:
            # One stack of the batch, one crop: the decoder's backward pass is the costly part.
            b = int(torch.randint(len(batch.pos), (1,), generator=crop_gen))
            h, w = out.shape[-2:]
            y, x, ch, cw = random_crop(crop_gen, h, w, self.cfg.perceptual_crop)
            f = self.factor
            frames = self.decode(out[b, :, :, y:y + ch, x:x + cw])
            gt = batch.frames[b, :, :, y * f:(y + ch) * f, x * f:(x + cw) * f]
            gt = gt.float().div(127.5).sub(1).to(self.device)
            frames = frames.clamp(-1, 1)
            if self.lpips is not None:
                terms["perceptual"] = self.lpips(frames, gt).mean()
            # the crop is one stack: its frames are the curve's axis
            terms.update(focus_terms(frames, gt, frames.shape[0], self.cfg.focus_weight, self.cfg.curve_weight))
        return terms

    def noise(self, n: int) -> torch.Tensor:
        shape = (n, *self.data.latents.shape[1:])
        return torch.randn(shape, generator=self.gen) * self.init_sigma

    def loss(self) -> torch.Tensor:
        cfg, b = self.cfg, self.cfg.batch
        data, count, crop_gen = self.data, self.train_count, None
        if self.extra and float(torch.rand((), generator=self.gen)) < cfg.size_mix:
            # A batch from one of the larger sizes, every stack a working-size crop of it (all of them
            # train: the held-back stacks are the working size's).
            data = self.extra[int(torch.randint(len(self.extra), (1,), generator=self.gen))]
            count, crop_gen = len(data), self.gen
        idx = torch.randint(count, (b,), generator=self.gen)
        pos = torch.randint(self.frames_n, (b,), generator=self.gen)
        batch = self.batch(idx, pos, data, crop_gen=crop_gen)
        terms = self.losses(self.student, batch, self.noise(b), self.gen)
        loss = (terms["mse"] + cfg.perceptual_weight * terms.get("perceptual", 0.0)
                + cfg.focus_weight * terms.get("focus", 0.0) + cfg.curve_weight * terms.get("curve", 0.0))
        if cfg.teacher_weight > 0:
            loss = loss + cfg.teacher_weight * self.teacher_objective.loss(self)
        return loss

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def validation(self, unet, idx: torch.Tensor) -> dict:
        """Latent MSE and whole-frame LPIPS to the truth on stacks never trained on (fixed noise and
        positions, so that the numbers before and after training compare)."""
        from refocus_edge.runtime.metrics.lpips import LPIPS

        gen = torch.Generator().manual_seed(1234)
        pos = torch.arange(len(idx)) % self.frames_n
        noise = torch.randn((len(idx), *self.data.latents.shape[1:]), generator=gen) * self.init_sigma
        batch = self.batch(idx, pos)
        out = self.sample(unet, self.conditioning(batch), noise)
        target = batch.latents.to(self.device) * self.scaling
        lp = self.lpips or LPIPS("alex").to(self.device)
        perceptual = []
        for b in range(len(idx)):
            gt = self.data.frames[int(idx[b])].float().div(127.5).sub(1).to(self.device)
            perceptual.append(float(lp(self.decode(out[b]).clamp(-1, 1), gt).mean()))
        return {"latent_mse": float((out - target).pow(2).mean()), "lpips": sum(perceptual) / len(perceptual)}
