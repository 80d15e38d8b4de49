"""ExecuTorch (issue 22): `refocus export executorch` on the tiny random model (every component exported,
lowered to XNNPACK and gated; a corrupted program fails its gate and nothing is published), the
executorch backend against the PyTorch components (fp32 tight; a call with n items runs the program
n times), static shapes refused with the export shape named, low-memory residency, and the one-line
error naming the extra when the package is missing (that test runs without executorch).

Threads: one (`one_thread`); ExecuTorch's XNNPACK pool takes torch's count when a program loads.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")

from refocus_edge.export.parity import ParityError  # noqa: E402
from refocus_edge.runtime.artifacts import EXECUTORCH  # noqa: E402
from refocus_edge.runtime.backends import backend_executorch as etb  # noqa: E402
from refocus_edge.runtime.backends import get_backend  # noqa: E402
from refocus_edge.runtime.backends.base import BackendUnavailableError  # noqa: E402
from refocus_edge.runtime.bundle import read_bundle  # noqa: E402
from refocus_edge.runtime.component_modules import component_module  # noqa: E402
from refocus_edge.runtime.errors import InvalidArgumentError  # noqa: E402
from refocus_edge.runtime.loading import load_refocuser  # noqa: E402
from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack  # noqa: E402

COMPONENTS = ["image_encoder", "vae_encoder", "unet", "vae_decoder_8", "vae_decoder_1"]
INSTALL = "pip install 'refocus-edge[executorch]'"
needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason=f"package 'executorch' is not installed ({INSTALL})")


def _export(model, out, **options):
    from refocus_edge.export.targets.target_executorch import ExecuTorchExportConfig, export_executorch

    lines = []
    report = export_executorch(ExecuTorchExportConfig(model=model, out=out, **options), log=lines.append)
    return report, lines


@pytest.fixture(scope="module")
def et_bundle(tiny_bundle, tmp_path_factory, one_thread):
    """The tiny random model's ONNX bundle as --model: fp32 programs exported from its source model, the
    ONNX graphs carried over (so dispatch can time every CPU backend on one bundle)."""
    if importlib.util.find_spec("executorch") is None:
        pytest.skip(f"package 'executorch' is not installed ({INSTALL})")
    out = tmp_path_factory.mktemp("et") / "bundle"
    report, lines = _export(tiny_bundle, out)
    return out, report, lines


def test_missing_package_is_one_line_naming_the_extra(tiny_bundle, monkeypatch, tmp_path):
    """Runs with or without executorch: the package is made to look absent."""
    from refocus_edge.export.targets.target_executorch import ExecuTorchExportConfig, export_executorch

    monkeypatch.setattr(etb, "importable", lambda name: False)
    state = get_backend(EXECUTORCH).availability()
    assert not state.available and state.reason == f"package 'executorch' is not installed ({INSTALL})"
    message = f"backend 'executorch' is unavailable here: package 'executorch' is not installed \\({INSTALL}\\)"
    with pytest.raises(BackendUnavailableError, match=message.replace("[", "\\[").replace("]", "\\]")) as err:
        export_executorch(ExecuTorchExportConfig(model=tiny_bundle, out=tmp_path / "b"), log=lambda _m: None)
    assert "\n" not in str(err.value) and not (tmp_path / "b").exists()
    with pytest.raises(BackendUnavailableError, match="refocus-edge\\[executorch\\]"):
        load_refocuser(tiny_bundle, backend=EXECUTORCH)


def test_coreml_delegate_says_it_needs_macos(random_model_dir, tmp_path, monkeypatch):
    from refocus_edge.export.targets import target_executorch as t

    monkeypatch.setattr(t.platform, "system", lambda: "Linux")
    with pytest.raises(InvalidArgumentError, match="--delegate coreml needs macOS \\(this is Linux\\)"):
        _export(random_model_dir, tmp_path / "b", delegate="coreml")


@needs_executorch
def test_export_writes_one_gated_program_per_component(et_bundle):
    out, report, lines = et_bundle
    bundle = read_bundle(out)
    m = bundle.manifest
    assert m.created_by == "refocus export executorch"
    assert m.table(EXECUTORCH, "fp32") == {n: f"executorch/fp32/{n}.pte" for n in COMPONENTS}
    assert sorted(m.table("onnx", "fp32")) == sorted(COMPONENTS)  # carried over from the ONNX bundle
    gates = m.gate_table(EXECUTORCH, "fp32")
    for name in COMPONENTS:
        assert gates[name]["passed"] and gates[name]["metric"] == "max_rel_error" and gates[name]["value"] < 1e-4
        rec = m.executorch["fp32"]["components"][name]
        assert (out / rec["path"]).stat().st_size == rec["bytes"] > 0
        assert 0.8 <= rec["xnnpack_share"] <= 1.0  # most ops run in XNNPACK (copies and attention masks do not)
    assert gates["end_to_end"]["passed"] and gates["end_to_end"]["value"] <= 1e-3
    recs = m.executorch["fp32"]["components"]
    # static shapes: one item on the batch/frames axes, the working size (64x64 -> 8x8 latents)
    assert recs["unet"]["inputs"]["sample"] == [1, 9, 8, 8, 8] and recs["unet"]["per_item_axis"] == "batch"
    assert recs["vae_encoder"]["inputs"]["image"] == [1, 3, 64, 64]
    assert recs["vae_decoder_8"]["inputs"]["latent"] == [8, 4, 8, 8] and recs["vae_decoder_8"]["per_item_axis"] is None
    assert any("unet" in line and "XNNPACK" in line for line in lines)


@needs_executorch
@pytest.mark.parametrize("name", COMPONENTS)
def test_backend_matches_the_pytorch_component(et_bundle, random_refocuser, name, one_thread):
    """At the profile's min/opt/max item counts (the UNet at batch 1 and 2: two program calls), within
    1e-5 relative (10x tighter than the export gate; XNNPACK vs eager measured ~1e-6)."""
    bundle = read_bundle(et_bundle[0])
    spec = bundle.specs[name]
    runner = get_backend(EXECUTORCH).load(bundle, spec, "fp32")
    module = component_module(random_refocuser, spec)
    gen = torch.Generator().manual_seed(7)
    for corner in ("min", "opt", "max"):
        feeds = spec.sample_inputs(gen, corner)
        with torch.no_grad():
            ref = module(*(feeds[n] for n in spec.input_names))
        got = runner(feeds)[spec.output_names[0]]
        assert got.shape == ref.shape
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5


@needs_executorch
def test_other_shapes_are_refused_naming_the_export_shape(et_bundle):
    bundle = read_bundle(et_bundle[0])
    spec = bundle.specs["unet"]
    runner = get_backend(EXECUTORCH).load(bundle, spec, "fp32")
    feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "opt")
    feeds["sample"] = torch.zeros(1, 9, 8, 16, 16)
    with pytest.raises(InvalidArgumentError, match=r"unet: input 'sample' has shape \[1, 9, 8, 16, 16\], the "
                                                   r"ExecuTorch program was exported at the static shape "
                                                   r"\[1, 9, 8, 8, 8\]"):
        runner(feeds)
    feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "max")
    feeds = {k: torch.cat([v, v[:1]]) for k, v in feeds.items()}  # batch 3: no call the sampler makes
    with pytest.raises(InvalidArgumentError, match="batch=3 is outside the exported range 1..2"):
        runner(feeds)


@needs_executorch
def test_whole_stack_on_the_backend_matches_pytorch(et_bundle, random_refocuser, one_thread):
    """Same seed, the model's 4 guided steps: the frames within 1e-4 of the PyTorch sampler's."""
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    cfg = SamplerConfig(position=2, seed=5, progress=False)
    ref = sample_focal_stack(random_refocuser, image, cfg).frames
    model = load_refocuser(et_bundle[0], backend=EXECUTORCH, precision="fp32")
    assert {c.device for c in model.choices} == {"executorch XNNPACK fp32"}
    got = sample_focal_stack(model, image, cfg).frames
    assert float((got - ref).abs().max()) < 1e-4


@needs_executorch
def test_dispatch_times_executorch_beside_the_other_cpu_backends(et_bundle, monkeypatch, tmp_path, one_thread):
    """Real timings (no stubs) on the bundle holding both the ONNX graphs and the programs: executorch
    competes for every component and the pick is the fastest measured of the candidates."""
    from refocus_edge.runtime import dispatch

    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path))
    runners, choices = dispatch.load_runners(read_bundle(et_bundle[0]), "auto", "fp32", arrays=True)
    for c in choices:
        timed = {k: v for k, v in c.timings_ms.items() if isinstance(v, float)}
        assert {"torch/fp32", "onnxruntime/fp32", "executorch/fp32"} <= set(timed)
        assert timed[f"{c.backend}/{c.precision}"] == min(timed.values())
    for r in runners.values():
        r.close()


@needs_executorch
def test_low_memory_keeps_one_program_resident(et_bundle, one_thread):
    image = np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32) * 2 - 1
    from refocus_edge.runtime.array_sampler import sample_focal_stack_arrays

    cfg = SamplerConfig(position=2, seed=5, progress=False)
    noise = np.random.default_rng(5).standard_normal((1, 9, 4, 8, 8), dtype=np.float32)
    ref = sample_focal_stack_arrays(load_refocuser(et_bundle[0], backend=EXECUTORCH, arrays=True), image, cfg,
                                    noise=noise).frames
    resident, peak = set(), [0]
    real_forward, real_unload = etb._Program.forward, etb._Program.unload

    def forward(self):
        method = real_forward(self)  # evicts the slot's other program before it loads this one
        resident.add(self.path.name)
        peak[0] = max(peak[0], len(resident))
        return method

    def unload(self):
        resident.discard(self.path.name)
        return real_unload(self)

    etb._Program.forward, etb._Program.unload = forward, unload
    try:
        model = load_refocuser(et_bundle[0], backend=EXECUTORCH, arrays=True, low_memory=True)
        got = sample_focal_stack_arrays(model, image, cfg, noise=noise).frames
    finally:
        etb._Program.forward, etb._Program.unload = real_forward, real_unload
    np.testing.assert_array_equal(got, ref)
    assert peak[0] == 1  # the VAE group's encoder and two decoders included


@needs_executorch
def test_a_corrupted_program_fails_its_gate_and_nothing_is_published(random_model_dir, tmp_path, monkeypatch,
                                                                     one_thread):
    """Bytes of the image encoder program's weights (the first component) flipped after it is written:
    the program still loads and runs, computes something else, and the gate says so (ParityError),
    before anything reaches --out."""
    from refocus_edge.export.executorch import programs

    real = programs.write_program

    def corrupt(job, variant, spec, module, path):
        record = real(job, variant, spec, module, path)
        if spec.name == "image_encoder":
            data = bytearray(path.read_bytes())
            start = len(data) // 2  # inside the constant data (weights), past the program's header
            for i in range(start, start + 4096, 4):
                data[i + 3] ^= 0x40  # the exponent byte of little-endian fp32 weights
            path.write_bytes(bytes(data))
        return record

    monkeypatch.setattr(programs, "write_program", corrupt)
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match="parity gate failed for image_encoder \\(executorch fp32\\)") as err:
        _export(random_model_dir, out)
    assert err.value.result.component == "image_encoder" and not err.value.result.passed
    assert not out.exists() and not any(p.name != "random" for p in tmp_path.iterdir() if p.name.startswith("."))


@needs_executorch
def test_a_graph_that_cannot_export_says_what_and_where():
    from refocus_edge.export.executorch import lower
    from refocus_edge.export.executorch.lower import ProgramExportError

    class Bad(torch.nn.Module):
        def forward(self, x):
            if torch.nonzero(x).shape[0] > 2:  # data-dependent control flow: no static graph
                return x * 2
            return x

    with pytest.raises(ProgramExportError) as err:
        lower.export_graph(Bad(), (torch.zeros(4),), "toy")
    text = str(err.value)
    assert text.startswith("executorch export of toy failed in torch.export: GuardOnDataDependentSymNode")
    assert "u0 > 2" in text and "test_backend_executorch.py:" in text and "in forward: if torch.nonzero(x)" in text


@pytest.mark.parametrize("shape", [(2, 24, 32, 48), (1, 16, 9, 8, 12)], ids=["4d", "5d"])
def test_the_group_norm_rewrite_is_group_norm(shape):
    """The staged means XNNPACK gets (rewrites.py) are group norm: 4-D and the temporal decoder's 5-D."""
    from refocus_edge.export.executorch.rewrites import group_norm_as_means

    torch.manual_seed(0)
    x, weight, bias = torch.randn(shape).double() + 0.5, torch.randn(shape[1]).double(), torch.randn(shape[1]).double()
    got = group_norm_as_means(x, 4, weight, bias, 1e-5)
    torch.testing.assert_close(got, torch.nn.functional.group_norm(x, 4, weight, bias, 1e-5), rtol=1e-10, atol=1e-10)


@needs_executorch
def test_a_large_group_norm_on_xnnpack_stays_float32_exact(one_thread):
    """One group of 6 x 128 x 128 values: taken as one XNNPACK mean it was 1e-5 off float64 (its float32
    running sum), enough to fail the guided decoder's 1e-4 fp32 gate; in stages it is within 1e-6, and
    all of it still runs on XNNPACK."""
    from executorch.runtime import Runtime

    from refocus_edge.export.executorch.lower import export_graph, lower

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 24).eval()
    x = torch.randn(1, 24, 128, 128) + 0.5
    data, counts = lower(export_graph(norm, (x,), "group_norm"), "group_norm")
    assert counts.share == 1.0 and counts.to_json()["delegate_subgraphs"] == 1
    got = Runtime.get().load_program(data).load_method("forward").execute([x])[0].double()
    with torch.no_grad():
        exact = norm.double()(x.double())
    assert float((got - exact).abs().max() / exact.abs().max()) < 1e-6


def test_the_int8_gate_uses_the_project_int8_budget():
    """export may not import quantization (tests/test_layout.py): its copy of the budget is held equal here."""
    from refocus_edge.export.executorch.int8_gate import int8_budget
    from refocus_edge.quantization.recipes import get_recipe

    assert int8_budget() == get_recipe("int8").drift_budget


def test_int8_keep_float_belongs_to_int8(random_model_dir, tmp_path):
    with pytest.raises(InvalidArgumentError, match="--int8-keep-float belongs to --quantize int8"):
        _export(random_model_dir, tmp_path / "b", int8_keep_float=("vae_decoder",))


@needs_executorch
def test_int8_programs_with_the_decoders_kept_float(random_model_dir, tmp_path, one_thread):
    """--quantize int8 --int8-keep-float vae_decoder: every other component's int8 program is smaller than
    its fp32 one; the decoder chunks' programs in the int8 table are float (recorded as kept), and the int8
    bundle's stack stays within the int8 budget of PyTorch."""
    out = tmp_path / "b"
    report, lines = _export(random_model_dir, out, quantize="int8", int8_keep_float=("vae_decoder",),
                            calibration_samples=2)
    m = read_bundle(out).manifest
    assert m.default_precision == "int8"
    fp32, int8 = m.executorch["fp32"]["components"], m.executorch["int8"]["components"]
    assert m.executorch["int8"]["quantization"]["kept_float"] == ["vae_decoder"]
    for name in ("vae_decoder_8", "vae_decoder_1"):
        assert int8[name].get("kept_float") and abs(int8[name]["bytes"] - fp32[name]["bytes"]) < 0.05 * fp32[name]["bytes"]
    assert int8["unet"]["bytes"] < 0.5 * fp32["unet"]["bytes"] and not int8["unet"].get("kept_float")
    assert m.gate_table(EXECUTORCH, "int8")["end_to_end"]["passed"]
    assert any("(kept float)" in line and "vae_decoder_8" in line for line in lines)
