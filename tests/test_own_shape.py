"""Photos at their own shape (issue 23 item 2): a model's refocus.json can serve photos at their aspect
ratio under a pixel budget (min_short_side, max_pixels, max_aspect) while its fixed_size stays the size
it is trained, exported and benchmarked at; a bundle whose graphs cannot take those sizes falls back
to its working size and says how to export for them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from refocus_edge.runtime.errors import ModelLoadError
from refocus_edge.runtime.model_config import RefocusModelConfig, load_model_config

OWN = {"min_short_side": 128, "max_pixels": 32_768, "max_aspect": 2.0, "size_multiple": 64}


def test_min_short_side_serves_photos_at_their_shape_and_keeps_the_working_size(tmp_path):
    cfg = RefocusModelConfig(fixed_size=(64, 64), **OWN)
    assert cfg.working_size == (64, 64)  # what export and benchmarks use
    policy = cfg.resolution_policy
    assert policy.fixed is None and policy.min_short_side == 128
    assert "own shape" in policy.describe()
    assert RefocusModelConfig(fixed_size=(64, 64)).resolution_policy.fixed == (64, 64)  # unchanged without it

    (tmp_path / "refocus.json").write_text(json.dumps({"fixed_size": [64, 64], "min_short_side": 100}))
    with pytest.raises(ModelLoadError, match="min_short_side must be a positive multiple of 64.*refocus.json"):
        load_model_config(tmp_path)


def test_a_bundle_serves_its_own_shape_only_where_its_graphs_take_those_sizes():
    from refocus_edge.runtime.bundle_loading import served_config
    from refocus_edge.runtime.components import ModelDims, component_specs

    cfg = RefocusModelConfig(fixed_size=(64, 64), **OWN)
    dims = dict(latent_channels=4, embed_dim=32, clip_size=(64, 64), vae_scale_factor=8, num_frames=9,
                decode_chunk_sizes=(8, 1), num_time_ids=3, guided=True)
    one_size = component_specs(ModelDims(resolutions=((64, 64),), **dims))
    served, note = served_config(cfg, one_size)
    assert served.resolution_policy.fixed == (64, 64)
    assert "take 64..64 x 64..64 px" in note and "--resolution 64x64 256x128 128x256" in note

    covering = component_specs(ModelDims(resolutions=((64, 64), (256, 128), (128, 256)), **dims))
    served, note = served_config(cfg, covering)
    assert note is None and served.resolution_policy.min_short_side == 128


def test_refocus_run_keeps_a_wide_photo_wide(random_model_dir, tmp_path):
    from refocus_edge.app.run_photo import RunConfig, refocus_photo

    model = tmp_path / "model"
    shutil.copytree(random_model_dir, model)
    (model / "refocus.json").write_text(json.dumps({"fixed_size": [64, 64], "num_inference_steps": 1, **OWN}))
    photo = tmp_path / "wide.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((300, 600, 3)) * 255).astype(np.uint8)).save(photo)
    report = refocus_photo(RunConfig(image=photo, out_dir=tmp_path / "out", model=str(model), progress=False,
                                     dof_views=None))
    assert report.size == (256, 128)  # 2:1, short side 128, under 32,768 px; not a 64x64 centre crop
    frame = Image.open(sorted((tmp_path / "out").glob("*.png"))[0])
    assert frame.size == (256, 128)


def test_quality_per_served_size_is_one_table(random_model_dir, tmp_path):
    """benchmarks.quality_sizes: one row per size and set from one model load, each the quality
    benchmark's numbers at that size, with the bar judged per set."""
    from benchmarks.quality_sizes import main

    out = tmp_path / "q"
    assert main(["--model", str(random_model_dir), "--sizes", "64x64", "128x64", "--sets", "synthetic",
                 "--count", "1", "--positions", "0", "8", "--out", str(out)]) == 0
    res = json.loads((out / "quality_sizes.json").read_text())
    assert [r["size"] for r in res["rows"]] == [[64, 64], [128, 64]]
    for r in res["rows"]:
        assert r["set"] == "synthetic" and 0 < r["lpips_large_jumps"] < 1 and 0 < r["identity"] < 1
        assert r["ratio"] == pytest.approx(r["lpips_large_jumps"] / r["identity"])
        assert r["bar_met"] == (r["ratio"] <= 0.90)
    table = (out / "quality_sizes.md").read_text()
    assert "| 128x64 | synthetic |" in table and (out / "quality_sizes.png").stat().st_size > 0
