"""The tiny temporal decoder (issue 21 item 1): its architecture, training (loss falls, resume
continues the same run), the LPIPS gate against the full decoder (a corrupted decoder fails and
nothing is written), the load-time checks, selection with --decoder, and its spec-driven export:
the ONNX bundle of a model loaded with the tiny decoder carries it as one 9-frame decoder graph
that matches PyTorch and runs on ONNX Runtime."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from refocus_edge.export.parity import ParityError
from refocus_edge.export.tiny_decoder.config import TinyDecoderConfig
from refocus_edge.export.tiny_decoder.data import DecoderPairs
from refocus_edge.export.tiny_decoder.trainer import TinyDecoderTrainer
from refocus_edge.runtime.errors import ModelLoadError
from refocus_edge.runtime.loading import load_refocuser
from refocus_edge.runtime.tiny_decoder import FOLDER, TinyTemporalDecoder

SMALL = dict(latent_channels=4, channels=(16, 8, 8), blocks=(1, 1, 1))  # 8x: the random VAE's factor


def _pairs(n=4, frames=9) -> DecoderPairs:
    """Latents and a learnable target: the frames a fixed random tiny decoder makes of them."""
    torch.manual_seed(1)
    teacher = TinyTemporalDecoder(**SMALL).eval()
    latents = torch.randn(n, frames, 4, 8, 8)
    with torch.no_grad():
        target = torch.stack([teacher(z).clamp(-1, 1) for z in latents])
    return DecoderPairs(latents, target.half())


def _zero_last_bytes(path: Path) -> None:
    """Change a weights file after the fact (its last 8 bytes: inside the last tensor)."""
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(8)
    path.write_bytes(bytes(data))


def _cfg(tmp_path, **kw) -> TinyDecoderConfig:
    base = dict(model="unused", iterations=40, batch=2, lr=3e-3, perceptual_weight=0.0, channels=SMALL["channels"],
                blocks=SMALL["blocks"], run_dir=tmp_path / "run", progress=False)
    return TinyDecoderConfig(**{**base, **kw})


def _trainer(tmp_path, cfg, seed=0):
    torch.manual_seed(seed)
    return TinyDecoderTrainer(TinyTemporalDecoder(**SMALL), _pairs(), cfg, tmp_path / "run" / "ckpt")


def test_shapes_and_the_temporal_mixing_reach():
    tiny = TinyTemporalDecoder(**SMALL).eval()
    assert tiny.scale_factor == 8
    with torch.no_grad():
        for mix in tiny.mixes.values():  # initialised as the identity; give it weight
            mix.mix.weight.normal_(0, 0.1)
        z = torch.randn(9, 4, 8, 8)
        out = tiny(z)
        z2 = z.clone()
        z2[4] += 1.0
        changed = (tiny(z2) - out).abs().flatten(1).amax(1)
    assert out.shape == (9, 3, 64, 64)
    # two mixing levels: frame 4 reaches frames 2..6 and no further
    assert (changed[2:7] > 0).all() and (changed[[0, 1, 7, 8]] == 0).all()


def test_training_loss_falls_and_resume_continues_the_same_run(tmp_path):
    cfg = _cfg(tmp_path)
    straight = _trainer(tmp_path / "a", cfg)
    straight.run()
    first = np.mean([v for _, v in straight.history[:5]])
    last = np.mean([v for _, v in straight.history[-5:]])
    assert last < 0.7 * first

    killed = _trainer(tmp_path / "b", cfg)
    killed.run(stop_after=17)  # a run killed after its 17th update (the checkpoint is written at the end)
    resumed = _trainer(tmp_path / "b", cfg, seed=123)  # other initial weights: all must come from the checkpoint
    assert resumed.resume() and resumed.step == 17
    resumed.run()
    assert [v for _, v in resumed.history] == pytest.approx([v for _, v in straight.history], rel=1e-5)
    for a, b in zip(resumed.ema.parameters(), straight.ema.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    other = _trainer(tmp_path / "b", replace(cfg, lr=1e-3))
    with pytest.raises(Exception, match="different settings"):
        other.resume()


@pytest.fixture(scope="module")
def model_with_tiny(random_model_dir, tmp_path_factory):
    """A copy of the random refocuser (its hash changes with a tiny decoder in it) plus a tiny decoder
    trained by the real pipeline for a handful of updates, its gate passed at a loose threshold."""
    from refocus_edge.export.tiny_decoder.pipeline import run_decoder_distillation

    root = tmp_path_factory.mktemp("tiny_model") / "model"
    shutil.copytree(random_model_dir, root)
    cfg = TinyDecoderConfig(model=root, samples=2, held_out=1, iterations=8, channels=(16, 8, 8), blocks=(1, 1, 1),
                            gate_threshold=1.0, run_dir=root.parent / "run", progress=False)
    run_decoder_distillation(cfg, log=lambda _m: None)
    return root


def test_the_pipeline_writes_a_gated_folder(model_with_tiny):
    folder = model_with_tiny / FOLDER
    record = json.loads((folder / "gate.json").read_text())
    assert record["gate"]["metric"] == "lpips_alex_median_vs_full_decoder" and record["gate"]["passed"]
    assert 0 < record["gate"]["value"] <= 1.0 and record["stats"]["frames"] == 9
    assert set(record["weights_sha256"]) == {p.name for p in folder.glob("*.safetensors")}
    assert (folder / "README.md").is_file()


def test_a_gate_that_fails_writes_nothing(model_with_tiny, tmp_path):
    """The same run (resumed from its checkpoint, so only the gate runs) against a threshold it cannot
    meet: a ParityError naming the metric, and no folder."""
    from refocus_edge.export.tiny_decoder.pipeline import run_decoder_distillation

    cfg = TinyDecoderConfig(model=model_with_tiny, out=tmp_path / "td", samples=2, held_out=1, iterations=8,
                            channels=(16, 8, 8), blocks=(1, 1, 1), gate_threshold=1e-6,
                            run_dir=model_with_tiny.parent / "run", progress=False)
    with pytest.raises(ParityError, match="lpips_alex_median_vs_full_decoder .* nothing was written"):
        run_decoder_distillation(cfg, log=lambda _m: None)
    assert not (tmp_path / "td").exists()


def test_a_corrupted_decoder_fails_the_gate():
    """The gate itself: a decoder whose weights were scrambled is far from the frames it was gated on."""
    from refocus_edge.export.tiny_decoder.gate import decoder_gate

    pairs = _pairs(n=2)
    torch.manual_seed(1)
    good = TinyTemporalDecoder(**SMALL)  # the decoder that made the frames
    ok, _ = decoder_gate(good, pairs.latents, pairs.frames, 0.03)
    assert ok.passed and ok.value < 1e-3
    with torch.no_grad():
        for p in good.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    bad, stats = decoder_gate(good, pairs.latents, pairs.frames, 0.03)
    assert not bad.passed and stats["worst"] >= bad.value > 0.03
    with pytest.raises(ParityError):
        bad.enforce()


def test_selection_and_load_time_checks(model_with_tiny, random_model_dir, tmp_path):
    full = load_refocuser(model_with_tiny)
    tiny = load_refocuser(model_with_tiny, decoder="tiny")
    assert full.config.decode_chunk_sizes == (8, 1) and tiny.config.decode_chunk_sizes == (9,)
    assert tiny.config.extra["decoder"] == "tiny" and type(tiny.vae).__name__ == "TinyDecoderVAE"
    assert type(load_refocuser(model_with_tiny, decoder="auto").vae).__name__ == "TinyDecoderVAE"

    # a model without one: auto falls back visibly, tiny names the command that makes one
    auto = load_refocuser(random_model_dir, decoder="auto")
    assert auto.config.decode_chunk_sizes == (8, 1) and any("full decoder" in n for n in auto.notes)
    with pytest.raises(ModelLoadError, match="no tiny decoder .*refocus distill-decoder"):
        load_refocuser(random_model_dir, decoder="tiny")

    # weights changed after the gate: refused, and auto does not take them
    copy = tmp_path / "model"
    shutil.copytree(model_with_tiny, copy)
    _zero_last_bytes(next((copy / FOLDER).glob("*.safetensors")))
    with pytest.raises(ModelLoadError, match="changed since it passed its gate"):
        load_refocuser(copy, decoder="tiny")
    assert load_refocuser(copy, decoder="auto").config.decode_chunk_sizes == (8, 1)


def test_sampling_with_the_tiny_decoder(model_with_tiny):
    from refocus_edge.runtime.sampler import sample_focal_stack
    from refocus_edge.runtime.sampler_config import SamplerConfig

    image = torch.rand(1, 3, 64, 64) * 2 - 1
    cfg = SamplerConfig(position=2, seed=3, progress=False)
    a = sample_focal_stack(load_refocuser(model_with_tiny), image, cfg).frames
    b = sample_focal_stack(load_refocuser(model_with_tiny, decoder="tiny"), image, cfg).frames
    assert a.shape == b.shape == (9, 3, 64, 64) and 0 <= float(b.min()) and float(b.max()) <= 1
    assert not torch.equal(a, b)


def test_spec_driven_export_carries_the_tiny_decoder(model_with_tiny, tmp_path, one_thread):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")
    from refocus_edge.export.targets.target_onnx import OnnxExportConfig, export_onnx
    from refocus_edge.runtime.bundle import read_bundle
    from refocus_edge.runtime.sampler import sample_focal_stack
    from refocus_edge.runtime.sampler_config import SamplerConfig

    out = tmp_path / "bundle"
    export_onnx(OnnxExportConfig(model=model_with_tiny, out=out, decoder="tiny"), log=lambda _m: None)
    bundle = read_bundle(out)
    assert sorted(n for n in bundle.specs if n.startswith("vae_decoder")) == ["vae_decoder_9"]
    assert bundle.source["decoder"] == "tiny" and bundle.manifest.sampler["decode_chunk_sizes"] == [9]
    assert bundle.manifest.gate_passed("onnx", "fp32", "vae_decoder_9")  # its parity gate, like any component

    image = torch.rand(1, 3, 64, 64) * 2 - 1
    cfg = SamplerConfig(position=2, seed=3, progress=False)
    ref = sample_focal_stack(load_refocuser(model_with_tiny, decoder="tiny"), image, cfg).frames
    got = sample_focal_stack(load_refocuser(out, backend="onnxruntime"), image, cfg).frames
    assert float((got - ref).abs().max()) < 1e-4
    # the torch backend runs the bundle's components from the source model, with the same decoder
    torch_run = sample_focal_stack(load_refocuser(out, backend="torch"), image, cfg).frames
    assert float((torch_run - ref).abs().max()) < 1e-5
    with pytest.raises(ModelLoadError, match="exported with the tiny decoder"):
        load_refocuser(out, decoder="full")


def test_the_default_model_ships_a_gated_tiny_decoder():
    """The shipped default carries its tiny decoder with a passed gate at the issue's bar, unchanged
    weights and its own VAE; `--decoder tiny` takes it."""
    from refocus_edge.runtime.tiny_decoder import GATE_FILE, tiny_decoder_problem
    from refocus_edge.runtime.zoo import DEFAULT_MODEL, resolve_model

    root = resolve_model(DEFAULT_MODEL)
    assert tiny_decoder_problem(root) is None
    record = json.loads((root / FOLDER / GATE_FILE).read_text())
    assert record["gate"]["passed"] and record["gate"]["value"] <= 0.03 and record["gate"]["threshold"] == 0.03
    refocuser = load_refocuser(DEFAULT_MODEL, decoder="tiny")
    assert refocuser.config.decode_chunk_sizes == (9,) and refocuser.vae.tiny.scale_factor == refocuser.vae_scale_factor
    assert not refocuser.vae.takes_guide


def test_a_new_unet_needs_the_gate_again(model_with_tiny, tmp_path):
    """The gate was measured on the model's own samples: after the UNet changes, `tiny` is refused with
    the command to run and `auto` falls back to the full decoder."""
    copy = tmp_path / "model"
    shutil.copytree(model_with_tiny, copy)
    _zero_last_bytes(next((copy / "unet").glob("*.safetensors")))
    with pytest.raises(ModelLoadError, match="another UNet's samples.*distill-decoder"):
        load_refocuser(copy, decoder="tiny")
    assert load_refocuser(copy, decoder="auto").config.decode_chunk_sizes == (8, 1)
