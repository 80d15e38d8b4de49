"""training/gpu_route.py without a GPU: the dry run end to end on a random tiny refocuser, the
one-line refusal of a missing CUDA device, and the device placement of both training losses
checked on the meta device, which, like CUDA, refuses any CPU tensor mixed in (0-d ones aside)."""
import copy
import io
import json
import shutil
import tarfile

import pytest
import torch

from training import gpu_route


def test_dry_run_writes_a_teacher_two_students_and_a_summary(random_model_dir, tmp_path, one_thread, capsys):
    from refocus_edge.runtime.loading import load_refocuser

    out, pack = tmp_path / "route", tmp_path / "pack"
    assert gpu_route.main(["--dry-run", "--teacher", str(random_model_dir), "--out", str(out),
                           "--pack", str(pack)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["device"] == "cpu" and summary["peak_gpu_memory_gib"] is None
    stages = summary["stages"]
    assert list(stages) == ["data", "teacher", "encode", "student_4step", "student_1step"]
    assert all(s["seconds"] > 0 and "error" not in s for s in stages.values())
    assert stages["data"]["rendered"] and stages["data"]["stacks"] == 6
    assert stages["teacher"]["steps"] == 3 and stages["teacher"]["s_per_step"] > 0
    for n in (1, 4):
        assert 1 <= stages[f"student_{n}step"]["iterations"] <= 2
        assert set(stages[f"student_{n}step"]["val_end"]) == {"latent_mse", "lpips"}

    source = load_refocuser(random_model_dir)
    teacher = load_refocuser(summary["models"]["teacher"])
    assert teacher.config.num_inference_steps == source.config.num_inference_steps
    assert teacher.config.guidance_scale == source.config.guidance_scale
    assert teacher.config.extra["steps"] == 3
    changed = [not torch.equal(a, b) for a, b in zip(teacher.unet.state_dict().values(),
                                                        source.unet.state_dict().values())]
    assert any(changed)  # the teacher trained
    for n in (1, 4):
        student = load_refocuser(summary["models"][f"{n}step"])
        assert student.config.num_inference_steps == n and student.config.guidance_scale == 0.0

    # The packed parts rejoin into the three folders, without their vae/.
    parts = sorted(pack.glob("models.tar.*"))
    assert parts and (pack / "summary.json").is_file()
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as tar:
        names = tar.getnames()
    for folder in summary["pack"]["packed"]:
        assert f"{folder}/unet/diffusion_pytorch_model.safetensors" in names
    assert not [n for n in names if "/vae" in n]
    assert "GPU route on" in capsys.readouterr().out

    # A second run into the same folder is refused without --force (nothing replaced).
    assert gpu_route.main(["--dry-run", "--teacher", str(random_model_dir), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_cuda_on_a_machine_without_one_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "route"
    assert gpu_route.main(["--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "no CUDA GPU" in err and "--dry-run" in err
    assert not out.exists()


def test_rendered_stacks_match_render_cache(tmp_path):
    import numpy as np

    from refocus_edge.focalstacks.synthetic import render_cache

    ours = gpu_route.render_training_stacks(tmp_path / "ours.npy", 2, (32, 32), start=0, workers=1, log=print)
    ref = render_cache("train", 2, (32, 32), tmp_path / "ref.npy", progress=False)
    assert np.array_equal(np.load(ours), np.load(ref))


def test_unet_stage_stops_cleanly_when_its_budget_is_spent(random_model_dir, tmp_path, one_thread):
    from training.train_tiny import StageConfig, train_unet

    shutil.copytree(random_model_dir / "vae", tmp_path / "vae")
    stacks = torch.randint(0, 256, (2, 9, 64, 64, 3), dtype=torch.uint8)
    stats = train_unet(stacks, StageConfig(50, 1e-4, 1), tmp_path, random_model_dir, minutes=0.0)
    assert stats["stopped_by_budget"] and stats["steps"] < 50
    assert (tmp_path / "unet" / "config.json").is_file() and (tmp_path / "image_encoder").is_dir()


def _meta_models(model_dir):
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    meta = torch.device("meta")
    return (UNetSpatioTemporalConditionModel.from_pretrained(model_dir / "unet").to(meta),
            CLIPVisionModelWithProjection.from_pretrained(model_dir / "image_encoder").to(meta),
            AutoencoderKLTemporalDecoder.from_pretrained(model_dir / "vae").to(meta))


def test_teacher_loss_keeps_every_tensor_on_the_device(random_model_dir, one_thread):
    from training.train_tiny import StageConfig, unet_loss

    unet, encoder, vae = _meta_models(random_model_dir)
    stacks = torch.randint(0, 256, (3, 9, 64, 64, 3), dtype=torch.uint8)  # data stays on CPU
    latents = torch.randn(3, 9, 4, 8, 8)
    loss = unet_loss(unet, encoder, vae, stacks, latents, StageConfig(1, 1e-4, 2, sigma_uniform=0.6),
                     torch.Generator().manual_seed(0), None, torch.device("meta"))
    loss.backward()
    assert loss.device.type == "meta" and loss.dim() == 0


@pytest.mark.parametrize("steps", [1, 4])
def test_ground_truth_student_loss_keeps_every_tensor_on_the_device(random_model_dir, tmp_path, one_thread, steps):
    from refocus_edge.export.distillation.config import DistillConfig
    from refocus_edge.export.distillation.ground_truth import GroundTruthStacks, GroundTruthTrainer
    from refocus_edge.export.distillation.schedule import student_sigmas
    from refocus_edge.runtime.loading import load_refocuser

    refocuser = load_refocuser(random_model_dir)  # its own copy: the trainer moves the VAE
    data = GroundTruthStacks(torch.randn(4, 9, 4, 8, 8).half(), torch.randn(4, 9, 1, 32).half(),
                             torch.randint(0, 256, (4, 9, 3, 64, 64), dtype=torch.uint8))
    cfg = DistillConfig(teacher=random_model_dir, out=tmp_path / "s", steps=steps, objective="ground-truth",
                        device="meta", batch=2, run_dir=tmp_path / "run")
    sigmas, init_sigma = student_sigmas(cfg.schedule, refocuser.scheduler)
    trainer = GroundTruthTrainer(copy.deepcopy(refocuser.unet), refocuser, data, sigmas, init_sigma, cfg, 2)
    loss = trainer.loss()  # the sampler's CPU sigma tables meet device tensors here
    loss.backward()
    assert loss.device.type == "meta"
