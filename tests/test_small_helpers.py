"""The runner-swap context manager (calibration, drift), the disk-usage helper (export, benchmarks) and the
backend adapters' tensor names (read from each runner's spec)."""
from types import SimpleNamespace

import pytest

from refocus_edge.export.runner_swap import swapped_runners
from refocus_edge.runtime.disk_usage import disk_bytes, disk_mib


def _refocuser():
    unet = SimpleNamespace(runners={"unet": "unet-fp32"})
    vae = SimpleNamespace(runners={"vae_encoder": "enc-fp32", "vae_decoder": "dec-fp32"})
    enc = SimpleNamespace(runners={"image_encoder": "clip-fp32"})
    return SimpleNamespace(unet=unet, vae=vae, image_encoder=enc)


def test_swap_replaces_then_restores():
    r = _refocuser()
    with swapped_runners(r, {"unet": "unet-int8", "vae_decoder": "dec-int8"}):
        assert r.unet.runners["unet"] == "unet-int8"
        assert r.vae.runners == {"vae_encoder": "enc-fp32", "vae_decoder": "dec-int8"}
    assert r.unet.runners["unet"] == "unet-fp32" and r.vae.runners["vae_decoder"] == "dec-fp32"


def test_swap_with_a_function_wraps_every_component_and_restores_after_an_error():
    r = _refocuser()
    with pytest.raises(RuntimeError):
        with swapped_runners(r, lambda name, runner: f"rec({runner})"):
            assert r.image_encoder.runners["image_encoder"] == "rec(clip-fp32)"
            assert r.vae.runners["vae_encoder"] == "rec(enc-fp32)"
            raise RuntimeError("sampling failed")
    assert r.image_encoder.runners["image_encoder"] == "clip-fp32"
    assert r.vae.runners["vae_encoder"] == "enc-fp32"


def test_swap_of_an_unknown_component_names_it():
    with pytest.raises(KeyError, match="text_encoder"):
        with swapped_runners(_refocuser(), {"text_encoder": "x"}):
            pass


def test_disk_bytes_counts_folders_recursively_and_overlaps_once(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.bin").write_bytes(b"1" * 100)
    (tmp_path / "a" / "b" / "y.bin").write_bytes(b"2" * 28)
    assert disk_bytes(tmp_path / "a") == 128
    assert disk_bytes(tmp_path / "a", tmp_path / "a" / "x.bin", tmp_path / "missing") == 128
    assert disk_mib(tmp_path / "a" / "b") == pytest.approx(28 / 2 ** 20)


def test_adapters_take_tensor_names_from_the_runners_specs():
    """A spec that renames its tensors is called by those names: the adapters hard-code none."""
    import torch

    from refocus_edge.runtime.backends.adapters import ImageEncoderAdapter, UNetAdapter, VaeAdapter
    from refocus_edge.runtime.backends.base import Runner
    from refocus_edge.runtime.components import ComponentSpec, TensorSpec

    def runner(name, inputs, output):
        spec = ComponentSpec(name, tuple(TensorSpec(n, ()) for n in inputs), (TensorSpec(output, ()),), {})
        return Runner(spec, lambda feeds: {output: (list(feeds), feeds)}, "fake", check_inputs=False)

    unet = UNetAdapter({}, {"unet": runner("unet", ["x", "t", "ctx", "ids"], "v")})
    names, feeds = unet(torch.zeros(2, 1), 0.5, encoder_hidden_states=torch.ones(2, 1, 3),
                        added_time_ids=torch.zeros(2, 3), return_dict=False)[0]
    assert names == ["x", "t", "ctx", "ids"] and feeds["t"].tolist() == [0.5, 0.5]
    vae = VaeAdapter({}, {"vae_encoder": runner("vae_encoder", ["pixels"], "z"),
                          "vae_decoder_2": runner("vae_decoder_2", ["z_in"], "rgb")})
    assert vae.encode(torch.zeros(1)).latent_dist.mode()[0] == ["pixels"]
    assert vae.decode(torch.zeros(2), num_frames=2).sample[0] == ["z_in"]
    enc = ImageEncoderAdapter({}, {"image_encoder": runner("image_encoder", ["clip_in"], "embeds")})
    assert enc(torch.zeros(1)).image_embeds[0] == ["clip_in"]
