"""Write a distilled student as a model folder like any other.

Diffusers layout: the student's UNet, the teacher's VAE, image encoder and
feature extractor, and a scheduler config whose sigma_max/sigma_min give the
student's own sigmas at its step count. refocus.json says the step count and
that there is no guidance (weight 0: the reference's "no unconditional branch"),
so `refocus run --model <student>` needs no flags and makes `steps` UNet calls.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.model_config import RefocusModelConfig, save_model_config
from refocus_edge.runtime.publish import output_lock, publishing, recover


def student_model_config(teacher_config: RefocusModelConfig, steps: int, card: dict) -> RefocusModelConfig:
    return replace(teacher_config, num_inference_steps=int(steps), guidance_scale=0.0, sigmas=None,
                   extra=dict(card))


def write_student(teacher, unet, scheduler_config: dict, steps: int, out: Path, card: dict,
                  readme: str, force: bool = False) -> Path:
    """Stage the folder next to `out`, then publish it at once (nothing half-written is left)."""
    import diffusers
    from diffusers import EulerDiscreteScheduler

    out = Path(out)
    with output_lock(out):
        recover(out)
        if out.exists() and not force:
            raise InvalidArgumentError(f"{out} already exists; pass --force to replace it")
        with publishing(out) as stage:  # all at once, nothing half-written (runtime/publish.py)
            unet.save_pretrained(stage / "unet", safe_serialization=True)
            teacher.vae.save_pretrained(stage / "vae", safe_serialization=True)
            teacher.image_encoder.save_pretrained(stage / "image_encoder", safe_serialization=True)
            fe = Path(teacher.source) / "feature_extractor"
            if fe.is_dir():
                shutil.copytree(fe, stage / "feature_extractor")
            EulerDiscreteScheduler.from_config(scheduler_config).save_pretrained(stage / "scheduler")
            index_path = Path(teacher.source) / "model_index.json"
            index = json.loads(index_path.read_text()) if index_path.is_file() else {}
            index.update({"_class_name": index.get("_class_name", "StableVideoDiffusionPipeline"),
                          "_diffusers_version": diffusers.__version__})
            (stage / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
            save_model_config(student_model_config(teacher.config, steps, card), stage)
            (stage / "README.md").write_text(readme)
    return out
