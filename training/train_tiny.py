"""Train `refocus-tiny` on synthetic focal stacks: the VAE first, then the UNet
(with the image encoder jointly) under the reference's EDM v-loss, sigma
sampling and conditioning dropout. Rerunnable and resumable:

    python -m training.train_tiny data   --count 3000          # render the training stacks
    python -m training.train_tiny vae    --steps 12000
    python -m training.train_tiny unet   --steps 5000 [--init models/refocus-tiny]
    python -m training.train_tiny export --out models/refocus-tiny

Each stage checkpoints under --run-dir (default runs/refocus-tiny/) every few
minutes and resumes from there when started again with the same arguments.
The UNet stage also runs on a GPU (`--device cuda [--precision bf16]`; the data
stays in CPU memory, each batch moves to the device) and takes a wall-clock
budget (`--minutes`): it then stops when the budget is spent, its lr schedule
following the elapsed share of the budget, and saves its checkpoint and EMA
weights as at the end (training/gpu_route.py uses both).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from training import edm
from training.tiny_architecture import (
    FEATURE_EXTRACTOR_CONFIG, WORKING_SIZE, build_image_encoder, build_scheduler, build_unet, build_vae,
)

RUN_DIR = Path("runs/refocus-tiny")
VAE_FINAL_CROP = 64  # crop of the VAE's last 5% of steps (whole stacks)


@dataclass(frozen=True)
class StageConfig:
    steps: int
    lr: float
    batch: int
    seed: int = 0
    checkpoint_minutes: float = 5.0
    sigma_uniform: float = 0.0  # UNet: fraction of sigmas drawn log-uniform over the sampler's range
    # The UNet's cheaper-training levers (issue 23 item 4; the defaults are the shipped teacher's recipe):
    loss_weight: str = "edm"  # edm.sigma_weight: "edm" (the reference's) or "min-snr"
    snr_gamma: float = 5.0  # min-snr's cap
    own_weight: float = 1.0  # how many times the input's own frame counts in the loss (edm.weighted_loss)
    latent_crop: int = 0  # train on random latent crops of this side (and the matching pixel crop); 0 = whole
    accumulate: int = 1  # batches summed into one update (effective batch = batch x accumulate)


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def training_device(name: str) -> torch.device:
    """`--device` as a torch device, or one line saying why it cannot be used here."""
    from refocus_edge.runtime.errors import InvalidArgumentError

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f"--device {name!r} is not a torch device; use cpu or cuda (cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise InvalidArgumentError(
                f"--device {name}: no CUDA GPU is usable here (torch {torch.__version__}, {build}); run this on "
                "a GPU machine, or use --device cpu (the GPU route: --dry-run)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidArgumentError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise InvalidArgumentError(f"--device {name}: only cpu and cuda are supported")
    return device


def load_stacks(path: Path) -> torch.Tensor:
    """uint8 [N, 9, H, W, 3] cache -> in-memory uint8 tensor."""
    return torch.from_numpy(np.load(path))


def to_m11(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
    return u8.movedim(-1, -3).float().div(127.5).sub(1.0)


def _lr_at(step: int, cfg: StageConfig) -> float:
    warm = min(100, cfg.steps // 10)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(cfg.steps - warm, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _save_ckpt(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# ---------------------------------------------------------------- VAE stage
def _vae_batch(stacks: torch.Tensor, crop: int, whole_stack: bool, gen: torch.Generator) -> torch.Tensor:
    """9 frames [9, 3, crop, crop] in [-1, 1] for one VAE step.

    Mostly 9 unrelated small crops (different scenes, focus positions and places): nine
    times the content per step of one stack's frames, which is what got the first VAE
    (3000 steps on whole 64x64 stacks) stuck at L1 0.3. Sometimes one stack's 9 frames at
    one place, so the temporal decoder still sees the focal stacks it decodes at inference.
    """
    n, _, h, w, _ = stacks.shape
    if whole_stack:
        i = int(torch.randint(n, (1,), generator=gen))
        y, x = (int(v) for v in torch.randint(0, h - crop + 1, (2,), generator=gen))
        frames = to_m11(stacks[i, :, y:y + crop, x:x + crop])
    else:
        idx = torch.randint(n, (9,), generator=gen)
        pos = torch.randint(9, (9,), generator=gen)
        ys = torch.randint(0, h - crop + 1, (9,), generator=gen)
        xs = torch.randint(0, w - crop + 1, (9,), generator=gen)
        frames = torch.stack([to_m11(stacks[int(idx[j]), int(pos[j]), int(ys[j]):int(ys[j]) + crop,
                                            int(xs[j]):int(xs[j]) + crop]) for j in range(9)])
    if torch.rand(1, generator=gen).item() < 0.5:
        frames = frames.flip(-1)
    return frames


def train_vae(stacks: torch.Tensor, cfg: StageConfig, run_dir: Path, crop: int = 32) -> None:
    from refocus_edge.runtime.metrics.lpips import LPIPS

    ckpt = run_dir / "vae.ckpt"
    vae = build_vae(cfg.seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"]); step = state["step"]
        _log(f"vae: resumed at step {step}")
    lpips = LPIPS("alex")
    last_ckpt = time.time()
    t_start, losses = time.time(), []
    # The last 5% of steps on whole stacks at VAE_FINAL_CROP: the mid-block attention and
    # the temporal layers finish on inputs shaped like inference's.
    final_phase = int(cfg.steps * 0.95)
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        late = step >= final_phase
        frames = _vae_batch(stacks, VAE_FINAL_CROP if late else crop, late or step % 4 == 0, gen)
        post = vae.encode(frames).latent_dist
        # A deterministic autoencoder in practice: the UNet trains on, and the sampler
        # conditions on, the posterior mode; the KL term only keeps the latents bounded.
        z = post.mode()
        # Decode as inference does: frames 0..7 together, then frame 8 alone.
        recon = torch.cat([vae.decode(z[:8], num_frames=8).sample, vae.decode(z[8:], num_frames=1).sample])
        l1 = (recon - frames).abs().mean()
        perceptual = lpips(recon.clamp(-1, 1), frames).mean()
        kl = post.kl().mean() / (frames.shape[-1] * frames.shape[-2])
        loss = l1 + perceptual + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append((loss.item(), l1.item()))
        step += 1
        if step % 200 == 0 or step == cfg.steps:
            rate = (time.time() - t_start) / len(losses)
            recent = np.mean(losses[-200:], axis=0)
            _log(f"vae step {step}/{cfg.steps} loss {recent[0]:.4f} L1 {recent[1]:.4f} "
                 f"({rate:.2f} s/step, eta {rate * (cfg.steps - step) / 60:.1f} min)")
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60 or step == cfg.steps:
            _save_ckpt(ckpt, model=vae.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=step)
            last_ckpt = time.time()
    vae.eval()
    # Scale latents to unit variance, as the SD/SVD VAEs' scaling_factor does.
    with torch.no_grad():
        sample_idx = torch.arange(0, len(stacks), max(1, len(stacks) // 100))[:100]
        zs = torch.cat([vae.encode(to_m11(stacks[i])).latent_dist.mode() for i in sample_idx])
    vae.register_to_config(scaling_factor=float(1.0 / zs.std()))
    vae.save_pretrained(run_dir / "vae", safe_serialization=True)
    _log(f"vae: saved, scaling_factor {vae.config.scaling_factor:.5f}")


# --------------------------------------------------------------- UNet stage
@torch.no_grad()
def encode_latents(vae, stacks: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Posterior modes [N, 9, C, h, w], unscaled: the VAE trains as a deterministic autoencoder.
    Encoded on `device` (where the VAE is), returned in CPU memory."""
    from tqdm import tqdm

    return torch.stack([vae.encode(to_m11(stacks[i].to(device))).latent_dist.mode().cpu()
                        for i in tqdm(range(len(stacks)), desc="encode", mininterval=30)])


def train_unet(stacks: torch.Tensor, cfg: StageConfig, run_dir: Path, init: Path | None = None,
               device: str | torch.device = "cpu", precision: str = "fp32", minutes: float | None = None) -> dict:
    """Train (or continue) the UNet and image encoder; returns what the run did (steps, seconds,
    s/step after the first few steps, whether the `minutes` budget stopped it)."""
    from diffusers import AutoencoderKLTemporalDecoder

    t_enter = time.time()
    device = torch.device(device)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(run_dir / "vae").eval().requires_grad_(False).to(device)
    lat_path = run_dir / "latents.pt"
    if lat_path.exists():
        latents = torch.load(lat_path)
    else:
        _log("unet: encoding the training stacks once")
        latents = encode_latents(vae, stacks, device)
        torch.save(latents, lat_path)
    if init is None:
        unet, encoder = build_unet(cfg.seed).train(), build_image_encoder(cfg.seed + 1).train()
    else:
        # Warm start from an earlier model's UNet and image encoder: their denoising and
        # attention features carry over even when the VAE (the latent space) is new.
        # Loaded with their own configs, so a model of another size (a test's) warm-starts too.
        from diffusers import UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionModelWithProjection

        unet = UNetSpatioTemporalConditionModel.from_pretrained(init / "unet").train()
        encoder = CLIPVisionModelWithProjection.from_pretrained(init / "image_encoder").train()
        _log(f"unet: initialised from {init}")
    unet, encoder = unet.to(device), encoder.to(device)
    params = list(unet.parameters()) + list(encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema_unet, ema_enc = copy.deepcopy(unet).eval(), copy.deepcopy(encoder).eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    step, ckpt = 0, run_dir / "unet.ckpt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location="cpu")  # the generator state stays on CPU
        unet.load_state_dict(state["unet"]); encoder.load_state_dict(state["encoder"])
        ema_unet.load_state_dict(state["ema_unet"]); ema_enc.load_state_dict(state["ema_enc"])
        opt.load_state_dict(state["opt"]); gen.set_state(state["gen"]); step = state["step"]
        _log(f"unet: resumed at step {step}")
    # On CPU the big noise tensors come from `gen` (results as before); on a GPU from a
    # generator there, so that drawing them does not hold the device up.
    noise_gen = gen if device.type == "cpu" else torch.Generator(device).manual_seed(cfg.seed + step)
    last_ckpt, t_start, losses = time.time(), time.time(), []
    deadline = None if minutes is None else t_enter + minutes * 60
    stopped_early, t_warm, warm_steps = False, None, min(10, cfg.steps // 10)
    while step < cfg.steps:
        if deadline is not None and time.time() >= deadline:
            _log(f"unet: {minutes:g} min budget spent at step {step}/{cfg.steps}")
            stopped_early = True
            break
        if len(losses) == warm_steps:
            t_warm = time.time()
        # Under a budget the schedule follows whichever is further along: steps or time.
        at = step if deadline is None else min(cfg.steps, max(
            step, int(cfg.steps * (time.time() - t_start) / max(deadline - t_start, 1e-9))))
        lr = _lr_at(at, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for _ in range(cfg.accumulate):
            part = unet_loss(unet, encoder, vae, stacks, latents, cfg, gen, noise_gen, device, precision)
            (part / cfg.accumulate).backward()
            loss = loss + part.detach() / cfg.accumulate
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_enc, encoder)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % 50 == 0 or step == cfg.steps:
            rate = (time.time() - t_start) / len(losses)
            _log(f"unet step {step}/{cfg.steps} loss {np.mean(losses[-50:]):.4f} lr {lr:.2e} "
                 f"({rate:.2f} s/step, eta {rate * (cfg.steps - step) / 60:.1f} min)")
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60 or step == cfg.steps or (
                deadline is not None and time.time() >= deadline):
            _save_ckpt(ckpt, unet=unet.state_dict(), encoder=encoder.state_dict(),
                       ema_unet=ema_unet.state_dict(), ema_enc=ema_enc.state_dict(),
                       opt=opt.state_dict(), gen=gen.get_state(), step=step)
            last_ckpt = time.time()
    ema_unet.save_pretrained(run_dir / "unet", safe_serialization=True)
    ema_enc.save_pretrained(run_dir / "image_encoder", safe_serialization=True)
    _log("unet: saved EMA weights")
    t_end = time.time()
    timed = len(losses) - warm_steps if t_warm is not None else len(losses)
    return {"steps": step, "planned_steps": cfg.steps, "updates": len(losses), "stopped_by_budget": stopped_early,
            "seconds": t_end - t_enter, "train_seconds": t_end - t_start,
            "s_per_step": (t_end - (t_warm or t_start)) / timed if timed > 0 else None,
            "final_loss": float(np.mean(losses[-50:])) if losses else None}


def unet_loss(unet, encoder, vae, stacks: torch.Tensor, latents: torch.Tensor, cfg: StageConfig,
              gen: torch.Generator, noise_gen: torch.Generator, device=torch.device("cpu"),
              precision: str = "fp32") -> torch.Tensor:
    """One UNet training batch's EDM v-loss. Indices and small draws come from `gen` (CPU), the
    latent- and image-sized noise from `noise_gen` (on `device`); `stacks` and `latents` stay in
    CPU memory and only the batch moves. `precision` "bf16": the image encoder and the UNet run
    under bf16 autocast (the loss is taken in fp32)."""
    from refocus_edge.runtime.conditioning import image_embedding

    B, sf = cfg.batch, vae.config.scaling_factor
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    clip_size = (encoder.config.image_size,) * 2
    mean, std = FEATURE_EXTRACTOR_CONFIG["image_mean"], FEATURE_EXTRACTOR_CONFIG["image_std"]
    idx = torch.randint(len(stacks), (B,), generator=gen)
    pos = torch.randint(9, (B,), generator=gen)
    flip = torch.rand(1, generator=gen).item() < 0.5
    target = latents[idx].to(device) * sf  # [B, 9, C, h, w]
    inputs = to_m11(stacks[idx, pos].to(device))  # [B, 3, H, W]
    if flip:
        target, inputs = target.flip(-1), inputs.flip(-1)
    whole = inputs  # the image encoder sees the whole photo, as at inference
    if cfg.latent_crop and cfg.latent_crop < min(target.shape[-2:]):
        # One crop for the batch: the UNet is convolutional (and its attention takes any token count),
        # so a crop of a quarter of the latent costs about a quarter of a whole-frame step.
        f = inputs.shape[-1] // target.shape[-1]
        c = cfg.latent_crop
        y, x = (int(v) for v in (torch.randint(0, target.shape[-2] - c + 1, (1,), generator=gen),
                                 torch.randint(0, target.shape[-1] - c + 1, (1,), generator=gen)))
        target = target[..., y:y + c, x:x + c]
        inputs = inputs[..., y * f:(y + c) * f, x * f:(x + c) * f]
    # Conditioning noise augmentation (the reference trains with it; inference uses none).
    cond_sigma = torch.exp(torch.randn(B, generator=gen) * edm.COND_NOISE_LOG_STD + edm.COND_NOISE_LOG_MEAN)
    noise = torch.randn(inputs.shape, generator=noise_gen, device=device)
    noisy_inputs = inputs + cond_sigma.to(device).view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        cond_lat = vae.encode(noisy_inputs).latent_dist.mode()  # unscaled, as at inference
    cond = torch.zeros_like(target)
    cond[torch.arange(B, device=device), pos.to(device)] = cond_lat
    with autocast:
        emb = image_embedding(encoder, whole, clip_size, mean, std)  # [B, 1, D], trained jointly
    keep_emb, keep_lat = (m.to(device) for m in edm.conditioning_dropout_masks(B, gen))
    emb = emb * keep_emb.view(-1, 1, 1)
    cond = cond * keep_lat.view(-1, 1, 1, 1, 1)
    sigmas = edm.sample_sigmas(B, gen, uniform_fraction=cfg.sigma_uniform).to(device)
    noisy = target + torch.randn(target.shape, generator=noise_gen, device=device) * sigmas.view(-1, 1, 1, 1, 1)
    # fps id 6 as at inference (the reference trains with 7; a small model gains nothing
    # from learning that mismatch), motion bucket 0, noise augmentation = cond sigma.
    time_ids = torch.stack([torch.full((B,), 6.0), torch.zeros(B), cond_sigma], dim=1).to(device)
    with autocast:
        denoised = edm.denoise(unet, noisy, sigmas, cond, emb, time_ids)
    return edm.weighted_loss(denoised, target, sigmas, cfg.loss_weight, cfg.snr_gamma, pos, cfg.own_weight)


# ------------------------------------------------------------------ export
def export_model(run_dir: Path, out: Path, card: dict) -> None:
    import diffusers
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from refocus_edge.runtime.model_config import RefocusModelConfig, save_model_config

    out.mkdir(parents=True, exist_ok=True)
    if (run_dir / "unet").is_dir():
        unet = UNetSpatioTemporalConditionModel.from_pretrained(run_dir / "unet")
        encoder = CLIPVisionModelWithProjection.from_pretrained(run_dir / "image_encoder")
    else:  # a run still in progress: export the EMA weights of its last checkpoint
        state = torch.load(run_dir / "unet.ckpt", weights_only=False)
        unet, encoder = build_unet(), build_image_encoder()
        unet.load_state_dict(state["ema_unet"]); encoder.load_state_dict(state["ema_enc"])
        _log(f"export: UNet training unfinished, using the EMA weights of step {state['step']}")
    unet.save_pretrained(out / "unet")
    encoder.save_pretrained(out / "image_encoder")
    AutoencoderKLTemporalDecoder.from_pretrained(run_dir / "vae").save_pretrained(out / "vae")
    build_scheduler().save_pretrained(out / "scheduler")
    CLIPImageProcessor(**FEATURE_EXTRACTOR_CONFIG).save_pretrained(out / "feature_extractor")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableVideoDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }, indent=2) + "\n")
    save_model_config(RefocusModelConfig(fixed_size=WORKING_SIZE, extra=card), out)
    _log(f"exported to {out}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["data", "vae", "unet", "export"])
    p.add_argument("--count", type=int, default=3000, help="training stacks to render (data)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch", type=int, default=None, help="UNet batch (unet; a VAE step is always 9 frames)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None, help="warm-start UNet + image encoder from this model folder (unet)")
    p.add_argument("--crop", type=int, default=32, help="VAE training crop size (vae)")
    p.add_argument("--sigma-uniform", type=float, default=0.0,
                   help="fraction of UNet training sigmas drawn log-uniform over the sampler's range (unet)")
    p.add_argument("--loss-weight", choices=edm.LOSS_WEIGHTS, default="edm",
                   help="sigma weighting of the UNet loss: the reference's EDM weight or min-SNR-gamma (unet)")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="min-SNR's cap (unet)")
    p.add_argument("--own-weight", type=float, default=1.0,
                   help="weight of the input's own frame in the UNet loss, the others 1 (unet)")
    p.add_argument("--latent-crop", type=int, default=0,
                   help="train the UNet on random latent crops of this side (8 = 64 px at 128x128); 0 = whole frames")
    p.add_argument("--accumulate", type=int, default=1, help="batches summed into one UNet update (unet)")
    p.add_argument("--device", default="cpu", help="torch device of the UNet stage (cpu, cuda, cuda:1, ...)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: autocast of the UNet and image encoder (unet)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget of the UNet stage: stop, save and keep the EMA weights when spent (unet)")
    p.add_argument("--run-dir", type=Path, default=RUN_DIR)
    p.add_argument("--out", type=Path, default=Path("models/refocus-tiny"))
    args = p.parse_args(argv)
    device = training_device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_dir = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    data = run_dir / f"train_{WORKING_SIZE[0]}.npy"
    if args.stage == "data":
        from refocus_edge.focalstacks.synthetic import render_cache

        render_cache("train", args.count, (WORKING_SIZE[1], WORKING_SIZE[0]), data)
        return
    if args.stage == "export":
        card = json.loads((run_dir / "card.json").read_text()) if (run_dir / "card.json").exists() else {}
        export_model(run_dir, args.out, card)
        return
    stacks = load_stacks(data)
    _log(f"{args.stage}: {len(stacks)} stacks of {tuple(stacks.shape[1:])}")
    if args.stage == "vae":
        train_vae(stacks, StageConfig(args.steps, args.lr or 1e-3, 1, args.seed), run_dir, args.crop)
    else:
        cfg = StageConfig(args.steps, args.lr or 3e-4, args.batch or 4, args.seed,
                          sigma_uniform=args.sigma_uniform, loss_weight=args.loss_weight,
                          snr_gamma=args.snr_gamma, own_weight=args.own_weight,
                          latent_crop=args.latent_crop, accumulate=args.accumulate)
        stats = train_unet(stacks, cfg, run_dir, args.init, device, args.precision, args.minutes)
        # What this invocation did (a resumed run writes its own part), for benchmarks/teacher_levers.py.
        record = {"config": asdict(cfg), "init": str(args.init) if args.init else None, "minutes": args.minutes,
                  "threads": torch.get_num_threads(), "device": str(device), "precision": args.precision, **stats}
        (run_dir / "unet_run.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
