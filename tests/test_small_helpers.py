"""The runner-swap context manager (calibration, drift) and the disk-usage helper (export, benchmarks)."""
from types import SimpleNamespace

import pytest

from refocus_edge.quantization.runner_swap import swapped_runners
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
