"""Load a refocuser from a diffusers-layout folder.

Two layouts are accepted:
  * a full pipeline folder: unet/, vae/, image_encoder/, scheduler/,
    feature_extractor/ (optional), model_index.json;
  * a base folder plus a UNet folder that overrides the base's UNet (the
    released learn2refocus layout: SVD img2vid base + checkpoint-200000/unet).
Only safetensors weights are loaded (pickled .bin files can run code).

A bundle folder is handed to runtime/bundle_loading.py; with `arrays=True` (the
thin runtime) that needs neither torch nor diffusers, which are imported only
for model folders.
"""
from __future__ import annotations

import json
from pathlib import Path

from refocus_edge.runtime.component_names import DECODERS, RUN_DEFAULT
from refocus_edge.runtime.errors import ModelLoadError
from refocus_edge.runtime.importable import importable
from refocus_edge.runtime.quiet import quiet_libraries
from refocus_edge.runtime.model_config import load_model_config
from refocus_edge.runtime.refocuser import CLIP_MEAN, CLIP_STD, Refocuser  # noqa: F401 (loading's public names)
from refocus_edge.runtime.zoo import resolve_model

REQUIRED = ("unet", "vae", "image_encoder", "scheduler")


def _check_weights(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise ModelLoadError(f"missing component folder '{folder.name}/' ({what}); "
                             "a refocuser needs unet/, vae/, image_encoder/ and scheduler/", folder.parent)
    config_name = "scheduler_config.json" if what == "scheduler" else "config.json"
    if not (folder / config_name).is_file():
        raise ModelLoadError(f"no {config_name} in the {what} folder", folder)
    if what == "scheduler":
        return
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.ckpt")):
            raise ModelLoadError(
                f"{what} weights are pickled (.bin/.pt/.ckpt), which can run code on load; only "
                "safetensors are accepted: convert them with safetensors.torch.save_file", folder)
        raise ModelLoadError(f"no *.safetensors weights in the {what} folder", folder)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot parse JSON ({exc})", path) from None


def _load(cls, folder: Path, what: str, dtype):
    try:
        with quiet_libraries():
            return cls.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True).eval()
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers/transformers raise many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load the {what} ({type(exc).__name__}: {first})", folder) from None


def load_refocuser(model: str | Path | None = None, unet: str | Path | None = None,
                   dtype=None, backend: str | None = None,
                   precision: str | None = None, low_memory: bool = False, arrays: bool = False,
                   decoder: str | None = None) -> Refocuser:
    """Load a refocuser by shipped name, model folder or bundle folder.

    `unet` overrides the UNet folder (model folders only). `dtype`: the torch dtype of a model
    folder's modules (None: float32). `backend` (None: the REFOCUS_BACKEND variable, else auto)
    and `precision` apply to bundles; a plain model folder runs on torch only. `low_memory`
    loads each component when its stage starts and frees it when the stage ends
    (runtime/low_memory.py). `arrays`: a bundle's components take numpy arrays (the thin
    runtime's sampler, runtime/array_sampler.py); a model folder refuses it. `decoder`: "full" (the
    VAE's temporal decoder; None means it too), "tiny" (the model's gated tiny decoder,
    runtime/tiny_decoder.py), "guided" (its gated photo-guided decoder), "auto" (guided, else tiny,
    where the model has one that passed its gate, said in the notes when neither) or RUN_DEFAULT
    (what `refocus run` decodes with in fast mode: guided where the model has a gated one, else
    full, silently). A bundle runs the decoder it was exported with and refuses another.
    """
    if decoder is not None and decoder not in (*DECODERS, RUN_DEFAULT):
        raise ModelLoadError(f"unknown decoder {decoder!r}; choose {', '.join(DECODERS)}")
    root = resolve_model(model)
    if not root.exists():
        raise ModelLoadError("no such model folder or shipped model name; `refocus models` lists "
                             "the shipped ones", root)
    if not root.is_dir():
        raise ModelLoadError("is a file; a model is a folder in diffusers layout", root)
    from refocus_edge.runtime.bundle import is_bundle
    from refocus_edge.runtime.dispatch import requested_backend

    if is_bundle(root):
        if unet is not None:
            raise ModelLoadError("--unet overrides apply to model folders, not to exported bundles", root)
        from refocus_edge.runtime.bundle_loading import load_bundle_refocuser

        refocuser = load_bundle_refocuser(root, backend, precision, low_memory=low_memory, arrays=arrays)
        exported = refocuser.config.decoder
        if decoder in ("full", "tiny", "guided") and decoder != exported:
            raise ModelLoadError(f"this bundle was exported with the {exported} decoder; export the model again "
                                 f"with --decoder {decoder}", root)
        return refocuser
    if arrays:
        raise ModelLoadError("the thin runtime runs exported bundles; this is a model folder, which runs on "
                             f"PyTorch (or export it first: refocus export onnx --model {model or root} --out BUNDLE)",
                             root)
    chosen = requested_backend(backend)
    if chosen not in ("auto", "torch"):
        raise ModelLoadError(f"backend '{chosen}' runs exported bundles; export this model first: "
                             f"refocus export onnx --model {model or root} --out BUNDLE", root)
    if not (root / "model_index.json").is_file():
        raise ModelLoadError("no model_index.json: not a diffusers pipeline folder (expected "
                             "unet/, vae/, image_encoder/, scheduler/, model_index.json)", root)
    _read_json(root / "model_index.json")
    unet_dir = Path(unet).expanduser() if unet is not None else root / "unet"
    if unet is not None and not unet_dir.is_dir():
        raise ModelLoadError("UNet override folder does not exist", unet_dir)
    folders = {"unet": unet_dir, "vae": root / "vae", "image_encoder": root / "image_encoder",
               "scheduler": root / "scheduler"}
    for what, folder in folders.items():
        _check_weights(folder, what)
    cfg = load_model_config(root)

    unet_cfg = _read_json(unet_dir / "config.json")
    vae_cfg = _read_json(root / "vae" / "config.json")
    enc_cfg = _read_json(root / "image_encoder" / "config.json")
    latent = int(vae_cfg.get("latent_channels", 4))
    if int(unet_cfg.get("in_channels", -1)) != 2 * latent:
        raise ModelLoadError(
            f"UNet in_channels is {unet_cfg.get('in_channels')}, but position-dependent conditioning "
            f"concatenates noisy and conditioning latents: it must be 2 x {latent} (the VAE's "
            "latent_channels) = " + str(2 * latent) + "; this UNet does not belong to this VAE", unet_dir)
    if int(unet_cfg.get("out_channels", -1)) != latent:
        raise ModelLoadError(f"UNet out_channels is {unet_cfg.get('out_channels')}, but the VAE has "
                             f"{latent} latent channels", unet_dir)
    cross = unet_cfg.get("cross_attention_dim")
    proj = enc_cfg.get("projection_dim")
    if cross is not None and proj is not None and int(cross) != int(proj):
        raise ModelLoadError(f"image encoder projection_dim {proj} does not match the UNet's "
                             f"cross_attention_dim {cross}", root / "image_encoder")

    sched_cfg = _read_json(root / "scheduler" / "scheduler_config.json")
    if sched_cfg.get("prediction_type", "v_prediction") != "v_prediction":
        raise ModelLoadError(f"scheduler prediction_type is {sched_cfg.get('prediction_type')!r}; "
                             "the refocuser is v-prediction", root / "scheduler")

    if not importable("torch"):
        raise ModelLoadError("a model folder runs on PyTorch, which is not installed here; run an exported bundle "
                             "instead (refocus export onnx, where torch is installed) or pip install "
                             "'refocus-edge[export]'", root)
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    dtype = torch.float32 if dtype is None else dtype
    parts = {"unet": (UNetSpatioTemporalConditionModel, unet_dir, "UNet", unet_cfg),
             "vae": (AutoencoderKLTemporalDecoder, root / "vae", "VAE", vae_cfg),
             "image_encoder": (CLIPVisionModelWithProjection, root / "image_encoder", "image encoder", enc_cfg)}
    if low_memory:
        from refocus_edge.runtime.backends.adapters import AttrConfig
        from refocus_edge.runtime.low_memory import LazyComponent

        modules = {k: LazyComponent(k, AttrConfig(c), (lambda a=(cls, f, what): _load(*a, dtype)), dtype)
                   for k, (cls, f, what, c) in parts.items()}
    else:
        modules = {k: _load(cls, f, what, dtype) for k, (cls, f, what, _) in parts.items()}
    refocuser = Refocuser(
        unet=modules["unet"],
        vae=modules["vae"],
        image_encoder=modules["image_encoder"],
        scheduler=EulerDiscreteScheduler.from_pretrained(root / "scheduler"),
        config=cfg,
        source=root,
    )
    fe = root / "feature_extractor" / "preprocessor_config.json"
    if fe.is_file():
        fe_cfg = _read_json(fe)
        refocuser.clip_mean = tuple(fe_cfg.get("image_mean", CLIP_MEAN))
        refocuser.clip_std = tuple(fe_cfg.get("image_std", CLIP_STD))
    size = int(enc_cfg.get("image_size", 224))
    refocuser.clip_size = (size, size)
    if unet is not None:
        refocuser.notes.append(f"UNet from {unet_dir}")
    missing = []  # why each small decoder tried is not used
    for kind in _decoder_preference(decoder):
        problem = _use_tiny_decoder(refocuser, root, kind, required=decoder == kind, dtype=dtype)
        if problem is None:
            break
        missing.append(problem)
    else:
        if missing and decoder == "auto":  # asked for auto: say why it is the full decoder
            refocuser.notes.append(f"full decoder ({'; '.join(missing)})")
    if low_memory:
        refocuser.notes.append("low-memory mode: one component resident at a time")
    return refocuser


def _decoder_preference(decoder: str | None) -> tuple[str, ...]:
    """The small decoders to try, in order, for a --decoder choice (none left: the full decoder)."""
    return {"tiny": ("tiny",), "guided": ("guided",), "auto": ("guided", "tiny"), RUN_DEFAULT: ("guided",)}.get(
        decoder, ())


def _use_tiny_decoder(refocuser: Refocuser, root: Path, kind: str, required: bool, dtype) -> str | None:
    """Swap the VAE's decoder for the model's gated tiny or guided decoder (one chunk of all frames);
    None when done, else why not (it was not required: a required one raises)."""
    from dataclasses import replace

    from refocus_edge.runtime.tiny_decoder import TinyDecoderVAE, load_tiny_decoder

    try:
        tiny = load_tiny_decoder(root, dtype, kind)  # checks its gate record once (hashes the VAE and UNet)
    except ModelLoadError as exc:
        if required:
            raise
        return str(exc)
    refocuser.vae = TinyDecoderVAE(refocuser.vae, tiny)
    frames = refocuser.config.num_frames
    refocuser.config = replace(refocuser.config, decode_chunk_sizes=(frames,),
                               extra={**refocuser.config.extra, "decoder": kind})
    guided = ", guided by the input photo" if tiny.guided else ""
    refocuser.notes.append(f"{kind} decoder ({sum(p.numel() for p in tiny.parameters()) / 1e6:.2f} M parameters, "
                           f"{frames} frames in one chunk{guided})")
    return None
