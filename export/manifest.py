"""The part of a bundle manifest every exporter writes the same way: where the
bundle came from, the model's dims and component specs, the configs the runtime
rebuilds its adapters from, and the sampler settings (sigmas included) that an
app needs to run the loop without PyTorch."""
from __future__ import annotations

import json
from pathlib import Path

from refocus_edge.runtime.artifacts import model_hash
from refocus_edge.runtime.manifest import Manifest


def plain_config(config) -> dict:
    """A model config as plain JSON (paths become strings; private keys dropped)."""
    return {k: v for k, v in json.loads(json.dumps(dict(config), default=str)).items()
            if not k.startswith("_") or k == "_class_name"}


def _scheduler(refocuser):
    from refocus_edge.runtime.sampler import make_scheduler

    return make_scheduler(refocuser, refocuser.config.num_inference_steps)


def base_manifest(refocuser, model_arg, dims, specs, created_by: str, tools: dict,
                  source_hash: str | None = None) -> Manifest:
    cfg = refocuser.config
    scheduler = _scheduler(refocuser)
    return Manifest(
        created_by=created_by,
        source={"model": str(model_arg), "path": str(Path(refocuser.source).resolve()),
                "hash": source_hash or model_hash(refocuser.source),
                "decoder": cfg.decoder},
        dims=dims.to_json(),
        components={name: spec.to_json() for name, spec in specs.items()},
        configs={"unet": plain_config(refocuser.unet.config), "vae": plain_config(refocuser.vae.config),
                 "image_encoder": plain_config(refocuser.image_encoder.config.to_dict())},
        clip={"mean": list(refocuser.clip_mean), "std": list(refocuser.clip_std),
              "size": list(refocuser.clip_size)},
        sampler={"num_inference_steps": cfg.num_inference_steps,
                    "guidance_scale": cfg.guidance_scale,
                    "added_time_ids": list(cfg.added_time_ids),
                    "decode_chunk_sizes": list(cfg.decode_chunk_sizes),
                    "sigmas": [float(x) for x in scheduler.sigmas],
                    # What an app needs to run the loop without diffusers: x0 = noise * this,
                    # and latents are divided by the VAE's scaling factor before decoding.
                    "init_noise_sigma": float(scheduler.init_noise_sigma),
                    "prediction_type": scheduler.config.prediction_type,
                    "vae_scaling_factor": float(refocuser.vae.config.scaling_factor),
                    "default_position": cfg.default_position},
        tools=tools,
    )
