"""`refocus export coreml` end to end on a tiny random refocuser: conversion of every
component, chunked UNet, compressed variant, manifest, gates, and nothing written on failure."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'refocus-edge[coreml]')")

from refocus_edge.export.targets.target_coreml import CoreMLExportConfig, export_coreml  # noqa: E402
from refocus_edge.export.coreml.recipes import CoreMLRecipe  # noqa: E402
from refocus_edge.export.parity import ParityError  # noqa: E402
from refocus_edge.runtime.bundle import read_bundle  # noqa: E402

COMPONENTS = {"image_encoder", "vae_encoder", "unet", "vae_decoder_8", "vae_decoder_1"}


@pytest.fixture(scope="module")
def coreml_bundle(random_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml") / "bundle"
    # A 0.05 MB limit splits the tiny UNet (about 0.5 MB in fp16) into chunks, as 1 GB splits the real one.
    cfg = CoreMLExportConfig(model=random_model_dir, out=out,
                             recipes=(CoreMLRecipe("fp16"), CoreMLRecipe("fp16", "p6")),
                             max_package_mb=0.05, gate_steps=2)
    lines = []
    report = export_coreml(cfg, log=lines.append)
    return out, report, lines


def test_every_component_has_a_checked_package_per_recipe(coreml_bundle):
    out, report, _ = coreml_bundle
    bundle = read_bundle(out)
    assert set(bundle.precisions("coreml")) == {"fp16", "fp16-p6"}
    for recipe in ("fp16", "fp16-p6"):
        table = bundle.manifest.table("coreml", recipe)
        assert set(table) == COMPONENTS
        for name in COMPONENTS:
            entry = bundle.manifest.coreml[recipe][name]
            for package in entry["packages"]:
                assert (out / package["path"] / "Manifest.json").is_file()
                assert package["max_rank"] <= 5 and package["opset"] == "CoreML7"
            assert bundle.gate_passed("coreml", recipe, name)
            bundle.artifact_path("coreml", recipe, name)  # checksums verify
        assert bundle.manifest.gate_table("coreml", recipe)["end_to_end"]["passed"]
    # The random model is guided (guidance 1.5): its UNet package takes both branches at once.
    unet = bundle.manifest.coreml["fp16"]["unet"]
    assert unet["inputs"]["sample"][0] == 2
    assert {g["metric"] for g in bundle.manifest.gate_table("coreml-rewrite", "fp32").values()} == {"rewrite_max_rel_error"}


def test_fp16_unet_is_chunked_with_its_interface_in_the_manifest(coreml_bundle):
    out, _, _ = coreml_bundle
    manifest = json.loads((out / "manifest.json").read_text())
    packages = manifest["coreml"]["fp16"]["unet"]["packages"]
    assert len(packages) >= 2
    assert list(packages[0]["inputs"]) == ["sample", "timestep", "encoder_hidden_states", "added_time_ids"]
    assert list(packages[-1]["outputs"]) == ["out_sample"]
    produced = set(packages[0]["inputs"])
    for package in packages:
        assert set(package["inputs"]) <= produced  # each chunk reads only what exists by then
        produced |= set(package["outputs"])
    # Compressed to 6 bits the UNet is not split: the limit applies above 6 bits only.
    assert len(manifest["coreml"]["fp16-p6"]["unet"]["packages"]) == 1
    assert manifest["coreml"]["fp16-p6"]["unet"]["packages"][0]["compressed_weight_ops"] > 0
    assert manifest["coreml"]["fp16"]["unet"]["packages"][0]["compressed_weight_ops"] == 0


def test_sampler_settings_for_apps_are_in_the_manifest(coreml_bundle, random_refocuser):
    out, _, _ = coreml_bundle
    sampler = json.loads((out / "manifest.json").read_text())["sampler"]
    assert sampler["prediction_type"] == "v_prediction"
    assert sampler["sigmas"][-1] == 0.0 and len(sampler["sigmas"]) == random_refocuser.config.num_inference_steps + 1
    assert sampler["init_noise_sigma"] > sampler["sigmas"][0]
    assert sampler["vae_scaling_factor"] == pytest.approx(random_refocuser.vae.config.scaling_factor)


def test_the_log_reports_each_package_and_the_end_to_end_check(coreml_bundle):
    _, report, lines = coreml_bundle
    text = "\n".join(lines)
    assert "rewrite    unet" in text and "end to end" in text and "PyTorch emulation" in text
    assert {r["recipe"] for r in report.rows} == {"fp16", "fp16-p6"}
    assert any("chunk" in r["component"] for r in report.rows)


def test_a_rewrite_that_differs_fails_the_export_and_writes_nothing(random_model_dir, tmp_path, monkeypatch):
    import refocus_edge.export.coreml.packages as ex

    original = ex.rewrite_modules

    def broken(refocuser, specs):
        modules = original(refocuser, specs)
        bias = modules["unet"].conv_out.bias  # shared with the diffusers UNet: replace, do not edit
        modules["unet"].conv_out.bias = torch.nn.Parameter(bias.detach() + 0.5)  # no longer equals the UNet
        return modules

    monkeypatch.setattr(ex, "rewrite_modules", broken)
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match=r"parity gate failed for unet \(coreml-rewrite fp32\): rewrite_max_rel_error"):
        export_coreml(CoreMLExportConfig(model=random_model_dir, out=out, gate_steps=1), log=lambda m: None)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_converts_every_component_of_the_shipped_default_model(tmp_path):
    from refocus_edge.cli.main import main
    from refocus_edge.runtime.zoo import DEFAULT_MODEL

    out = tmp_path / "cli-bundle"
    assert main(["export", "coreml", "--out", str(out), "--gate-steps", "1"]) == 0
    bundle = read_bundle(out)
    assert bundle.source["model"] == DEFAULT_MODEL and bundle.precisions("coreml") == ["fp16"]
    for name in COMPONENTS:
        (package,) = bundle.manifest.coreml["fp16"][name]["packages"]  # 10 MB: no chunks
        assert (out / package["path"]).is_dir() and package["opset"] == "CoreML7"
    assert main(["export", "coreml", "--out", str(out)]) != 0  # exists, and no --force
