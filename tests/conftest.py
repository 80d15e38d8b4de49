"""Shared fixtures: tiny instances of the real diffusers/transformers classes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# The random refocuser's UNet: 2 levels, heads (1, 2); tests of UNet rewrites reuse it.
RANDOM_UNET_CONFIG = dict(
    sample_size=8, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
    layers_per_block=1, cross_attention_dim=32, transformer_layers_per_block=1,
    num_attention_heads=(1, 2), num_frames=9)


def _save_random_refocuser(out: Path) -> Path:
    """A randomly initialised refocuser in diffusers layout, at the shipped model's shapes."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from training.tiny_architecture import build_scheduler

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(**RANDOM_UNET_CONFIG)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                                       layers_per_block=1, latent_channels=4)
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=1,
        num_attention_heads=2, image_size=64, patch_size=16))
    unet.save_pretrained(out / "unet")
    vae.save_pretrained(out / "vae")
    enc.save_pretrained(out / "image_encoder")
    build_scheduler().save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}))
    (out / "refocus.json").write_text(json.dumps({"fixed_size": [64, 64], "num_inference_steps": 4}))
    return out


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    return _save_random_refocuser(tmp_path_factory.mktemp("random_refocuser"))


@pytest.fixture(scope="session")
def random_refocuser(random_model_dir):
    from refocus_edge.runtime.loading import load_refocuser

    return load_refocuser(random_model_dir)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Backend timings and engines go to a per-session temp cache, never the user's."""
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "refocus-cache"))
    monkeypatch.delenv("REFOCUS_BACKEND", raising=False)


@pytest.fixture(scope="session")
def tiny_bundle(random_model_dir, tmp_path_factory) -> Path:
    """The random tiny refocuser exported to an fp32 + fp16 ONNX bundle (both gates passed)."""
    from refocus_edge.export.targets.target_onnx import OnnxExportConfig, export_onnx

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_onnx(OnnxExportConfig(model=random_model_dir, out=out, precisions=("fp32", "fp16")),
                log=lambda _msg: None)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """torch (and the ONNX Runtime sessions, which take torch's thread count) on 1 thread: on the
    2-core CI box that is the fast setting for tiny graphs, and a second busy process makes
    2-thread runs many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
