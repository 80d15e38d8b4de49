"""The photo-guided decoder (issue 23): the tiny decoder's architecture plus the input photo and each
frame's focus offset, trained toward the true frames. Its architecture (the photo reaches the
output; it refuses to run without its guide), its training toward the truth (the loss falls), its
gate against the full decoder's distance to the truth (a corrupted decoder fails), the sampler
handing it the photo and the position, selection (the default of a model folder that has a gated
one; the full decoder in reference mode; refused once its weights change), and its spec-driven
ONNX export, which the thin runtime runs like PyTorch."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from refocus_edge.export.parity import ParityError
from refocus_edge.export.tiny_decoder.config import TinyDecoderConfig
from refocus_edge.export.tiny_decoder.data import DecoderPairs
from refocus_edge.export.tiny_decoder.trainer import TinyDecoderTrainer, guide_offsets
from refocus_edge.runtime.errors import ModelLoadError
from refocus_edge.runtime.loading import load_refocuser
from refocus_edge.runtime.sampler import sample_focal_stack
from refocus_edge.runtime.sampler_config import SamplerConfig
from refocus_edge.runtime.tiny_decoder import GUIDED_FOLDER, TinyTemporalDecoder

SMALL = dict(latent_channels=4, channels=(16, 8, 8), blocks=(1, 1, 1))


def _truth_pairs(n=4, frames=9) -> DecoderPairs:
    """Latents, 'true' frames a fixed random decoder makes of them, and input positions."""
    torch.manual_seed(1)
    maker = TinyTemporalDecoder(**SMALL).eval()
    latents = torch.randn(n, frames, 4, 8, 8)
    with torch.no_grad():
        truth = torch.stack([maker(z).clamp(-1, 1) for z in latents])
    return DecoderPairs(latents, truth.half(), torch.tensor([0, 4, 8, 2][:n]))


def test_the_photo_reaches_every_frame_and_the_guide_is_required():
    guided = TinyTemporalDecoder(**SMALL, guided=True).eval()
    z, photo = torch.randn(9, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    offsets = guide_offsets(4, 9, "cpu")
    with torch.no_grad():
        out = guided(z, photo, offsets)
        other = guided(z, -photo, offsets)
        assert out.shape == (9, 3, 64, 64)
        assert (out - other).abs().flatten(1).amax(1).min() > 0  # through the blend, in every frame
        guided.guide.keep_logits.bias.fill_(50.0)  # keep = 1: the frames are the photo
        torch.testing.assert_close(guided(z, photo, offsets), photo.expand(9, -1, -1, -1))
    with pytest.raises(ValueError, match="input photo"):
        guided(z)
    with pytest.raises(ValueError, match="shuffle 2"):
        TinyTemporalDecoder(**{**SMALL, "channels": (16, 8)}, shuffle=4, guided=True)


def test_the_photo_blur_bank_mixes_in_the_photo_blurred():
    """photo_blurs: with the whole share on one sigma (and nothing of the photo kept) every frame is the
    photo under that Gaussian (an independent Gaussian, the interior away from the borders); its
    weights start at zero, so it begins near the decoder it extends; refused without the guide."""
    from refocus_edge.dof.focus_measure import gaussian_blur

    z, photo = torch.randn(9, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    offsets = guide_offsets(2, 9, "cpu")
    torch.manual_seed(0)
    plain = TinyTemporalDecoder(**SMALL, guided=True).eval()
    bank = TinyTemporalDecoder(**SMALL, guided=True, photo_blurs=(1.0, 2.5)).eval()
    missing, unexpected = bank.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["guide.blurs.logits.bias", "guide.blurs.logits.weight"]
    with torch.no_grad():
        before, after = plain(z, photo, offsets), bank(z, photo, offsets)
        # a 0.05 share of the (not kept) output moves toward the blurred photo: at most 5 % of their gap
        gap = float(photo.abs().mean() + before.abs().mean())
        assert 0 < float((before - after).abs().mean()) < 0.05 * gap
        bias = bank.guide.blurs.logits.bias.view(3, 4)  # [share, sigma 1.0, sigma 2.5] x the 2x2 sub-pixels
        bias[0], bias[1], bias[2] = 50.0, -50.0, 50.0  # all of it, on sigma 2.5
        bank.guide.keep_logits.bias.fill_(-50.0)  # none of the photo itself
        out = bank(z, photo, offsets)
    want = gaussian_blur(photo[0], 2.5)
    torch.testing.assert_close(out[:, :, 10:-10, 10:-10], want[None, :, 10:-10, 10:-10].expand(9, -1, -1, -1),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="only a guided decoder"):
        TinyTemporalDecoder(**SMALL, photo_blurs=(1.0,))
    with pytest.raises(ValueError, match="positive sigmas"):
        TinyTemporalDecoder(**SMALL, guided=True, photo_blurs=(0.0,))


def test_the_bank_s_unsharp_masks_sharpen_past_the_photo():
    """photo_sharpen: with the whole share on an unsharp entry every frame is 2 * photo - G(sigma) *
    photo (the interior), sharper than the photo; a sigma shared with a blur is blurred once; refused
    without photo_blurs or with a sigma <= 0."""
    from refocus_edge.dof.focus_measure import gaussian_blur

    z, photo = torch.randn(9, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    offsets = guide_offsets(2, 9, "cpu")
    torch.manual_seed(0)
    bank = TinyTemporalDecoder(**SMALL, guided=True, photo_blurs=(1.0, 2.5), photo_sharpen=(1.0,)).eval()
    assert len(bank.guide.blurs.radii) == 2  # sigma 1.0 serves both its blur and its unsharp mask
    with torch.no_grad():
        bias = bank.guide.blurs.logits.bias.view(4, 4)  # [share, blur 1.0, blur 2.5, unsharp 1.0] x sub-pixels
        bias[0], bias[1], bias[2], bias[3] = 50.0, -50.0, -50.0, 50.0
        bank.guide.keep_logits.bias.fill_(-50.0)
        out = bank(z, photo, offsets)
    want = 2 * photo[0] - gaussian_blur(photo[0], 1.0)
    inner = (slice(None), slice(None), slice(10, -10), slice(10, -10))
    torch.testing.assert_close(out[inner], want[None].expand(9, -1, -1, -1)[inner], atol=1e-5, rtol=0)
    detail = lambda x: (x - gaussian_blur(x.reshape(-1, 64, 64), 1.0).reshape(x.shape))[inner].abs().mean()
    assert detail(out) > 1.5 * detail(photo.expand(9, -1, -1, -1))
    with pytest.raises(ValueError, match="give photo_blurs too"):
        TinyTemporalDecoder(**SMALL, guided=True, photo_sharpen=(1.0,))
    with pytest.raises(ValueError, match="photo_sharpen must be positive"):
        TinyTemporalDecoder(**SMALL, guided=True, photo_blurs=(1.0,), photo_sharpen=(-1.0,))


def test_the_lens_stack_is_mixed_in_and_keeps_the_photo_at_its_own_position():
    """lens_head: the thin-lens stack (runtime/lens_stack.py) joins the output at lens_mix; at the
    photo's own position the lens frame is the photo, so that frame moves toward the photo only."""
    torch.manual_seed(0)
    plain = TinyTemporalDecoder(**SMALL, guided=True).eval()
    lens = TinyTemporalDecoder(**SMALL, guided=True, lens_head=(8, 8, 8, 8), lens_mix=0.5).eval()
    lens.load_state_dict(plain.state_dict(), strict=False)
    z, photo = torch.randn(9, 4, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1
    offsets = guide_offsets(3, 9, "cpu")
    with torch.no_grad():
        a, b, stack = plain(z, photo, offsets), lens(z, photo, offsets), lens.lens(photo, offsets)
    torch.testing.assert_close(b, 0.5 * stack + 0.5 * a)
    torch.testing.assert_close(stack[3], photo[0], atol=1e-5, rtol=0)
    assert not torch.allclose(stack[0], photo[0], atol=1e-3)  # other frames: re-blurred or sharpened
    with pytest.raises(ValueError, match="all 9 frames in one chunk"):
        lens(z[:8], photo, offsets[:8])
    with pytest.raises(ValueError, match="only a guided decoder"):
        TinyTemporalDecoder(**SMALL, lens_head=(8, 8, 8, 8), lens_mix=0.5)
    with pytest.raises(ValueError, match="lens_mix must be in"):
        TinyTemporalDecoder(**SMALL, guided=True, lens_head=(8, 8, 8, 8), lens_mix=0.0)


def test_a_decoder_without_the_bank_starts_one_with_it(tmp_path):
    """--init from a guided decoder without photo_blurs loads all its weights (the bank starts new);
    any other difference of architecture is refused by name."""
    from refocus_edge.export.tiny_decoder.pipeline import _start_from
    from refocus_edge.runtime.errors import InvalidArgumentError

    plain = TinyTemporalDecoder(**SMALL, guided=True)
    plain.save_pretrained(tmp_path / "plain")
    bank = TinyTemporalDecoder(**SMALL, guided=True, photo_blurs=(1.0, 2.5))
    assert "re-blur bank new" in _start_from(bank, tmp_path / "plain", lambda _m: None)
    torch.testing.assert_close(bank.guide.keep_logits.weight, plain.guide.keep_logits.weight)
    sharpening = TinyTemporalDecoder(**SMALL, guided=True, photo_blurs=(1.0,), photo_sharpen=(2.0,))
    assert "re-blur bank new" in _start_from(sharpening, tmp_path / "plain", lambda _m: None)
    bank.save_pretrained(tmp_path / "bank")  # a bank decoder does not silently start a different bank
    with pytest.raises(InvalidArgumentError, match="another architecture .*photo_sharpen"):
        _start_from(sharpening, tmp_path / "bank", lambda _m: None)
    wider = TinyTemporalDecoder(**{**SMALL, "channels": (16, 16, 8)}, guided=True, photo_blurs=(1.0,))
    with pytest.raises(InvalidArgumentError, match="another architecture .*channels"):
        _start_from(wider, tmp_path / "plain", lambda _m: None)


def test_photo_blurs_need_the_guided_decoder(capsys):
    from refocus_edge.cli.main import main

    assert main(["distill-decoder", "--model", "unused", "--photo-blurs", "1.0"]) == 2
    err = capsys.readouterr().err
    assert "--photo-blurs re-blur the input photo" in err and "add --guided" in err
    assert main(["distill-decoder", "--model", "unused", "--guided", "--photo-blurs", "0"]) == 2
    assert "--photo-blurs and --photo-sharpen > 0" in capsys.readouterr().err
    assert main(["distill-decoder", "--model", "unused", "--guided", "--photo-sharpen", "1.0"]) == 2
    assert "give --photo-blurs too" in capsys.readouterr().err


def test_training_toward_the_truth_lowers_the_loss(tmp_path):
    cfg = TinyDecoderConfig(model="unused", iterations=40, batch=2, lr=3e-3, perceptual_weight=0.0,
                            channels=SMALL["channels"], blocks=SMALL["blocks"], run_dir=tmp_path, progress=False,
                            guided=True)
    torch.manual_seed(0)
    trainer = TinyDecoderTrainer(TinyTemporalDecoder(**SMALL, guided=True), _truth_pairs(), cfg, tmp_path / "ckpt")
    trainer.run()
    first = np.mean([v for _, v in trainer.history[:5]])
    last = np.mean([v for _, v in trainer.history[-5:]])
    assert last < 0.7 * first
    assert cfg.training_facts()["guided"] is True  # a resumed tiny-decoder run cannot continue it


def test_the_focus_map_term_counts_where_sharpness_differs(tmp_path):
    """--focus-weight adds the L1 of log focus maps: zero for frames equal to the target, positive
    for another sharpness pattern, added to the loss, and part of the run's settings."""
    from dataclasses import replace

    from refocus_edge.export.distillation.ground_truth import log_focus_maps

    cfg = TinyDecoderConfig(model="unused", iterations=3, batch=1, perceptual_weight=0.0, channels=SMALL["channels"],
                            blocks=SMALL["blocks"], run_dir=tmp_path, progress=False, guided=True, focus_weight=0.5)
    assert cfg.training_facts()["focus_weight"] == 0.5
    target = _truth_pairs(n=1).frames[0].float()
    blurred = torch.nn.functional.avg_pool2d(target, 3, 1, 1)
    assert float((log_focus_maps(target) - log_focus_maps(target)).abs().mean()) == 0
    assert float((log_focus_maps(blurred) - log_focus_maps(target)).abs().mean()) > 0.1

    torch.manual_seed(0)
    model = TinyTemporalDecoder(**SMALL, guided=True)
    losses = []
    for c in (cfg, replace(cfg, focus_weight=0.0)):
        trainer = TinyDecoderTrainer(model, _truth_pairs(n=1), c, tmp_path / "ckpt")
        losses.append(float(trainer.loss()))  # the same stack (one pair), the same weights
    assert losses[0] > losses[1] > 0


def test_the_focus_curve_term_scores_only_where_each_pixel_is_sharpest(tmp_path):
    """--curve-weight: zero for the target's own frames and for the target brightened (same curves,
    other levels, which the focus-map L1 does charge), positive for the photo copied into every frame
    (flat curves against the truth's peaks), added to the loss, and part of the run's settings."""
    from dataclasses import replace

    from refocus_edge.export.distillation.ground_truth import focus_curve_loss, log_focus_maps

    cfg = TinyDecoderConfig(model="unused", iterations=3, batch=1, perceptual_weight=0.0, channels=SMALL["channels"],
                            blocks=SMALL["blocks"], run_dir=tmp_path, progress=False, guided=True, curve_weight=0.5)
    assert cfg.training_facts()["curve_weight"] == 0.5 and "curve_weight" not in replace(cfg, curve_weight=0.0).training_facts()
    pairs = _truth_pairs(n=1)
    target = pairs.frames[0].float()
    frames = target.shape[0]
    assert float(focus_curve_loss(target, target, frames)) < 1e-6
    contrast = target * 2  # every frame's energy x4: log maps shift by log 4, curves do not change
    assert float(focus_curve_loss(contrast, target, frames)) < 1e-2
    assert float((log_focus_maps(contrast) - log_focus_maps(target)).abs().mean()) > 0.5
    k = int(pairs.positions[0])
    copied = target[k:k + 1].expand_as(target)
    assert float(focus_curve_loss(copied, target, frames)) > 0.05

    torch.manual_seed(0)
    model = TinyTemporalDecoder(**SMALL, guided=True)
    losses = []
    for c in (cfg, replace(cfg, curve_weight=0.0)):
        trainer = TinyDecoderTrainer(model, _truth_pairs(n=1), c, tmp_path / "ckpt")
        losses.append(float(trainer.loss()))
    assert losses[0] > losses[1] > 0


def test_larger_training_sizes_are_cut_to_aligned_working_size_crops(tmp_path):
    """--sizes: a share --size-mix of the draws comes from the larger stacks, as crops of the working
    size whose frames sit exactly over their latents (checked with frames made from the latents by an
    8x nearest upsampling), transposed half the time; the loss runs on them."""
    from dataclasses import replace

    main = _truth_pairs(n=2)
    big = torch.randn(3, 9, 4, 16, 24)
    frames = torch.nn.functional.interpolate(big[:, :, :3].flatten(0, 1), scale_factor=8).view(3, 9, 3, 128, 192)
    extra = DecoderPairs(big, frames.half(), torch.tensor([1, 5, 7]))
    cfg = TinyDecoderConfig(model="unused", iterations=3, batch=2, perceptual_weight=0.0, channels=SMALL["channels"],
                            blocks=SMALL["blocks"], run_dir=tmp_path, progress=False, guided=True,
                            sizes=((192, 128),), size_mix=1.0)
    assert cfg.training_facts()["sizes"] == [[192, 128]]
    trainer = TinyDecoderTrainer(TinyTemporalDecoder(**SMALL, guided=True), main, cfg, tmp_path / "ckpt",
                                 extra=(extra,))
    offsets = set()
    for _ in range(12):
        z, target, k = trainer.draw()
        assert z.shape == (9, 4, 8, 8) and target.shape == (9, 3, 64, 64) and k in (1, 5, 7)
        up = torch.nn.functional.interpolate(z[:, :3], scale_factor=8)
        torch.testing.assert_close(target, up.half().float())  # the crop of the frames is the latents' crop
        offsets.add(float(z[0, 0, 0, 0]))
    assert len(offsets) > 3  # different stacks and places
    assert torch.isfinite(trainer.loss())
    main_only = TinyDecoderTrainer(TinyTemporalDecoder(**SMALL, guided=True), main, replace(cfg, size_mix=0.0),
                                   tmp_path / "ckpt2", extra=(extra,))
    assert all(main_only.draw()[2] in (0, 4) for _ in range(8))  # the working-size pairs' positions only


def test_the_gate_compares_with_the_full_decoder_on_the_truth():
    from refocus_edge.export.tiny_decoder.gate import guided_gate

    pairs = _truth_pairs(n=2)
    truth = pairs.frames.float()
    torch.manual_seed(2)
    guided = TinyTemporalDecoder(**SMALL, guided=True)
    # a full decoder that is exactly right: no guided decoder can beat it, an untrained one fails
    bad, stats = guided_gate(guided, pairs.latents, truth, truth, pairs.positions[:2], 0.0)
    assert not bad.passed and bad.value == pytest.approx(stats["guided_median"]) and stats["full_median"] == 0
    with pytest.raises(ParityError, match="lpips_alex_median_vs_truth_minus_full_decoder"):
        bad.enforce()
    # against a full decoder that returns grey, copying the photo (keep = 1) is closer to the truth
    with torch.no_grad():
        guided.guide.keep_logits.bias.fill_(50.0)
    ok, stats = guided_gate(guided, pairs.latents, torch.zeros_like(truth), truth, pairs.positions[:2], 0.0)
    assert ok.passed and stats["guided_median"] == pytest.approx(stats["identity_median"], abs=1e-6)


@pytest.fixture(scope="module")
def model_with_guided(random_model_dir, tmp_path_factory):
    """A copy of the random refocuser with a tiny decoder and a guided one started from it, both
    written by the real pipeline for a handful of updates and gated at loose thresholds."""
    from refocus_edge.export.tiny_decoder.pipeline import run_decoder_distillation

    root = tmp_path_factory.mktemp("guided_model") / "model"
    shutil.copytree(random_model_dir, root)
    common = dict(model=root, samples=2, held_out=1, iterations=6, channels=(16, 8, 8), blocks=(1, 1, 1),
                  progress=False)
    run_decoder_distillation(TinyDecoderConfig(**common, gate_threshold=1.0, run_dir=root.parent / "run-t"),
                             log=lambda _m: None)
    logs = []
    # with a re-blur bank and then a lens stack (attached with no updates), so the exports below carry both
    banked = root.parent / "banked"
    run_decoder_distillation(TinyDecoderConfig(**common, gate_threshold=1.0, guided=True, photo_blurs=(1.0, 2.5),
                                               photo_sharpen=(2.0,), run_dir=root.parent / "run-g", out=banked),
                             log=logs.append)
    assert any("starts from" in m for m in logs)  # from the model's gated tiny decoder
    head = _tiny_head(root.parent)
    run_decoder_distillation(TinyDecoderConfig(**{**common, "iterations": 0}, gate_threshold=1.0, guided=True,
                                               photo_blurs=(1.0, 2.5), photo_sharpen=(2.0,), init=banked,
                                               lens_head=head, lens_mix=0.5, run_dir=root.parent / "run-l"),
                             log=logs.append)
    assert any("lens stack new" in m for m in logs) and any("no updates" in m for m in logs)
    return root


def _tiny_head(folder: Path, channels=(8, 8, 8, 8), name="head.pt") -> Path:
    """A small focus-depth head's weights and facts, as `python -m training.depth_head` writes them."""
    from refocus_edge.runtime.lens_stack import FocusDepthHead

    torch.manual_seed(5)
    head = FocusDepthHead(9, channels)
    path = folder / name
    torch.save(head.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"positions": 9, "channels": list(channels)}))
    return path


def test_another_head_replaces_the_lens_stack_of_the_decoder_it_starts_from(model_with_guided, tmp_path):
    from refocus_edge.export.tiny_decoder.pipeline import run_decoder_distillation

    start = model_with_guided / GUIDED_FOLDER
    head = _tiny_head(tmp_path, channels=(8, 8, 8, 8, 8), name="deeper.pt")
    logs = []
    out = run_decoder_distillation(TinyDecoderConfig(
        model=model_with_guided, samples=2, held_out=1, iterations=0, channels=(16, 8, 8), blocks=(1, 1, 1),
        progress=False, gate_threshold=1.0, guided=True, photo_blurs=(1.0, 2.5), photo_sharpen=(2.0,), init=start,
        lens_head=head, lens_mix=0.75, run_dir=tmp_path / "run", out=tmp_path / "replaced"), log=logs.append)
    assert any("lens stack replaced" in m for m in logs)
    before = TinyTemporalDecoder.from_pretrained(start, use_safetensors=True).state_dict()
    after = TinyTemporalDecoder.from_pretrained(out, use_safetensors=True)
    assert list(after.config["lens_head"]) == [8, 8, 8, 8, 8] and after.config["lens_mix"] == 0.75
    torch.testing.assert_close(after.lens.head.state_dict(), torch.load(head, weights_only=True), rtol=0, atol=0)
    kept = {k: v for k, v in after.state_dict().items() if not k.startswith("lens.")}
    assert kept and all(torch.equal(v, before[k]) for k, v in kept.items())  # all else: the start's weights
    readme = (out / "README.md").read_text()
    # the lineage stays flat: the new head, then the decoder the first lens stack was attached to
    assert "but its lens stack" in readme and "deeper.pt" in readme
    assert readme.count("## The decoder it started from") == 1 and "banked" not in readme.split("## The decoder")[0]
    assert "true frames" in readme.split("## The decoder it started from")[1]


def test_the_pipeline_writes_a_gated_guided_folder(model_with_guided):
    folder = model_with_guided / GUIDED_FOLDER
    record = json.loads((folder / "gate.json").read_text())
    assert record["gate"]["metric"] == "lpips_alex_median_vs_truth_minus_full_decoder" and record["gate"]["passed"]
    assert {"guided_median", "full_median", "identity_median"} <= set(record["stats"])
    assert record["training"]["guided"] and "banked" in record["training"]["init"]
    assert record["training"]["updates"] == 0 and "lens stack" in record["training"]["init"]
    assert record["training"]["lens_head"]["sha256"] and record["training"]["lens_mix"] == 0.5
    config = json.loads((folder / "config.json").read_text())
    assert config["guided"] is True and config["photo_blurs"] == [1.0, 2.5] and config["photo_sharpen"] == [2.0]
    assert config["lens_head"] == [8, 8, 8, 8] and config["lens_mix"] == 0.5
    assert record["training"]["photo_blurs"] == [1.0, 2.5] and record["training"]["photo_sharpen"] == [2.0]
    # the head's weights went in unchanged (frozen)
    head = torch.load(folder.parent.parent / "head.pt", weights_only=True)
    decoder = TinyTemporalDecoder.from_pretrained(folder, use_safetensors=True)
    torch.testing.assert_close(decoder.lens.head.state_dict(), head, rtol=0, atol=0)
    readme = (folder / "README.md").read_text()
    assert "No updates" in readme and "focus-depth head" in readme and "mixed into the" in readme
    assert "## The decoder it started from" in readme and "true frames" in readme  # the banked decoder's own README


def test_selection_the_sampler_hands_it_the_photo(model_with_guided, tmp_path):
    from refocus_edge.runtime.run_model import load_run_model

    # `refocus run` (fast mode) takes it by default; the reference sampler decodes with the model's own
    # VAE decoder, and so does a library load that does not ask (trainers, exporters, benchmarks)
    default = load_run_model(model_with_guided, None, "fast", None, None, False).refocuser
    assert default.config.decoder == "guided" and default.vae.takes_guide
    assert load_run_model(model_with_guided, None, "reference", None, None, False).refocuser.config.decoder == "full"
    assert load_refocuser(model_with_guided).config.decoder == "full"
    assert load_refocuser(model_with_guided, decoder="auto").config.decoder == "guided"
    assert load_refocuser(model_with_guided, decoder="tiny").config.decoder == "tiny"

    image = torch.rand(1, 3, 64, 64) * 2 - 1
    cfg = SamplerConfig(position=2, seed=3, progress=False)
    seen = []
    real = default.vae.tiny.forward
    default.vae.tiny.forward = lambda z, photo=None, offsets=None: seen.append((photo, offsets)) or real(z, photo, offsets)
    frames = sample_focal_stack(default, image, cfg).frames
    assert frames.shape == (9, 3, 64, 64) and len(seen) == 1
    torch.testing.assert_close(seen[0][0], image)
    torch.testing.assert_close(seen[0][1], torch.arange(-2, 7).float() / 8)

    # changed weights: refused by name, and the default quietly falls back to the full decoder
    copy = tmp_path / "model"
    shutil.copytree(model_with_guided, copy)
    weights = next((copy / GUIDED_FOLDER).glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="changed since it passed its gate.*--guided"):
        load_refocuser(copy, decoder="guided")
    assert load_run_model(copy, None, "fast", None, None, False).refocuser.config.decoder == "full"
    assert load_refocuser(copy, decoder="auto").config.decoder == "tiny"


def test_the_onnx_bundle_carries_the_guided_decoder(model_with_guided, tmp_path, one_thread):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")
    from refocus_edge.export.targets.target_onnx import OnnxExportConfig, export_onnx
    from refocus_edge.runtime.array_sampler import sample_focal_stack_arrays
    from refocus_edge.runtime.bundle import read_bundle

    out = tmp_path / "bundle"
    export_onnx(OnnxExportConfig(model=model_with_guided, out=out, decoder="guided"), log=lambda _m: None)
    bundle = read_bundle(out)
    spec = bundle.specs["vae_decoder_9"]
    assert spec.input_names == ["latent", "photo", "frame_offsets"] and bundle.source["decoder"] == "guided"
    assert bundle.manifest.gate_passed("onnx", "fp32", "vae_decoder_9")

    image = torch.rand(1, 3, 64, 64) * 2 - 1
    cfg = SamplerConfig(position=6, seed=3, progress=False)
    ref = sample_focal_stack(load_refocuser(model_with_guided, decoder="guided"), image, cfg).frames
    thin = load_refocuser(out, backend="onnxruntime", arrays=True)
    noise = torch.randn(1, 9, 4, 8, 8, generator=torch.Generator().manual_seed(3)).numpy()  # the torch sampler's
    got = sample_focal_stack_arrays(thin, image.numpy(), cfg, noise=noise).frames
    assert float(np.abs(got - ref.numpy()).max()) < 1e-4
    with pytest.raises(ModelLoadError, match="exported with the guided decoder"):
        load_refocuser(out, decoder="tiny")


def test_the_core_ml_bundle_carries_the_guided_decoder(model_with_guided, tmp_path, one_thread):
    """Converted as it is (plain convolutions, ReLU, nearest upsampling, pixel shuffle, concatenation),
    with the photo and the offsets as package inputs, and the stack gated by PyTorch emulation."""
    pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'refocus-edge[coreml]')")
    from refocus_edge.export.coreml.recipes import CoreMLRecipe
    from refocus_edge.export.targets.target_coreml import CoreMLExportConfig, export_coreml
    from refocus_edge.runtime.bundle import read_bundle

    out = tmp_path / "coreml"
    export_coreml(CoreMLExportConfig(model=model_with_guided, out=out, recipes=(CoreMLRecipe("fp16"),), gate_steps=1,
                                     decoder="guided"), log=lambda _m: None)
    bundle = read_bundle(out)
    assert bundle.specs["vae_decoder_9"].input_names == ["latent", "photo", "frame_offsets"]
    assert bundle.manifest.gate_passed("coreml", "fp16", "vae_decoder_9")


def test_the_default_model_ships_a_gated_guided_decoder():
    """Its gate passed at margin 0 (closer to the true frames than the full decoder on held-out
    stacks), its weights unchanged since, for this VAE and UNet; `refocus run` takes it by default."""
    from refocus_edge.runtime.tiny_decoder import GATE_FILE, tiny_decoder_problem
    from refocus_edge.runtime.zoo import DEFAULT_MODEL, resolve_model

    root = resolve_model(DEFAULT_MODEL)
    assert tiny_decoder_problem(root, "guided") is None
    record = json.loads((root / GUIDED_FOLDER / GATE_FILE).read_text())
    assert record["gate"]["passed"] and record["gate"]["threshold"] == 0.0 and record["gate"]["value"] < 0
    assert record["stats"]["guided_median"] < record["stats"]["identity_median"]
    from refocus_edge.runtime.run_model import load_run_model

    assert load_run_model(DEFAULT_MODEL, None, "fast", None, None, False).refocuser.config.decoder == "guided"
