"""`refocus distill-decoder` end to end: pairs -> training (resumable) -> gate -> atomic publish."""
from __future__ import annotations

import json
import platform
import re
from dataclasses import replace
from pathlib import Path

import torch

from refocus_edge.export.tiny_decoder.config import TinyDecoderConfig
from refocus_edge.runtime.errors import InvalidArgumentError

HELD_OUT_SEED = 100_000  # noise seeds of the held-out samples: never those of training samples


def pair_facts(root: Path, cfg: TinyDecoderConfig, size) -> dict:
    """What the cached pairs depend on: the model's VAE and UNet (its samples), data, size, seed, target."""
    from refocus_edge.runtime.artifacts import model_hash

    facts = {"vae": model_hash(root / "vae"), "unet": model_hash(root / "unet"), "data": str(cfg.data),
             "size": list(size), "seed": cfg.seed}
    return {**facts, "target": "truth"} if cfg.guided else facts


def _attached_readme(root: Path, cfg: TinyDecoderConfig, card: dict) -> str:
    """The README of a decoder gated with no updates (--iterations 0): --init's weights plus a lens stack."""
    g, lens = card["gate"], card["lens"]
    head = (f"focus-depth head `{lens['path']}` (SHA-256 {lens['sha256'][:16]}..., U-Net widths {lens.get('channels')}, "
            f"{lens.get('iterations')} updates on "
            f"`{lens.get('data')}`" + (f" + `{', '.join(lens.get('more_data') or [])}`" if lens.get("more_data") else "")
            + (", blur cues only (no colour)" if not lens.get("colour", True) else "") + ")") if lens else "nothing new"
    before, replaced = card.get("init_readme", ""), card.get("init_lens", False)
    marker = "\n## The decoder it started from\n"
    if replaced and marker in before:  # --init had a lens stack, so this README: keep the lineage flat
        before = re.sub(r"(?m)^##(#+) ", r"\1 ", before.split(marker, 1)[1]).strip() + "\n"
    before = re.sub(r"(?m)^(#+) ", r"##\1 ", before)  # its headings under this README's
    return f"""# Photo-guided decoder of {root.name}, with a lens stack

Written by `{card['command']}`.

- **No updates**: the weights of `{cfg.init}`{" but its lens stack" if replaced else ""} (its training: below), plus the lens stack
  (runtime/lens_stack.py): {head}, whose per-pixel focus index makes a stack from the photo by the
  thin-lens model (re-blurred where a frame is farther from the pixel's focus than the photo,
  unsharp-masked by {cfg.lens_amount} per frame of focus gained where it is closer), mixed into the
  output at {cfg.lens_mix}. {card['parameters'] / 1e6:.3f} M parameters in all (the model's VAE decoder:
  {card['full_decoder_parameters'] / 1e6:.3f} M). It decodes a whole 9-frame stack in one chunk.
- **Gate** ({g['metric']}): {g['value']:+.4f} <= {g['threshold']} on the model's own samples of {cfg.held_out}
  held-out stacks ({g['detail']}).
- `gate.json` records the gate and the SHA-256 of the weights it passed; a changed weights file is
  refused at load time. `refocus run` uses it by default on this model (`--decoder guided`; `--decoder full`
  for the VAE's own decoder).

## The decoder it started from

{before or "(no README)"}
"""


def _guided_readme(root: Path, cfg: TinyDecoderConfig, card: dict) -> str:
    g = card["gate"]
    focus = f" + {cfg.focus_weight} x L1 of log focus maps" if cfg.focus_weight else ""
    focus += f" + {cfg.curve_weight} x cross-entropy of per-pixel focus curves" if cfg.curve_weight else ""
    sizes = _sizes_note(cfg, card)
    return f"""# Photo-guided decoder of {root.name}

The tiny temporal decoder's architecture (runtime/tiny_decoder.py) plus a photo guide: the input
photo's features are added at every level, each frame is told its focus offset from the photo's,
and the output is a learnt per-pixel blend of the photo and the decoded frame. {card['parameters'] / 1e6:.3f} M
parameters (the model's VAE decoder: {card['full_decoder_parameters'] / 1e6:.3f} M). It decodes a whole 9-frame
stack in one chunk.

Written by `{card['command']}`.

- **Trained toward the true frames**, not the full decoder: L1 + {cfg.perceptual_weight} x LPIPS (alex){focus} to the
  true frames of {cfg.samples} training stacks (`{cfg.data}`), decoding {card['pairs']} latent stacks (the model's
  own fast-mode samples and the VAE encodings of the true frames), the input photo being the true
  frame at the sample's input position{sizes}; started from {card['init']}; {cfg.iterations} updates, batch
  {cfg.batch} stacks, AdamW lr {cfg.lr} (warm-up, cosine), EMA {cfg.ema_decay} (EMA weights shipped);
  {card['train_minutes']:.1f} min of updates on {card['machine']}.
- **Gate** ({g['metric']}): {g['value']:+.4f} <= {g['threshold']} on the model's own samples of {cfg.held_out}
  held-out stacks ({g['detail']}).
- `gate.json` records the gate and the SHA-256 of the weights it passed; a changed weights file is
  refused at load time. `refocus run` uses it by default on this model (`--decoder guided`; `--decoder full`
  for the VAE's own decoder).
"""


def _sizes_note(cfg: TinyDecoderConfig, card: dict) -> str:
    if not cfg.sizes:
        return ""
    sizes = ", ".join(f"{w}x{h}" for w, h in cfg.sizes)
    w, h = card["working_size"]
    return (f"; plus {cfg.size_samples} synthetic stacks rendered at each of {sizes} (larger blur in pixels), "
            f"drawn for {cfg.size_mix:.0%} of the batch's stacks as random {w}x{h} crops, transposed half the time")


def _readme(root: Path, cfg: TinyDecoderConfig, card: dict) -> str:
    g = card["gate"]
    return f"""# Tiny temporal decoder of {root.name}

A {card['parameters'] / 1e6:.3f} M-parameter stand-in for this model's temporal VAE decoder
({card['full_decoder_parameters'] / 1e6:.3f} M parameters), runtime/tiny_decoder.py: 3x3 convolutions,
ReLU, nearest upsampling, a sub-pixel output, neighbour-frame mixing at the two coarsest levels; it
decodes a whole 9-frame stack in one chunk.

Written by `{card['command']}`.

- **Trained** to reproduce the full decoder: L1 + {cfg.perceptual_weight} x LPIPS (alex) to the full
  decoder's frames of {card['pairs']} latent stacks (the model's own fast-mode samples and the VAE
  encodings of the true frames of {cfg.samples} training stacks, `{cfg.data}`); {cfg.iterations} updates,
  batch {cfg.batch} stacks, AdamW lr {cfg.lr} (warm-up, cosine), EMA {cfg.ema_decay} (EMA weights shipped);
  {card['train_minutes']:.1f} min of updates on {card['machine']}.
- **Gate** ({g['metric']}): median {g['value']:.4f} <= {g['threshold']} over the model's own samples of
  {cfg.held_out} held-out stacks ({g['detail']}).
- `gate.json` records the gate and the SHA-256 of the weights it passed; a changed weights file is
  refused at load time. Select it with `refocus run --decoder tiny` (or `auto`), export it with
  `refocus export onnx --decoder tiny`.
"""


def run_decoder_distillation(cfg: TinyDecoderConfig, log=print, command: str = "") -> Path:
    from refocus_edge.export.distillation.data import FocalStackSource, check_larger_size, larger_size_data
    from refocus_edge.export.tiny_decoder.data import build_pairs, held_out_samples
    from refocus_edge.export.tiny_decoder.gate import decoder_gate, guided_gate
    from refocus_edge.export.tiny_decoder.trainer import TinyDecoderTrainer
    from refocus_edge.runtime.artifacts import file_sha256
    from refocus_edge.runtime.bundle import is_bundle
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.publish import output_lock, publishing, recover
    from refocus_edge.runtime.tiny_decoder import FOLDER, GATE_FILE, GUIDED_FOLDER, TinyTemporalDecoder
    from refocus_edge.runtime.zoo import resolve_model

    root = resolve_model(cfg.model)
    if is_bundle(root):
        raise InvalidArgumentError(f"{root} is an exported bundle; distill-decoder trains from a model folder "
                                   "(the bundle's source model)")
    refocuser = load_refocuser(root, decoder="full")  # the full decoder: the teacher of the tiny one
    out = Path(cfg.out) if cfg.out else Path(refocuser.source) / (GUIDED_FOLDER if cfg.guided else FOLDER)
    if out.exists() and not cfg.force:
        raise InvalidArgumentError(f"{out} already exists; pass --force to replace it")
    size = refocuser.config.working_size
    factor = refocuser.vae_scale_factor
    upsamplings = 2 ** (len(cfg.channels) - 1)
    shuffle = factor // upsamplings  # the sub-pixel output makes up the rest of the VAE's factor
    if upsamplings * shuffle != factor:
        raise InvalidArgumentError(f"--channels {list(cfg.channels)} gives a {upsamplings * shuffle}x decoder; the VAE "
                                   f"upsamples {factor}x")
    torch.manual_seed(cfg.seed)  # the initial weights
    lens = _lens_head_facts(cfg, refocuser.config.num_frames) if cfg.lens_head else {}
    try:
        tiny = TinyTemporalDecoder(latent_channels=refocuser.latent_channels, channels=tuple(cfg.channels),
                                   blocks=tuple(cfg.blocks), num_frames=refocuser.config.num_frames,
                                   shuffle=shuffle, guided=cfg.guided, photo_blurs=tuple(cfg.photo_blurs),
                                   photo_sharpen=tuple(cfg.photo_sharpen), lens_head=tuple(lens.get("channels", ())),
                                   lens_mix=cfg.lens_mix if lens else 0.0, lens_amount=cfg.lens_amount,
                                   lens_colour=bool(lens.get("colour", True)))
    except ValueError as exc:  # the decoder's own checks: the guided pyramid's 2x output, the bank's sigmas
        raise InvalidArgumentError(f"decoder settings (--channels {list(cfg.channels)}, --guided, --photo-blurs, "
                                   f"--photo-sharpen, --lens-head, --lens-mix): {exc}") from None
    if cfg.init is not None:
        init = _start_from(tiny, Path(cfg.init), log)
    else:
        init = _warm_start(tiny, Path(refocuser.source), log) if cfg.guided else "random weights"
    if lens:  # the trained head, frozen: the decoder learns around it, never retrains it toward frames
        tiny.lens.head.load_state_dict(torch.load(cfg.lens_head, weights_only=True, map_location="cpu"))
        tiny.lens.requires_grad_(False)
        init += f"; lens stack: focus-depth head {cfg.lens_head} (sha256 {lens['sha256'][:12]}), mix {cfg.lens_mix}"
    for extra_size in cfg.sizes:  # before hours of pairs, not after
        check_larger_size(extra_size, size, factor)
    run_dir = cfg.resolved_run_dir(Path(refocuser.source))
    facts = pair_facts(Path(refocuser.source), cfg, size)
    if cfg.iterations > 0:
        source = FocalStackSource(cfg.data, size)
        target = "truth" if cfg.guided else "model"
        pairs = build_pairs(refocuser, source, run_dir / "pairs", cfg.samples, facts, cfg.seed, cfg.progress, log,
                            target=target)
        extra = []
        data = larger_size_data(cfg.data)
        for w, h in cfg.sizes:
            extra.append(build_pairs(refocuser, FocalStackSource(data, (w, h)), run_dir / f"pairs-{w}x{h}",
                                     cfg.size_samples, pair_facts(Path(refocuser.source), replace(cfg, data=data), (w, h)),
                                     cfg.seed, cfg.progress, log, target=target))
        trainer = TinyDecoderTrainer(tiny, pairs, cfg, run_dir / "tiny_decoder.ckpt", log, extra=tuple(extra))
        trainer.resume()
        trainer.run()
        decoder, seconds, history, pair_count = trainer.ema, trainer.seconds, trainer.history, len(pairs)
    else:  # no updates: the --init decoder (with what is new in it, a lens stack) is gated as it is
        if cfg.init is None:
            raise InvalidArgumentError("--iterations 0 gates a decoder without training it: give --init")
        log("distill-decoder: no updates (--iterations 0); gating the decoder as built")
        decoder, seconds, history, pair_count = tiny.eval(), 0.0, [], 0

    log(f"distill-decoder: gate on the model's samples of {cfg.held_out} held-out stacks")
    latents, frames, truth, positions = held_out_samples(refocuser, cfg.held_out, size, HELD_OUT_SEED)
    if cfg.guided:
        gate, stats = guided_gate(decoder, latents, frames, truth, positions, cfg.gate_threshold)
    else:
        gate, stats = decoder_gate(decoder, latents, frames, cfg.gate_threshold)
    log(f"distill-decoder: {gate.metric} = {gate.value:.4f} (threshold {gate.threshold}; {gate.detail})")
    gate.enforce()  # ParityError: nothing is written, the checkpoint stays for another try

    card = {"command": command or "refocus distill-decoder", "parameters": sum(p.numel() for p in tiny.parameters()),
            "full_decoder_parameters": sum(p.numel() for p in refocuser.vae.decoder.parameters()),
            "pairs": pair_count, "train_minutes": seconds / 60, "lens": lens,
            "machine": f"{cfg.device} ({platform.machine()}, {torch.get_num_threads()} threads)",
            "gate": gate.to_json(), "stats": stats, "init": init, "working_size": list(size),
            "init_readme": _read_text(Path(cfg.init) / "README.md") if cfg.init else "",
            "init_lens": bool(cfg.init) and bool(json.loads((Path(cfg.init) / "config.json").read_text()).get("lens_head"))}
    with output_lock(out):
        recover(out)
        if out.exists() and not cfg.force:  # again, under the lock: another writer may have been faster
            raise InvalidArgumentError(f"{out} already exists; pass --force to replace it")
        with publishing(out) as stage:
            decoder.save_pretrained(stage, safe_serialization=True)
            weights = sorted(stage.glob("*.safetensors"))
            # the gate was measured on this UNet's samples: another UNet needs the gate again
            record = {"gate": gate.to_json(), "stats": stats, "vae_hash": facts["vae"], "unet_hash": facts["unet"],
                      "weights_sha256": {w.name: file_sha256(w) for w in weights},
                      "training": {**cfg.training_facts(), "init": init, "updates": len(history),
                                   "seconds": seconds, "final_loss": history[-1][1] if history else None,
                                   **({"lens_head": lens} if lens else {})},
                      "command": card["command"]}
            (stage / GATE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            readme = _attached_readme if cfg.iterations == 0 else _guided_readme if cfg.guided else _readme
            (stage / "README.md").write_text(readme(Path(refocuser.source), cfg, card))
    log(f"distill-decoder: wrote {out}")
    return out


def _read_text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _lens_head_facts(cfg: TinyDecoderConfig, frames: int) -> dict:
    """The --lens-head weights' facts (<head>.json from `python -m training.depth_head`), checked."""
    from refocus_edge.runtime.artifacts import file_sha256

    head = Path(cfg.lens_head)
    if not cfg.guided:
        raise InvalidArgumentError("--lens-head builds frames from the input photo, which only the photo-guided "
                                   "decoder sees; add --guided")
    meta = head.with_suffix(".json")
    if not head.is_file() or not meta.is_file():
        raise InvalidArgumentError(f"--lens-head {head}: needs the weights and {meta.name} beside them, as "
                                   "`python -m training.depth_head --out HEAD.pt` writes them")
    facts = json.loads(meta.read_text())
    if int(facts.get("positions", -1)) != frames:
        raise InvalidArgumentError(f"--lens-head {head}: a head for {facts.get('positions')} focus positions; this "
                                   f"model makes {frames} frames")
    if not 0 < cfg.lens_mix <= 1 or cfg.lens_amount < 0:
        raise InvalidArgumentError(f"--lens-mix must be in (0, 1] and --lens-amount >= 0, got {cfg.lens_mix}, "
                                   f"{cfg.lens_amount}")
    return {**facts, "path": str(head), "sha256": file_sha256(head), "mix": cfg.lens_mix, "amount": cfg.lens_amount}


def _start_from(decoder, folder: Path, log) -> str:
    """Start from the weights of another decoder folder of the same architecture (--init)."""
    from refocus_edge.runtime.tiny_decoder import TinyTemporalDecoder

    if not (folder / "config.json").is_file():
        raise InvalidArgumentError(f"--init {folder}: not a decoder folder (no config.json); pass a tiny_decoder or "
                                   "guided_decoder folder")
    start = TinyTemporalDecoder.from_pretrained(folder, use_safetensors=True)
    differ = _differing(start, decoder, [k for k in decoder.config if not k.startswith("_")])
    # Parts a decoder can take fresh on top of the one it starts from: (the config keys that define it, the
    # key that says it is there, its weights' prefix, its name, whether one the start has can be replaced)
    parts = [({"photo_blurs", "photo_sharpen"}, "photo_blurs", "guide.blurs.", "the photo re-blur bank", False),
             ({"lens_head", "lens_mix", "lens_amount", "lens_sharpen_sigma", "lens_step_fraction", "lens_colour"},
              "lens_head", "lens.", "the lens stack", True)]
    fresh = [p for p in parts if set(differ) & p[0]
             and (not start.config.get(p[1]) or (p[4] and decoder.config.get(p[1])))]
    if differ and fresh and set(differ) <= set().union(*(p[0] for p in fresh)):
        # The same network but for these parts: everything else continues from where that decoder was; a
        # new bank starts as a near no-op (a 0.05 share), a lens stack (new or replacing the start's) takes
        # its trained head from --lens-head.
        prefixes = tuple(p[2] for p in fresh)
        kept = {k: v for k, v in start.state_dict().items() if not k.startswith(prefixes)}
        missing, unexpected = decoder.load_state_dict(kept, strict=False)
        if unexpected or any(not k.startswith(prefixes) for k in missing):
            raise InvalidArgumentError(f"--init {folder}: its weights do not fit this decoder")
        what = " and ".join(f"{p[3]} {'replaced' if start.config.get(p[1]) else 'new'}" for p in fresh)
        log(f"distill-decoder: starting from {folder} ({what})")
        return f"{folder} (all its weights; {what})"
    if differ:
        raise InvalidArgumentError(f"--init {folder}: another architecture ({', '.join(differ)} differ)")
    decoder.load_state_dict(start.state_dict())
    log(f"distill-decoder: starting from {folder}")
    return f"{folder} (all weights)"


def _differing(a, b, keys) -> list[str]:
    """The config keys on which decoders a and b differ (lists and tuples compare alike)."""
    def seq(v):
        return list(v) if isinstance(v, (list, tuple)) else [v]

    return sorted(k for k in keys if seq(a.config.get(k)) != seq(b.config.get(k)))


def _warm_start(guided, root: Path, log) -> str:
    """Start the guided decoder's latent path from the model's gated tiny decoder where it has one of
    the same architecture (the zero-initialised guide then starts by changing nothing); what it
    started from, for the records."""
    from refocus_edge.runtime.errors import ModelLoadError
    from refocus_edge.runtime.tiny_decoder import FOLDER, load_tiny_decoder

    try:
        start = load_tiny_decoder(root)
    except ModelLoadError:
        return "random weights (the model has no gated tiny decoder to start from)"
    latent_path = ("latent_channels", "channels", "blocks", "temporal_levels", "shuffle", "num_frames")
    if _differing(start, guided, latent_path):
        return "random weights (the model's tiny decoder has another architecture)"
    guided.load_state_dict(start.state_dict(), strict=False)  # everything but the guide
    log(f"distill-decoder: the guided decoder starts from {root / FOLDER}")
    return f"{root.name}/{FOLDER} (its latent path; the photo guide starts as a no-op)"
