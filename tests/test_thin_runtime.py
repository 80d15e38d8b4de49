"""The thin runtime (issue 19, item 5): a bundle runs on numpy + pillow + its backend's package.

Its pieces against the PyTorch reference: the numpy sigmas against diffusers' scheduler, the
numpy antialiased resize against the SVD pipeline's, the Euler loop on numpy against the same
loop on torch, and whole stacks against the PyTorch sampler with the same noise. Then `refocus
run` end to end in a subprocess in which torch, diffusers and transformers cannot be imported
(tests/no_torch/sitecustomize.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")

from refocus_edge.runtime.array_conditioning import clip_pixels, resize_antialiased  # noqa: E402
from refocus_edge.runtime.array_sampler import sample_focal_stack_arrays  # noqa: E402
from refocus_edge.runtime.errors import ModelLoadError  # noqa: E402
from refocus_edge.runtime.euler_loop import denoise_loop  # noqa: E402
from refocus_edge.runtime.loading import load_refocuser  # noqa: E402
from refocus_edge.runtime.sampler import SamplerConfig, make_scheduler, sample_focal_stack  # noqa: E402
from refocus_edge.runtime.sigmas import euler_schedule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = REPO / "tests" / "no_torch"
FRAMES = [f"frame_{i}.png" for i in range(9)]


def _scheduler_configs(random_refocuser):
    from diffusers import EulerDiscreteScheduler

    shipped = [EulerDiscreteScheduler.from_pretrained(REPO / "models" / name / "scheduler")
               for name in ("refocus-tiny", "refocus-tiny-1step")]
    return [random_refocuser.scheduler, *shipped]


@pytest.mark.parametrize("steps", [1, 2, 4, 25, 50])
def test_numpy_sigmas_are_the_schedulers(random_refocuser, steps):
    """Sigmas and the initial noise scale are equal to the scheduler's; timesteps (float32 logs,
    torch's within an ulp of the correctly rounded value numpy gives) within one ulp."""
    for scheduler in _scheduler_configs(random_refocuser):
        ref = type(scheduler).from_config(scheduler.config)
        ref.set_timesteps(steps, device="cpu")
        ours = euler_schedule(scheduler.config, steps)
        np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
        np.testing.assert_array_max_ulp(ours.timesteps, ref.timesteps.numpy(), maxulp=1)
        assert ours.init_noise_sigma == np.float32(ref.init_noise_sigma)


def test_a_models_own_sigmas_follow_the_scheduler_too(random_refocuser):
    scheduler = random_refocuser.scheduler
    ref = type(scheduler).from_config(scheduler.config)
    ref.set_timesteps(sigmas=[20.0, 6.4, 1.6, 0.3], device="cpu")
    ours = euler_schedule(scheduler.config, 4, [20.0, 6.4, 1.6, 0.3])
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    np.testing.assert_array_max_ulp(ours.timesteps, ref.timesteps.numpy(), maxulp=1)


def test_a_scheduler_the_numpy_path_cannot_reproduce_is_refused(random_refocuser):
    config = {**random_refocuser.scheduler.config, "use_karras_sigmas": False}
    with pytest.raises(ModelLoadError, match="Karras"):
        euler_schedule(config, 4)


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (320, 512), (576, 832), (500, 300), (224, 224)])
def test_numpy_resize_matches_the_svd_pipelines(size):
    """Blur + bicubic in float32 on both sides; only the summation order differs (measured <= 1.2e-6
    on [-1, 1] inputs), so 1e-5 is a tight bound that still allows another BLAS."""
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing)

    x = torch.rand((2, 3, *size), generator=torch.Generator().manual_seed(size[0])) * 2 - 1
    ref = _resize_with_antialiasing(x, (224, 224)).numpy()
    np.testing.assert_allclose(resize_antialiased(x.numpy(), (224, 224)), ref, rtol=0, atol=1e-5)


def test_numpy_clip_pixels_keep_the_reference_quirk():
    x = np.full((1, 3, 224, 224), -1.0, dtype=np.float32)
    out = clip_pixels(x, (224, 224), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    np.testing.assert_allclose(out, -6.0, atol=1e-5)  # [-1, 1] fed straight into mean/std


def _linear_unet(weight: np.ndarray):
    """A UNet stand-in that depends on every input (noisy and conditioning latents, timestep, embedding)."""
    def unet(x, t, e, n):
        w = weight if isinstance(x, np.ndarray) else torch.from_numpy(weight)
        mixed = x[:, :, :4] * w[:4].reshape(1, 1, 4, 1, 1) + x[:, :, 4:] * w[4:].reshape(1, 1, 4, 1, 1)
        return mixed * (1 + 0.1 * t) + e.sum() * 0.01
    return unet


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_the_euler_loop_is_the_same_on_numpy_and_torch(random_refocuser, guidance):
    """One loop, two array kinds: with the same UNet stand-in, sigmas and inputs, the numpy run and the
    torch run agree to float32 rounding."""
    sched = make_scheduler(random_refocuser, 4)
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 9, 4, 8, 8), dtype=np.float32) * np.float32(20)
    cond = rng.standard_normal((1, 9, 4, 8, 8), dtype=np.float32)
    emb = rng.standard_normal((1, 1, 32), dtype=np.float32)
    unet = _linear_unet(rng.standard_normal(8, dtype=np.float32))
    seen = {"numpy": [], "torch": []}
    out_np, calls = denoise_loop(unet, latents, cond, emb, sched.sigmas.numpy(), sched.timesteps.numpy(), guidance,
                                 on_step=lambda i, s, d: seen["numpy"].append(s))
    out_t, _ = denoise_loop(unet, torch.from_numpy(latents), torch.from_numpy(cond), torch.from_numpy(emb),
                            sched.sigmas, sched.timesteps, guidance, on_step=lambda i, s, d: seen["torch"].append(s))
    assert calls == 4 and seen["numpy"] == seen["torch"] == [float(s) for s in sched.sigmas[:4]]
    np.testing.assert_allclose(out_np, out_t.numpy(), rtol=1e-5, atol=1e-5)


def _image(seed=3, size=64):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _torch_noise(refocuser, seed):
    return torch.randn((1, 9, refocuser.latent_channels, 8, 8), generator=torch.Generator("cpu").manual_seed(seed),
                       dtype=torch.float32).numpy()


def test_thin_stack_matches_the_pytorch_sampler_given_the_same_noise(tiny_bundle, random_refocuser, one_thread):
    """The whole thin path (numpy conditioning and loop, ONNX Runtime graphs) against the PyTorch sampler
    on the source model, 4 guided steps, with the torch sampler's own noise fed to the thin one.

    Tolerance 1e-4 (frames in [0, 1]; one 8-bit level is 3.9e-3): the fp32 graphs differ from eager
    PyTorch by op order only (export gates them at 1e-4 relative per call, measured ~1e-6) and the
    numpy resize by ~1e-6; measured here ~2e-6. fp16 graphs: 0.05, the export's own bound."""
    image, cfg = _image(), SamplerConfig(position=2, seed=5, progress=False)
    ref = sample_focal_stack(random_refocuser, image, cfg).frames.numpy()
    noise = _torch_noise(random_refocuser, 5)
    thin = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32", arrays=True)
    got = sample_focal_stack_arrays(thin, image.numpy(), cfg, noise=noise)
    assert isinstance(got.frames, np.ndarray) and got.frames.shape == (9, 3, 64, 64)
    assert got.unet_calls == 4 and got.sigmas == pytest.approx(make_scheduler(random_refocuser, 4).sigmas.tolist())
    assert np.abs(got.frames - ref).max() < 1e-4
    fp16 = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp16", arrays=True)
    assert np.abs(sample_focal_stack_arrays(fp16, image.numpy(), cfg, noise=noise).frames - ref).max() < 0.05


def test_torch_backend_adapts_at_its_boundary(tiny_bundle, random_refocuser, one_thread):
    """The thin sampler on the torch backend (the source model's modules behind numpy runners): the same
    stack as the PyTorch sampler up to the numpy resize (~1e-6)."""
    image, cfg = _image(4), SamplerConfig(position=6, seed=2, progress=False)
    ref = sample_focal_stack(random_refocuser, image, cfg).frames.numpy()
    thin = load_refocuser(tiny_bundle, backend="torch", arrays=True)
    got = sample_focal_stack_arrays(thin, image.numpy(), cfg, noise=_torch_noise(random_refocuser, 2))
    assert np.abs(got.frames - ref).max() < 1e-5


def test_thin_noise_is_numpys_pcg64_and_recorded(tiny_bundle, one_thread):
    thin = load_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32", arrays=True)
    cfg = SamplerConfig(position=2, seed=9, progress=False)
    a = sample_focal_stack_arrays(thin, _image().numpy(), cfg)
    b = sample_focal_stack_arrays(thin, _image().numpy(), cfg)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.noise == "numpy.random.Generator(PCG64), standard_normal float32, seed 9"
    with pytest.raises(Exception, match="mode fast"):
        sample_focal_stack_arrays(thin, _image().numpy(), SamplerConfig(mode="reference", progress=False))


def _run_without_torch(args: list, tmp_path: Path, log_name: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`refocus ARGS` in a fresh interpreter where torch, diffusers and transformers raise ImportError;
    returns the process and the hidden names something tried to import."""
    log = tmp_path / log_name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NO_TORCH), os.environ.get("PYTHONPATH", "")]),
           "REFOCUS_HIDDEN_LOG": str(log), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "refocus_edge.cli", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    tried = log.read_text().split() if log.exists() else []
    return proc, tried


def _photo(path: Path) -> Path:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(path)
    return path


def test_refocus_run_on_a_bundle_without_torch(tiny_bundle, random_model_dir, tmp_path):
    photo = _photo(tmp_path / "photo.png")

    # The stack alone: nothing on the path even tries to import torch, diffusers or transformers.
    out = tmp_path / "stack"
    proc, tried = _run_without_torch(["run", photo, "--model", tiny_bundle, "--backend", "onnxruntime", "--no-dof",
                                      "--out", out, "--seed", "3"], tmp_path, "stack.log")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tried == [], f"tried to import {sorted(set(tried))}"
    for name in FRAMES + ["focus_sweep.gif", "viewer.html", "run.json"]:
        assert (out / name).is_file(), name
    meta = json.loads((out / "run.json").read_text())
    assert meta["runtime"] == "thin" and "PCG64" in meta["noise"] and meta["unet_calls"] == 4
    assert {b["backend"] for b in meta["backends"].values()} == {"onnxruntime"}
    assert Image.open(out / "frame_0.png").size == (64, 64)

    # Default backend (auto) and the default views: torch is not there, so a bundle backend is picked (ONNX
    # Runtime, or OpenVINO where installed and faster), and the depth-of-field views (torch code) are skipped
    # with one note; the stack is written all the same.
    out = tmp_path / "default"
    proc, tried = _run_without_torch(["run", photo, "--model", tiny_bundle, "--out", out], tmp_path, "default.log")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    meta = json.loads((out / "run.json").read_text())
    assert {b["backend"] for b in meta["backends"].values()} <= {"onnxruntime", "openvino"}
    assert any(n.startswith("depth-of-field views skipped") for n in meta["notes"])
    assert not (out / "all_in_focus.png").exists() and "all_in_focus.png" not in meta["files"]
    assert set(tried) == {"torch"}  # the views' one try, handled

    # What needs PyTorch says so in one line, exit 2.
    for args, expected in (([photo, "--model", random_model_dir], "a model folder runs on PyTorch"),
                           ([photo, "--model", tiny_bundle, "--mode", "reference"], "--mode fast")):
        proc, _ = _run_without_torch(["run", *args, "--out", tmp_path / "never"], tmp_path, "error.log")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
        assert not (tmp_path / "never").exists()
