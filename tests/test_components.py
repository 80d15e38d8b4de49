"""Component specs: one description that export, profiles and input checks all read."""
from __future__ import annotations

import pytest
import torch

from refocus_edge.runtime.components import ComponentSpec, ModelDims, component_specs
from refocus_edge.runtime.errors import InvalidArgumentError

DIMS = ModelDims(latent_channels=4, embed_dim=32, clip_size=(64, 64), vae_scale_factor=8, num_frames=9,
                 decode_chunk_sizes=(8, 1), resolutions=((128, 64), (64, 64), (256, 128)))


def test_every_component_is_described():
    specs = component_specs(DIMS)
    assert list(specs) == ["image_encoder", "vae_encoder", "unet", "vae_decoder_8", "vae_decoder_1"]
    unet = specs["unet"]
    assert unet.input_names == ["sample", "timestep", "encoder_hidden_states", "added_time_ids"]
    # 2 x latent channels: noisy latents ++ position-dependent conditioning latents
    assert unet.input_shapes("opt")["sample"] == (2, 9, 8, 8, 16)
    assert specs["vae_decoder_8"].num_frames == 8 and specs["vae_decoder_1"].input_shapes()["latent"][0] == 1


def test_profiles_span_the_requested_resolutions_with_the_first_as_opt():
    unet = component_specs(DIMS)["unet"]
    assert unet.profile["latent_height"] == (8, 8, 16)
    assert unet.profile["latent_width"] == (8, 16, 32)
    enc = component_specs(DIMS)["vae_encoder"]
    assert enc.input_shapes("max")["image"] == (9, 3, 128, 256)
    assert enc.dynamic_axes()["image"] == {0: "frames", 2: "height", 3: "width"}


def test_sample_inputs_match_the_shapes_and_realistic_ranges():
    spec = component_specs(DIMS)["unet"]
    feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "min")
    assert {k: tuple(v.shape) for k, v in feeds.items()} == spec.input_shapes("min")
    assert feeds["added_time_ids"].tolist() == [[6.0, 0.0, 0.0]]
    assert feeds["timestep"].abs().max() < 1.7  # 0.25 ln sigma for sigma in 0.002..700
    spec.check_inputs(feeds)


def test_input_checks_name_the_input_and_the_range():
    spec = component_specs(DIMS)["unet"]
    feeds = spec.sample_inputs(torch.Generator().manual_seed(0))
    bad = dict(feeds, sample=torch.zeros(1, 9, 8, 8, 64))
    with pytest.raises(InvalidArgumentError, match=r"unet: input 'sample' latent_width=64 is outside .*8\.\.32"):
        spec.check_inputs(bad)
    with pytest.raises(InvalidArgumentError, match="axis 2 is 9, must be 8"):
        spec.check_inputs(dict(feeds, sample=torch.zeros(2, 9, 9, 8, 16)))
    with pytest.raises(InvalidArgumentError, match="missing input 'timestep'"):
        spec.check_inputs({k: v for k, v in feeds.items() if k != "timestep"})
    mismatch = dict(feeds, timestep=torch.zeros(1))  # batch 2 in sample, 1 here
    with pytest.raises(InvalidArgumentError, match="axis 'batch'"):
        spec.check_inputs(mismatch)


def test_specs_round_trip_through_the_manifest_json():
    for spec in component_specs(DIMS).values():
        assert ComponentSpec.from_json(spec.to_json()) == spec


def test_resolutions_must_be_multiples_of_the_vae_factor():
    with pytest.raises(InvalidArgumentError, match="multiples of 8"):
        component_specs(ModelDims(4, 32, (64, 64), 8, 9, (8, 1), resolutions=((100, 64),)))
