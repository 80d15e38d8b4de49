"""Model folder loading: both layouts, and a clear error for every broken part."""
from __future__ import annotations

import json
import shutil

import pytest

from refocus_edge.runtime.errors import ModelLoadError
from refocus_edge.runtime.loading import load_refocuser


@pytest.fixture
def model_copy(random_model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(random_model_dir, dst)
    return dst


def test_full_pipeline_folder_loads(random_model_dir):
    r = load_refocuser(random_model_dir)
    assert r.unet.config.in_channels == 2 * r.latent_channels
    assert r.config.num_frames == 9 and r.config.fixed_size == (64, 64)
    assert r.scheduler.config.prediction_type == "v_prediction"


def test_base_plus_unet_override(random_model_dir, tmp_path):
    # The released layout: an SVD base folder plus checkpoint-200000/unet.
    base = tmp_path / "svd-base"
    shutil.copytree(random_model_dir, base)
    ckpt_unet = tmp_path / "checkpoint-200000" / "unet"
    shutil.move(str(base / "unet"), str(ckpt_unet))
    (base / "unet").mkdir()  # the base's own UNet is irrelevant, even if broken
    r = load_refocuser(base, unet=ckpt_unet)
    assert r.unet.config.in_channels == 8
    assert any("UNet from" in n for n in r.notes)


@pytest.mark.parametrize("part", ["unet", "vae", "image_encoder", "scheduler"])
def test_missing_component(model_copy, part):
    shutil.rmtree(model_copy / part)
    with pytest.raises(ModelLoadError, match=f"missing component folder '{part}/'"):
        load_refocuser(model_copy)


def test_pickled_weights_are_refused(model_copy):
    weights = next((model_copy / "vae").glob("*.safetensors"))
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match="only safetensors are accepted"):
        load_refocuser(model_copy)


def test_unet_in_channels_must_be_twice_latent_channels(model_copy):
    cfg_path = model_copy / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["in_channels"] = 4
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"in_channels is 4.*must be 2 x 4"):
        load_refocuser(model_copy)


def test_frame_count_other_than_nine(model_copy):
    (model_copy / "refocus.json").write_text(json.dumps({"num_frames": 14}))
    with pytest.raises(ModelLoadError, match="num_frames is 14"):
        load_refocuser(model_copy)


def test_unknown_key_in_refocus_json(model_copy):
    (model_copy / "refocus.json").write_text(json.dumps({"guidence": 2}))
    with pytest.raises(ModelLoadError, match="unknown keys"):
        load_refocuser(model_copy)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_refocuser(tmp_path)
    with pytest.raises(ModelLoadError, match="refocus models"):
        load_refocuser("no-such-model-name")


def test_corrupt_weights_file(model_copy):
    weights = next((model_copy / "unet").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load the UNet"):
        load_refocuser(model_copy)


def test_cross_attention_mismatch(model_copy):
    cfg_path = model_copy / "image_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["projection_dim"] = 48
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="projection_dim 48"):
        load_refocuser(model_copy)
