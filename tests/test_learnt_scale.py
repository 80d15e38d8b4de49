"""Generating at the scale a model learnt (runtime/learnt_scale.py, refocus.json `generate_scale`): the
photo is shrunk by that share (never below the model's fixed_size short side) for the model, and the
frames come back at the served size with the photo's own detail where a frame is as sharp as the photo."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from refocus_edge.runtime.errors import InvalidArgumentError, ModelLoadError
from refocus_edge.runtime.learnt_scale import detail_energy, generation_size, restore_size
from refocus_edge.runtime.resize import resize_planes
from refocus_edge.runtime.model_config import RefocusModelConfig, load_model_config


@pytest.mark.parametrize("served, expected", [((448, 256), (224, 128)), ((320, 256), (160, 128)),
                                              ((512, 256), (256, 128)), ((320, 320), (160, 160)),
                                              ((256, 448), (128, 224)), ((192, 192), (128, 128)),
                                              ((128, 128), (128, 128)), ((96, 64), (96, 64))])
def test_the_generation_size_is_half_the_served_size_but_not_below_the_learnt_one(served, expected):
    assert generation_size(*served, 0.5, 128) == expected
    assert RefocusModelConfig(fixed_size=(128, 128), generate_scale=0.5).generation_size(*served) == expected
    assert RefocusModelConfig(fixed_size=(128, 128)).generation_size(*served) == served  # not set: as served


def _textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(resize_planes(rng.random((3, h // 4, w // 4)).astype(np.float32), (w, h)), 0, 1)


def test_the_input_frame_gets_the_photos_detail_back_and_a_soft_frame_stays_soft():
    photo = _textured(128, 224)
    small = np.clip(resize_planes(photo, (112, 64), Image.Resampling.LANCZOS), 0, 1)
    soft = resize_planes(resize_planes(small, (28, 16), Image.Resampling.BOX), (112, 64))  # defocused
    out = restore_size(np.stack([small, soft]), photo, small)
    assert out.shape == (2, 3, 128, 224) and out.dtype == np.float32
    enlarged = resize_planes(small, (224, 128))
    # A frame as sharp as the shrunk photo comes back as the photo, far closer than an enlargement...
    assert np.abs(out[0] - photo).mean() < 0.1 * np.abs(enlarged - photo).mean()
    # ...and a defocused frame gets next to none of the photo's detail.
    assert detail_energy(out[1]).mean() < 0.05 * detail_energy(photo).mean()
    with pytest.raises(InvalidArgumentError, match="shrunk photo's size"):
        restore_size(np.stack([photo]), photo, small)


@pytest.mark.parametrize("bad", [0, 1.5, "half", True])
def test_generate_scale_is_checked_where_it_is_read(tmp_path, bad):
    (tmp_path / "refocus.json").write_text(json.dumps({"generate_scale": bad}))
    with pytest.raises(ModelLoadError, match=r"generate_scale must be a number in \(0, 1\].*refocus.json"):
        load_model_config(tmp_path)


def test_a_model_with_a_learnt_scale_generates_small_and_delivers_the_served_size(random_model_dir, tmp_path,
                                                                                  monkeypatch):
    from refocus_edge.app.run_photo import RunConfig, refocus_photo
    from refocus_edge.runtime import run_model

    model = tmp_path / "model"
    shutil.copytree(random_model_dir, model)
    (model / "refocus.json").write_text(json.dumps({
        "fixed_size": [64, 64], "num_inference_steps": 1, "min_short_side": 128, "max_pixels": 32_768,
        "max_aspect": 2.0, "generate_scale": 0.5}))
    seen = []
    plain = run_model.RunModel._sample

    def spy(self, rgb, cfg):
        seen.append(rgb.shape[:2])
        return plain(self, rgb, cfg)

    monkeypatch.setattr(run_model.RunModel, "_sample", spy)
    photo = tmp_path / "wide.png"
    Image.fromarray((_textured(300, 600).transpose(1, 2, 0) * 255).astype(np.uint8)).save(photo)
    report = refocus_photo(RunConfig(image=photo, out_dir=tmp_path / "out", model=str(model), progress=False,
                                     dof_views=None))
    assert seen == [(64, 128)]  # the model ran at the learnt short side, at the photo's 2:1
    assert report.size == (256, 128)
    assert Image.open(sorted((tmp_path / "out").glob("*.png"))[0]).size == (256, 128)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert any("generated at 128x64" in n and "restored to 256x128" in n for n in run["notes"])


def test_a_bundle_serves_its_own_shape_when_its_graphs_take_the_generation_sizes():
    from refocus_edge.runtime.bundle_loading import served_config
    from refocus_edge.runtime.components import ModelDims, component_specs
    cfg = RefocusModelConfig(fixed_size=(64, 64), min_short_side=128, max_pixels=32_768, max_aspect=2.0,
                             generate_scale=0.5)
    dims = dict(latent_channels=4, embed_dim=32, clip_size=(64, 64), vae_scale_factor=8, num_frames=9,
                decode_chunk_sizes=(8, 1), num_time_ids=3, guided=True)
    generation = component_specs(ModelDims(resolutions=((64, 64), (128, 64), (64, 128)), **dims))
    served, note = served_config(cfg, generation)
    assert note is None and served.generate_scale == 0.5 and served.resolution_policy.min_short_side == 128
    one_size = component_specs(ModelDims(resolutions=((64, 64),), **dims))
    served, note = served_config(cfg, one_size)
    assert served.resolution_policy.fixed == (64, 64) and served.generate_scale is None
    assert "--resolution 64x64 128x64 64x128" in note


def test_the_timing_benchmark_compares_both_ways_in_one_run(random_model_dir, tmp_path):
    """benchmarks.learnt_scale: per served size, the stack generated at the served size and generated
    smaller, alternating, with the restoring share; refused for a model without generate_scale."""
    from benchmarks.learnt_scale import main

    model = tmp_path / "model"
    shutil.copytree(random_model_dir, model)
    (model / "refocus.json").write_text(json.dumps({"fixed_size": [64, 64], "num_inference_steps": 1,
                                                    "generate_scale": 0.5}))
    out = tmp_path / "t"
    assert main(["--model", str(model), "--sizes", "256x128", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads((out / "learnt_scale.json").read_text())
    (row,) = res["rows"]
    assert row["size"] == [256, 128] and row["generated_at"] == [128, 64]
    assert row["served_s"] > 0 and 0 < row["restore_s"] < row["scaled_s"]
    assert "| 256x128 | 128x64 |" in (out / "learnt_scale.md").read_text()
    assert (out / "learnt_scale.png").stat().st_size > 0
    assert main(["--model", str(random_model_dir), "--sizes", "256x128", "--out", str(out)]) == 2
