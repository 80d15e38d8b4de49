"""`refocus quantize` on the tiny random refocuser: every recipe end to end (artifacts load,
run, and pass or fail their gate honestly), the sensitivity scan's keep-list logic, units,
calibration determinism, and the CLI.

A random model samples noise images, so its drift numbers are arbitrary: where a gate must
pass, the recipe is registered with a generous budget; where one must fail, with a budget
nothing but a bit-exact graph meets. Quantizing is the slow part (ONNX Runtime's quantizer
works in Python), so each bundle is quantized once per module and the heavier recipes (fp8)
run on a subset of components.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")
onnx = pytest.importorskip("onnx", reason="needs onnx (pip install -e '.[test]')")

from refocus_edge.export.parity import ParityError  # noqa: E402
from refocus_edge.quantization import recipes as recipes_mod  # noqa: E402
from refocus_edge.export.calibration import CalibrationConfig, collect_calibration  # noqa: E402
from refocus_edge.quantization.drift import Drift, DriftConfig  # noqa: E402
from refocus_edge.quantization.qdq import quantized_node_count  # noqa: E402
from refocus_edge.quantization.quantize import QuantizationError, QuantizeConfig, quantize_model  # noqa: E402
from refocus_edge.runtime.artifacts import OPENVINO_INT8, TENSORRT_TWIN  # noqa: E402
from refocus_edge.quantization.recipes import RECIPES, get_recipe  # noqa: E402
from refocus_edge.quantization.sensitivity import ScanResult, UnitResult, scan_units, tighten, write_table  # noqa: E402
from refocus_edge.quantization.units import always_float, graph_units, unit_of  # noqa: E402
from refocus_edge.runtime.backends.base import BackendUnavailableError  # noqa: E402
from refocus_edge.runtime.backends.finite_guard import FiniteGuard  # noqa: E402
from refocus_edge.runtime.bundle import read_bundle  # noqa: E402
from refocus_edge.runtime.errors import InvalidArgumentError  # noqa: E402
from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack  # noqa: E402

CAL = CalibrationConfig(samples=2, progress=False)
DRIFT = DriftConfig(photos=1)
GENEROUS = (1.0, 1.0)  # LPIPS is at most ~1: any finite drift passes
COMPONENTS = {"image_encoder", "vae_encoder", "unet", "vae_decoder_8", "vae_decoder_1"}
SIZE = 64


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def lpips_ready():
    from refocus_edge.runtime.errors import MissingDependencyError
    from refocus_edge.runtime.metrics import lpips as lp

    try:
        lp.weights_path("alex")
    except MissingDependencyError as exc:
        pytest.skip(f"LPIPS weights unavailable (the drift gates measure LPIPS): {exc}")


def _quantize(model, recipe, out, log=None, **cfg):
    """quantize_model with `recipe` registered under its name for the duration of the call."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(recipes_mod.RECIPES, recipe.name, recipe)
        return quantize_model(QuantizeConfig(model=model, recipe=recipe.name, out=out, calibration=CAL,
                                             drift=DRIFT, progress=False, **cfg),
                              log=log or (lambda _m: None))


def _photo(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _sample_ok(refocuser) -> torch.Tensor:
    frames = sample_focal_stack(refocuser, _photo(), SamplerConfig(progress=False)).frames
    assert frames.shape == (9, 3, SIZE, SIZE)
    assert torch.isfinite(frames).all()
    return frames


def _zero_point_types(path) -> list[int]:
    """Element types of the zero points of every QuantizeLinear (the activations) of a graph."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    return [inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"]


@pytest.fixture(scope="module")
def int8(tiny_bundle, tmp_path_factory, one_thread, lpips_ready):
    """The tiny bundle quantized to int8 once: every component, calibrated on 2 stacks, no scan
    (the known-sensitive blocks stay float), gated at a generous budget."""
    out = tmp_path_factory.mktemp("quantized") / "int8"
    lines = []
    report = _quantize(tiny_bundle, replace(get_recipe("int8"), drift_budget=GENEROUS), out,
                       log=lines.append, scan=False)
    return out, report, lines


# ------------------------------------------------------------------ int8
def test_int8_bundle_has_a_quantized_graph_per_component_and_its_twin(int8):
    out, report, _ = int8
    bundle = read_bundle(out)
    manifest = bundle.manifest
    assert manifest.default_precision == "int8"
    assert set(bundle.precisions("onnx")) >= {"fp32", "fp16", "int8"}
    assert set(manifest.table("onnx", "int8")) == COMPONENTS
    record = manifest.quantization["int8"]
    assert set(record["quantized"]) == COMPONENTS  # every component has blocks left to quantize
    for name in COMPONENTS:
        path = bundle.artifact_path("onnx", "int8", name)  # checksums verify
        assert path != bundle.artifact_path("onnx", "fp32", name)
        assert quantized_node_count(path) > 0
        # ONNX Runtime's x86 kernels take uint8 activations: asymmetric zero points.
        assert set(_zero_point_types(path)) == {onnx.TensorProto.UINT8}

    # The TensorRT twin: symmetric int8 activations with zero point 0, the only int8 QDQ TensorRT builds.
    twin = manifest.table(TENSORRT_TWIN, "int8")
    assert set(twin) == COMPONENTS
    assert record["tensorrt_twin"]["activation_type"] == "QInt8"
    for name in COMPONENTS:
        path = bundle.artifact_path(TENSORRT_TWIN, "int8", name)
        assert path.parent.parts[-2:] == (TENSORRT_TWIN, "int8")
        model = onnx.load(str(path))
        inits = {i.name: i for i in model.graph.initializer}
        points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert points and {p.data_type for p in points} == {onnx.TensorProto.INT8}
        assert all(not onnx.numpy_helper.to_array(p).any() for p in points)

    assert report.sizes_mib["int8"] < report.sizes_mib["fp32"]
    assert record["sizes_mib"] == report.sizes_mib


def test_int8_unet_keeps_its_embeddings_float_and_openvino_compiles_it_static(int8):
    """Quantized embedding Gemms made OpenVINO 2026.4's CPU plugin refuse the int8 UNet's static compile
    (the backend then ran the slower dynamic graph); kept float, the static compile succeeds."""
    from refocus_edge.runtime.backends.backend_openvino import compiled_runner

    out, _, _ = int8
    bundle = read_bundle(out)
    path = bundle.artifact_path("onnx", "int8", "unet")
    fp32 = onnx.load(str(bundle.artifact_path("onnx", "fp32", "unet")), load_external_data=False)
    embeddings = [n for n in fp32.graph.node if n.op_type == "Gemm" and always_float(n.name)]
    assert embeddings
    # (the int8 graph's node names are compacted: count its Gemms whose weights are not dequantized)
    model = onnx.load(str(path))
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    float_gemms = [n for n in model.graph.node if n.op_type == "Gemm" and made_by.get(n.input[1]) != "DequantizeLinear"]
    assert len(float_gemms) >= len(embeddings)
    pytest.importorskip("openvino", reason="needs openvino (pip install -e '.[test]')")
    runner = compiled_runner(path, bundle.specs["unet"], "int8")
    assert "static compile failed" not in runner.device


def test_int8_gates_are_recorded_and_passed(int8):
    out, report, lines = int8
    bundle = read_bundle(out)
    gates = bundle.manifest.gates
    assert report.gates and all(g.passed for g in report.gates)
    for name in COMPONENTS:
        assert bundle.gate_passed("onnx", "int8", name)
        assert gates["onnx"]["int8"][name]["metric"] == "lpips_alex_median_frame"
        assert math.isfinite(gates["onnx"]["int8"][name]["value"])
    for table in (gates["onnx"]["int8"], gates[TENSORRT_TWIN]["int8"]):
        assert table["end_to_end"]["passed"] and table["end_to_end_worst"]["passed"]
        assert table["end_to_end"]["threshold"] == GENEROUS[0]
    assert sum(line.startswith("gate") for line in lines) == len(report.gates)


def test_int8_record_holds_calibration_keep_list_and_sensitivity_table(int8):
    out, report, _ = int8
    bundle = read_bundle(out)
    record = bundle.manifest.quantization["int8"]
    cal = record["calibration"]
    assert {k: cal[k] for k in ("samples", "seed", "data", "positions")} == \
        {"samples": 2, "seed": 0, "data": "synthetic", "positions": list(CAL.positions)}
    # Each stack calls every component once, and the 4-step UNet 4 times (guided: one batched call).
    assert cal["calls"] == {"image_encoder": 2, "vae_encoder": 2, "unet": 8, "vae_decoder_8": 2, "vae_decoder_1": 2}
    assert len(cal["unet_timesteps"]) == 4
    assert record["recipe"]["name"] == "int8" and record["recipe"]["calibration_method"] == "Percentile"
    assert record["drift"]["photos"] == 1
    # No scan: exactly the known-sensitive units stay in float.
    assert record["scan"] is False
    assert record["keep_float"] == report.keep_float
    assert {"unet:conv_in", "unet:conv_out", "vae_decoder:decoder/conv_out",
            "vae_encoder:encoder/conv_in"} <= set(record["keep_float"])
    assert not any("attentions" in k for k in record["keep_float"])
    # the embeddings are float in every QDQ graph (units.always_float), not a unit the keep list chooses
    assert not any("embedding" in k for k in record["keep_float"])

    assert record["sensitivity"] == "quantization/int8/sensitivity.json"
    for rel in ("quantization/int8/sensitivity.json", "quantization/int8/sensitivity.md"):
        bundle.verify(rel)  # listed in the manifest with a matching checksum
    table = json.loads((out / record["sensitivity"]).read_text())
    assert table["recipe"] == "int8" and table["unit_budget"] == get_recipe("int8").unit_budget
    kept = {f"{u['family']}:{u['unit']}" for u in table["units"] if u["keep_float"]}
    assert kept == set(record["keep_float"])
    assert all(u["reason"] == "known sensitive (no scan)" for u in table["units"] if u["keep_float"])
    assert "| unet | conv_in |" in (out / "quantization/int8/sensitivity.md").read_text()


def test_int8_bundle_runs_its_recipe_by_default_with_guarded_decoders(int8):
    from refocus_edge.runtime.loading import load_refocuser

    out, _, _ = int8
    refocuser = load_refocuser(out)  # no precision: the manifest's default_precision
    assert {c.precision for c in refocuser.choices} == {"int8"}
    assert {c.component for c in refocuser.choices} == COMPONENTS
    assert any("precision int8: the bundle's default" in n for n in refocuser.notes)
    for name in ("vae_decoder_8", "vae_decoder_1"):
        assert isinstance(refocuser.vae.runners[name], FiniteGuard)
        choice = next(c for c in refocuser.choices if c.component == name)
        assert "fp32 fallback" in choice.device
    _sample_ok(refocuser)


def test_precision_any_lets_dispatch_time_every_gated_precision_of_an_int8_bundle(int8, monkeypatch, tmp_path):
    import argparse

    from refocus_edge.bench.backends import add_arguments, config_from_args
    from refocus_edge.runtime.errors import InvalidArgumentError
    from refocus_edge.runtime.loading import load_refocuser

    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path))  # a fresh timing table
    out, _, _ = int8
    refocuser = load_refocuser(out, backend="auto", precision="any")
    assert any("precision any" in n for n in refocuser.notes)
    for choice in refocuser.choices:  # each component picked from fp32 and int8, by measured time
        assert {"onnxruntime/fp32", "onnxruntime/int8"} <= set(choice.timings_ms), choice
    _sample_ok(refocuser)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(InvalidArgumentError, match="only --against-reference"):
        config_from_args(parser.parse_args(["--precision", "any"]), str(out))


# ------------------------------------------------------------------ honest failure, real scan
def test_a_missed_gate_raises_and_writes_nothing(tiny_bundle, tmp_path, one_thread, lpips_ready):
    # Only the image encoder (the cheapest component) is quantized: a budget of exactly 0
    # drift can only be met by a bit-exact graph, which int8 is not.
    recipe = replace(get_recipe("int8"), components=("image_encoder",), drift_budget=(0.0, 0.0))
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match="image_encoder"):
        _quantize(tiny_bundle, recipe, out, scan=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind either
    assert RECIPES["int8"].drift_budget == get_recipe("int8").drift_budget == (0.02, 0.05)  # restored


def test_the_scan_measures_each_unit_of_the_real_graphs(tiny_bundle, tmp_path, one_thread, lpips_ready):
    """The scan on real graphs (the image encoder's 3 units, to stay fast): each unit measured
    alone, the budget cut applied, the whole model measured, the table saved in the bundle."""
    recipe = replace(get_recipe("int8"), components=("image_encoder",), drift_budget=GENEROUS)
    out = tmp_path / "bundle"
    _quantize(tiny_bundle, recipe, out, scan=True, unit_budget=0.5)
    bundle = read_bundle(out)
    record = bundle.manifest.quantization["int8"]
    assert record["scan"] is True and record["unit_budget"] == 0.5
    table = json.loads((out / record["sensitivity"]).read_text())
    assert [u["unit"] for u in table["units"]] == ["vision_model/embeddings", "vision_model/encoder/layers.0",
                                                   "visual_projection"]
    for u in table["units"]:
        assert math.isfinite(u["median"]) and u["worst"] >= u["median"] >= 0
        assert u["keep_float"] == (u["median"] > 0.5)
    assert table["steps"][0]["added"] is None  # the whole model measured after the budget cut
    assert record["quantized"] == ["image_encoder"]
    # Components outside the recipe share the fp32 graphs and their gates.
    int8_table, fp32_table = bundle.manifest.table("onnx", "int8"), bundle.manifest.table("onnx", "fp32")
    assert int8_table["unet"] == fp32_table["unet"] and int8_table["image_encoder"] != fp32_table["image_encoder"]
    assert bundle.gate_passed("onnx", "int8", "unet")
    assert "kept in fp32" in bundle.manifest.gate_table("onnx", "int8")["unet"]["detail"]


def test_a_budget_no_block_meets_is_an_error_not_a_renamed_fp32_model(tiny_bundle, tmp_path, one_thread,
                                                                          lpips_ready):
    # A negative unit budget keeps every unit in float: the "quantized" model would be the fp32
    # one, which must not pass as an int8 bundle.
    recipe = replace(get_recipe("int8"), components=("image_encoder",), drift_budget=GENEROUS)
    out = tmp_path / "bundle"
    with pytest.raises(QuantizationError, match="every unit stayed in float"):
        _quantize(tiny_bundle, recipe, out, scan=True, unit_budget=-1.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_scan_aims_below_the_budget_the_gates_enforce():
    recipe = get_recipe("int8")
    assert 0 < recipe.scan_headroom < 1
    assert recipe.scan_target() == pytest.approx((0.02 * recipe.scan_headroom, 0.05 * recipe.scan_headroom))
    assert recipe.to_json()["scan_headroom"] == recipe.scan_headroom


# ------------------------------------------------------------------ fp8
def test_fp8_graphs_hold_float8_and_onnxruntime_runs_them(tiny_bundle, tmp_path, one_thread, lpips_ready):
    from refocus_edge.runtime.loading import load_refocuser

    # The image and VAE encoders (MatMul/Gemm and Conv): the UNet's fp8 graph takes ONNX Runtime's
    # quantizer ~15 s per write on this machine, and the flow is the same.
    recipe = replace(get_recipe("fp8"), components=("image_encoder", "vae_encoder"), drift_budget=GENEROUS)
    out = tmp_path / "bundle"
    report = _quantize(tiny_bundle, recipe, out, scan=False)
    assert all(g.passed for g in report.gates)
    bundle = read_bundle(out)
    assert bundle.manifest.default_precision == "fp8"
    assert TENSORRT_TWIN not in bundle.manifest.artifacts  # fp8 activations are symmetric already
    for name in ("image_encoder", "vae_encoder"):
        path = bundle.artifact_path("onnx", "fp8", name)
        model = onnx.load(str(path))
        types = {i.data_type for i in model.graph.initializer}
        assert onnx.TensorProto.FLOAT8E4M3FN in types
        assert set(_zero_point_types(path)) == {onnx.TensorProto.FLOAT8E4M3FN}
    refocuser = load_refocuser(out, backend="onnxruntime", precision="fp8")
    assert {c.precision for c in refocuser.choices} == {"fp8"}
    _sample_ok(refocuser)


# ------------------------------------------------------------------ fp16, bf16
def test_fp16_recipe_gates_the_fp16_graphs_end_to_end(tiny_bundle, tmp_path, one_thread, lpips_ready):
    from refocus_edge.runtime.loading import load_refocuser

    out = tmp_path / "bundle"
    report = _quantize(tiny_bundle, replace(get_recipe("fp16"), drift_budget=GENEROUS), out)
    bundle = read_bundle(out)
    gates = bundle.manifest.gate_table("onnx", "fp16")
    assert gates["end_to_end"]["passed"] and gates["end_to_end_worst"]["passed"]
    assert gates["end_to_end"]["metric"] == "lpips_alex_median_frame"
    assert all(bundle.gate_passed("onnx", "fp16", n) for n in COMPONENTS)  # the exporter's gates stay
    record = bundle.manifest.quantization["fp16"]
    assert "fp16 graphs" in record["measured_with"]
    assert all(g.passed for g in report.gates) and report.sizes_mib["fp16"] < report.sizes_mib["fp32"]
    refocuser = load_refocuser(out, backend="onnxruntime")  # no precision: the bundle's default
    assert {c.precision for c in refocuser.choices} == {"fp16"}
    _sample_ok(refocuser)


@pytest.fixture(scope="module")
def bf16(tiny_bundle, tmp_path_factory, one_thread, lpips_ready):
    out = tmp_path_factory.mktemp("quantized") / "bf16"
    report = _quantize(tiny_bundle, replace(get_recipe("bf16"), drift_budget=GENEROUS), out)
    return out, report


def test_bf16_is_measured_in_pytorch_bf16_and_recorded(bf16, random_model_dir):
    out, report = bf16
    bundle = read_bundle(out)
    assert bundle.source["model"]  # the gate ran the source model (random_model_dir) in bf16
    record = bundle.manifest.quantization["bf16"]
    assert "PyTorch modules in bf16" in record["measured_with"]
    assert bundle.manifest.default_precision == "bf16"
    # The bf16 table is the fp32 graphs TensorRT builds bf16 engines from.
    assert bundle.manifest.table("onnx", "bf16") == bundle.manifest.table("onnx", "fp32")
    assert all(bundle.gate_passed("onnx", "bf16", n) for n in COMPONENTS)
    assert all(g.passed for g in report.gates)
    # bf16 drift is real (bf16 rounding), not a relabelled fp32 run.
    assert bundle.manifest.gate_table("onnx", "bf16")["end_to_end"]["value"] > 0


def test_onnxruntime_refuses_bf16_and_loading_falls_back(bf16):
    from refocus_edge.runtime.backends import get_backend
    from refocus_edge.runtime.bundle_loading import _default_precision
    from refocus_edge.runtime.dispatch import candidates
    from refocus_edge.runtime.loading import load_refocuser

    out, _ = bf16
    bundle = read_bundle(out)
    ort = get_backend("onnxruntime")
    assert not ort.supports("bf16") and ort.supports("int8")
    with pytest.raises(BackendUnavailableError, match="no bf16 CPU kernels"):
        ort.load(bundle, bundle.specs["unet"], "bf16")
    for name in COMPONENTS:
        assert ("onnxruntime", "bf16") not in candidates(bundle, name, "bf16")
        assert ("onnxruntime", "fp32") in candidates(bundle, name)
    with pytest.raises(BackendUnavailableError, match="no bf16 CPU kernels"):
        load_refocuser(out, backend="onnxruntime", precision="bf16")

    precision, note = _default_precision(bundle, "auto", None)
    if any(("openvino", "bf16") in candidates(bundle, name, "bf16") for name in COMPONENTS):
        assert precision == "bf16"  # OpenVINO runs bf16 on CPUs that have it
    else:  # no backend runs bf16 here: the default falls back with a note
        assert precision is None and "default precision bf16 has no backend here (any)" in note
    refocuser = load_refocuser(out, backend="onnxruntime")
    assert {c.precision for c in refocuser.choices} == {"fp32"}
    assert any("default precision bf16 has no backend here (onnxruntime)" in n for n in refocuser.notes)


# ------------------------------------------------------------------ Core ML recipes
@pytest.mark.parametrize("name", ["w8", "p6", "p4"])
def test_coreml_recipes_delegate_to_the_coreml_exporter(name, tmp_path, monkeypatch):
    """The Core ML recipes are the Core ML exporter's compression options (no second implementation)."""
    import refocus_edge.export.targets.target_coreml as coreml_export
    from refocus_edge.export.driver import ExportReport
    from refocus_edge.export.parity import GateResult

    seen = {}

    def fake_export(cfg, log):
        seen["cfg"] = cfg
        return ExportReport(
            out=cfg.out, gates=[GateResult("end_to_end", "coreml", f"fp16-{name}", "lpips", 0.01, 0.05)],
            rows=[{"component": "unet", "recipe": f"fp16-{name}", "weights_mib": 0.25}])

    monkeypatch.setattr(coreml_export, "export_coreml", fake_export)
    out = tmp_path / "bundle"
    report = quantize_model(QuantizeConfig(model="some-model", recipe=name, out=out, resolutions=((64, 48),),
                                           force=True), log=lambda _m: None)
    cfg = seen["cfg"]
    assert cfg.model == "some-model" and cfg.out == out and cfg.resolution == (64, 48) and cfg.force
    assert [r.name for r in cfg.recipes] == ["fp16", f"fp16-{name}"]
    assert report.recipe == name and report.gates[0].passed
    assert report.sizes_mib == {f"fp16-{name}/unet": 0.25}


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("REFOCUS_SLOW_TESTS"),
                    reason="slow (~65 s: converts every component with coremltools); covered by "
                           "tests/test_export_coreml.py (fp16-p6 packages, gates); set REFOCUS_SLOW_TESTS=1 to run")
def test_p6_recipe_writes_palettized_coreml_packages(random_model_dir, tmp_path, one_thread):
    pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'refocus-edge[coreml]')")
    out = tmp_path / "bundle"
    report = quantize_model(QuantizeConfig(model=random_model_dir, recipe="p6", out=out), log=lambda _m: None)
    bundle = read_bundle(out)
    assert set(bundle.precisions("coreml")) == {"fp16", "fp16-p6"}
    assert set(bundle.manifest.table("coreml", "fp16-p6")) == COMPONENTS
    assert bundle.manifest.gate_table("coreml", "fp16-p6")["end_to_end"]["passed"]
    assert report.gates and all(g.passed for g in report.gates)


# ------------------------------------------------------------------ sensitivity (pure fakes)
def _drift(median: float, worst: float | None = None) -> Drift:
    worst = median if worst is None else worst
    return Drift(torch.tensor([[median, median, worst]]))  # median of the 3 frames is `median`


UNITS = {("unet", "a"): {"unet": ["a1", "a2"]},
         ("unet", "b"): {"unet": ["b1"]},
         ("vae_decoder", "c"): {"vae_decoder_8": ["c8"], "vae_decoder_1": ["c1"]},
         ("unet", "over"): {"unet": ["o1"]},
         ("unet", "nan"): {"unet": ["n1"]}}
KNOWN = {key: key[1] == "over" for key in UNITS}
ALONE = {"a": 0.003, "b": 0.001, "c": 0.002, "over": 0.03, "nan": float("nan")}


def _scan(unit_budget: float = 0.004):
    calls, lines = [], []

    def measure(per_component):
        calls.append(per_component)
        unit = next(iter(per_component.values()))[0].rstrip("0123456789")
        unit = {"o": "over", "n": "nan"}.get(unit, unit)
        return _drift(ALONE[unit], ALONE[unit] * 2)

    return scan_units(UNITS, KNOWN, measure, unit_budget, lines.append), calls, lines


def test_scan_keeps_units_over_the_unit_budget_and_nan_in_float():
    scan, calls, lines = _scan()
    assert calls == list(UNITS.values())  # each unit alone; the decoder's chunk sizes together
    by = {u.unit: u for u in scan.units}
    assert by["c"].nodes == 2 and by["c"].family == "vae_decoder" and by["a"].nodes == 2
    assert by["over"].keep_float and "0.0300 > unit budget 0.004" in by["over"].reason
    assert by["nan"].keep_float and "nan" in by["nan"].reason  # a NaN drift is never "within"
    assert not any(by[u].keep_float or by[u].reason for u in "abc")
    assert by["a"].median == pytest.approx(0.003) and by["a"].worst == pytest.approx(0.006)
    assert by["over"].known_sensitive and not by["a"].known_sensitive
    assert scan.keep() == {("unet", "over"), ("unet", "nan")}
    assert len(lines) == len(UNITS) and lines[3].endswith("-> float")


def _measure_all(floor: float = 0.0):
    """Drift of the whole model: the sum of what each quantized unit does alone, plus `floor`."""
    seen = []

    def measure_all(keep):
        seen.append(set(keep))
        total = floor + sum(ALONE[u] for f, u in UNITS if (f, u) not in keep)
        return _drift(total, total * 1.5)
    return measure_all, seen


def test_tighten_moves_the_most_sensitive_units_to_float_until_the_budget_is_met():
    scan, _, _ = _scan()
    measure_all, seen = _measure_all()
    # Quantized together a + b + c drift 0.006 > 0.0045: `a` (the worst alone) goes float, then 0.003 fits.
    drift = tighten(scan, measure_all, (0.0045, 0.01))
    assert drift.within((0.0045, 0.01)) and drift.median == pytest.approx(0.003)
    assert [s["added"] for s in scan.steps] == [None, "unet:a"]
    assert [s["keep_float"] for s in scan.steps] == [2, 3]
    assert scan.steps[0]["median"] == pytest.approx(0.006) and scan.steps[1]["worst"] == pytest.approx(0.0045)
    assert seen == [{("unet", "over"), ("unet", "nan")}, {("unet", "over"), ("unet", "nan"), ("unet", "a")}]
    by = {u.unit: u for u in scan.units}
    assert by["a"].keep_float and "most sensitive left" in by["a"].reason
    assert not by["b"].keep_float and not by["c"].keep_float


def test_tighten_measures_once_when_the_budget_is_already_met():
    scan, _, _ = _scan()
    measure_all, seen = _measure_all()
    drift = tighten(scan, measure_all, (0.01, 0.01))
    assert len(seen) == 1 and [s["added"] for s in scan.steps] == [None]
    assert drift.median == pytest.approx(0.006) and scan.keep() == {("unet", "over"), ("unet", "nan")}


def test_tighten_adds_units_in_sensitivity_order_and_reports_an_unmet_budget():
    scan, _, _ = _scan()
    measure_all, _ = _measure_all(floor=0.001)  # drift nothing in float can remove
    drift = tighten(scan, measure_all, (0.0, 0.0))
    assert [s["added"] for s in scan.steps] == [None, "unet:a", "vae_decoder:c", "unet:b"]
    assert not drift.within((0.0, 0.0)) and drift.median == pytest.approx(0.001)
    assert all(u.keep_float for u in scan.units)


def test_write_table_writes_json_and_markdown(tmp_path):
    scan, _, _ = _scan()
    tighten(scan, _measure_all()[0], (0.0045, 0.01))
    names = write_table(scan, tmp_path / "q", "int8", 0.004)
    assert names[:2] == ["sensitivity.json", "sensitivity.md"]
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == sorted(names)  # png only with matplotlib
    table = json.loads((tmp_path / "q/sensitivity.json").read_text())
    assert table["recipe"] == "int8" and table["unit_budget"] == 0.004
    assert [u["unit"] for u in table["units"]] == ["a", "b", "c", "over", "nan"]
    assert [s["added"] for s in table["steps"]] == [None, "unet:a"]
    assert table["units"][4]["median"] is None  # NaN drift is null, never a bare NaN
    json.loads((tmp_path / "q/sensitivity.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert table["units"][3] == {"family": "unet", "unit": "over", "nodes": 1, "known_sensitive": True,
                                 "median": 0.03, "worst": 0.06, "keep_float": True,
                                 "reason": "alone drifts 0.0300 > unit budget 0.004"}
    md = (tmp_path / "q/sensitivity.md").read_text()
    assert "| unet | over | 1 | yes | 0.0300 | 0.0600 | float |" in md
    assert "| unet | b | 1 |  | 0.0010 | 0.0020 | quantized |" in md
    assert "| 3 | unet:a |" in md and "(budget cut)" in md


def test_unit_result_without_a_scan_needs_no_measurement():
    result = ScanResult([UnitResult("unet", "conv_in", 1, True, keep_float=True, reason="known sensitive")])
    assert result.keep() == {("unet", "conv_in")}
    assert math.isnan(result.units[0].median)


# ------------------------------------------------------------------ units
@pytest.mark.parametrize("node, unit", [
    ("/unet/down_blocks.0/resnets.0/temporal_res_block/conv1/Conv", "down_blocks.0/resnets.0/temporal_res_block"),
    ("/unet/down_blocks.0/resnets.0/spatial_res_block/conv1/Conv", "down_blocks.0/resnets.0/spatial_res_block"),
    ("/unet/up_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul", "up_blocks.1/attentions.0"),
    ("/unet/mid_block/attentions.0/proj_in/MatMul", "mid_block/attentions.0"),
    ("/unet/down_blocks.0/downsamplers.0/conv/Conv", "down_blocks.0/downsamplers.0"),
    ("/unet/time_embedding/linear_1/Gemm", "time_embedding"),
    ("/unet/conv_in/Conv", "conv_in"),
    ("/decoder/conv_out/Conv", "decoder/conv_out"),
    ("/decoder/up_blocks.3/resnets.1/spatial_res_block/conv2/Conv", "decoder/up_blocks.3/resnets.1/spatial_res_block"),
    ("/encoder/mid_block/resnets.0/conv1/Conv", "encoder/mid_block/resnets.0"),
    ("/quant_conv/Conv", "quant_conv"),
    ("/image_encoder/vision_model/encoder/layers.1/mlp/fc1/MatMul", "vision_model/encoder/layers.1"),
    ("/image_encoder/vision_model/embeddings/patch_embedding/Conv", "vision_model/embeddings"),
    ("/image_encoder/visual_projection/MatMul", "visual_projection"),
    ("/Conv", "graph"),
])
def test_unit_of_groups_nodes_by_block(node, unit):
    assert unit_of(node) == unit


def _graph(names: list[str]):
    from onnx import helper

    nodes = [helper.make_node("Conv" if n.endswith("Conv") else "MatMul" if n.endswith("MatMul") else "Add",
                              [f"x{i}"], [f"x{i + 1}"], name=n) for i, n in enumerate(names)]
    return helper.make_model(helper.make_graph(nodes, "g", [], []))


def test_graph_units_flags_known_sensitive_blocks():
    model = _graph(["/decoder/conv_in/Conv",
                    "/decoder/up_blocks.0/resnets.0/spatial_res_block/conv1/Conv",
                    "/decoder/up_blocks.0/resnets.0/spatial_res_block/conv2/Conv",
                    "/decoder/up_blocks.0/resnets.0/spatial_res_block/Add",  # not a quantized op type
                    "/decoder/up_blocks.0/resnets.0/temporal_res_block/conv1/Conv",
                    "/decoder/up_blocks.3/resnets.0/spatial_res_block/conv1/Conv",
                    "/decoder/mid_block/attentions.0/to_q/MatMul",
                    "/decoder/time_conv_out/Conv",
                    "/decoder/conv_out/Conv"])
    units = graph_units("vae_decoder_8", model, ("Conv", "MatMul"))
    flags = {u.name: u.known_sensitive for u in units}
    assert flags == {"decoder/conv_in": True,
                     "decoder/up_blocks.0/resnets.0/spatial_res_block": False,
                     "decoder/up_blocks.0/resnets.0/temporal_res_block": True,
                     "decoder/up_blocks.3/resnets.0/spatial_res_block": True,  # full-resolution decoder block
                     "decoder/mid_block/attentions.0": False,
                     "decoder/time_conv_out": True,
                     "decoder/conv_out": True}
    spatial = next(u for u in units if u.name == "decoder/up_blocks.0/resnets.0/spatial_res_block")
    assert len(spatial.nodes) == 2 and spatial.component == "vae_decoder_8"
    assert spatial.to_json() == {"component": "vae_decoder_8", "name": spatial.name, "nodes": 2,
                                 "known_sensitive": False}


def test_graph_units_of_the_exported_unet(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    model = onnx.load(str(bundle.artifact_path("onnx", "fp32", "unet")), load_external_data=False)
    units = {u.name: u for u in graph_units("unet", model, get_recipe("int8").op_types)}
    assert {"conv_in", "conv_out", "mid_block/attentions.0"} <= set(units)
    assert units["conv_in"].known_sensitive and not units["mid_block/attentions.0"].known_sensitive
    # The embedding MLPs stay float in every QDQ graph (units.always_float): no unit offers them.
    assert not {"time_embedding", "add_embedding"} & set(units)
    # Every other quantizable node is in exactly one unit.
    quantizable = [n.name for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    embeddings = [n for n in quantizable if always_float(n)]
    assert any("/time_pos_embed/" in n for n in embeddings) and any("/time_embedding/" in n for n in embeddings)
    assert sorted(n for u in units.values() for n in u.nodes) == sorted(set(quantizable) - set(embeddings))


# ------------------------------------------------------------------ calibration
@pytest.fixture(scope="module")
def fp32_refocuser(tiny_bundle, one_thread):
    from refocus_edge.runtime.bundle_loading import load_bundle_refocuser

    return load_bundle_refocuser(tiny_bundle, backend="onnxruntime", precision="fp32")


def _runners(refocuser) -> dict:
    return {name: runner for a in (refocuser.unet, refocuser.vae, refocuser.image_encoder)
            for name, runner in a.runners.items()}


@pytest.fixture(scope="module")
def calibration_runs(fp32_refocuser):
    before = _runners(fp32_refocuser)
    first = collect_calibration(fp32_refocuser, CAL)
    restored = _runners(fp32_refocuser)
    second = collect_calibration(fp32_refocuser, CAL)
    other_seed = collect_calibration(fp32_refocuser, replace(CAL, samples=1, seed=7))
    return before, restored, first, second, other_seed


def test_calibration_is_a_pure_function_of_its_config(calibration_runs):
    _, _, first, second, _ = calibration_runs
    assert set(first.feeds) == COMPONENTS
    assert first.to_json()["calls"] == {"image_encoder": 2, "vae_encoder": 2, "unet": 8,
                                        "vae_decoder_8": 2, "vae_decoder_1": 2}
    for name, calls in first.feeds.items():
        assert len(calls) == len(second.feeds[name])
        for a, b in zip(calls, second.feeds[name]):
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.unet_timesteps == second.unet_timesteps


def test_calibration_sees_the_unet_at_the_models_own_timesteps(calibration_runs, fp32_refocuser):
    from refocus_edge.runtime.sampler import make_scheduler

    _, _, first, _, _ = calibration_runs
    scheduler = make_scheduler(fp32_refocuser, fp32_refocuser.config.num_inference_steps)
    sigmas = [float(s) for s in scheduler.sigmas[:-1]]  # the last sigma (0) is never fed to the UNet
    assert fp32_refocuser.config.num_inference_steps == 4 and len(first.unet_timesteps) == 4
    assert first.unet_timesteps == pytest.approx(sorted((0.25 * math.log(s) for s in sigmas), reverse=True),
                                                 abs=1e-5)
    assert first.unet_timesteps == pytest.approx([float(t) for t in scheduler.timesteps], abs=1e-5)


def test_a_different_seed_changes_the_noise_not_the_photos(calibration_runs):
    _, _, first, _, other = calibration_runs
    assert not torch.equal(first.feeds["unet"][0]["sample"], other.feeds["unet"][0]["sample"])
    assert all(torch.equal(first.feeds["image_encoder"][0][k], other.feeds["image_encoder"][0][k])
               for k in first.feeds["image_encoder"][0])
    assert other.to_json()["seed"] == 7 and other.to_json()["calls"]["unet"] == 4


def test_calibration_restores_the_original_runners(calibration_runs, fp32_refocuser):
    before, restored, _, _, _ = calibration_runs
    assert restored == before and _runners(fp32_refocuser) == before
    assert all(r is before[n] for n, r in restored.items())


@pytest.mark.parametrize("cfg, message", [
    (CalibrationConfig(samples=0, progress=False), "at least 1 sample"),
    (CalibrationConfig(samples=1, data="/nonexistent/learn2refocus", progress=False), "does not exist"),
])
def test_bad_calibration_configs_are_one_line_errors(fp32_refocuser, cfg, message):
    before = _runners(fp32_refocuser)
    with pytest.raises(InvalidArgumentError, match=message):
        collect_calibration(fp32_refocuser, cfg)
    assert _runners(fp32_refocuser) == before  # restored on the way out of a failure too


def test_an_empty_real_data_folder_is_an_error(tmp_path):
    from refocus_edge.export.calibration import calibration_photos

    with pytest.raises(InvalidArgumentError, match="contains no complete scene"):
        calibration_photos(CalibrationConfig(samples=1, data=str(tmp_path)), (SIZE, SIZE))


# ------------------------------------------------------------------ recipes and CLI
def test_every_recipe_is_described_and_unknown_names_are_refused():
    from refocus_edge.quantization.recipes import DEFAULT_RECIPE
    from refocus_edge.cli.cmd_quantize import DEFAULT_RECIPE as CLI_DEFAULT, RECIPE_NAMES

    assert tuple(RECIPES) == RECIPE_NAMES
    assert CLI_DEFAULT == DEFAULT_RECIPE == "int8"
    assert {r.kind for r in RECIPES.values()} == {"qdq", "float", "coreml"}
    assert all(RECIPES[n].coreml_compress == n for n in ("w8", "p6", "p4"))
    assert get_recipe("int8").tensorrt_activation_type == "QInt8" and get_recipe("int8").activation_type == "QUInt8"
    assert json.dumps(get_recipe("fp8").to_json())  # serialisable for the manifest
    with pytest.raises(InvalidArgumentError, match="unknown quantization recipe 'int4'"):
        get_recipe("int4")


def test_cli_help_lists_the_recipes(capsys):
    from refocus_edge.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in RECIPES:
        assert name in text
    assert "--calibration-data" in text and "--no-scan" in text


def test_cli_refuses_an_unknown_recipe(tmp_path, capsys):
    from refocus_edge.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--recipe", "int4", "--out", str(tmp_path / "b")])
    assert exc.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cli_bad_calibration_folder_is_a_one_line_error(tiny_bundle, tmp_path, capsys, one_thread, lpips_ready):
    from refocus_edge.cli.main import main

    out = tmp_path / "b"
    code = main(["quantize", "--model", str(tiny_bundle), "--recipe", "int8", "--out", str(out),
                 "--calibration-data", str(tmp_path / "missing"), "--calibration-samples", "1",
                 "--drift-photos", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("refocus: error:") and "calibration data folder" in err and "missing" in err
    assert not out.exists()


def test_a_bad_calibration_folder_fails_before_any_export(random_model_dir, tmp_path, monkeypatch):
    import refocus_edge.export.targets.target_onnx as onnx_export

    def no_export(*_a, **_k):
        raise AssertionError("the export ran before the calibration folder was checked")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    cfg = QuantizeConfig(model=random_model_dir, recipe="int8", out=tmp_path / "b", progress=False,
                         calibration=CalibrationConfig(samples=1, data=str(tmp_path / "missing"), progress=False))
    with pytest.raises(InvalidArgumentError, match="calibration data folder .*missing does not exist"):
        quantize_model(cfg, log=lambda _m: None)
    assert not (tmp_path / "b").exists()



def test_int8_writes_an_openvino_form_for_components_with_attention(int8):
    """Symmetric int8 activations, except the float tensors around Concats, which are uint8; gated."""
    from refocus_edge.quantization.qdq import has_attention

    out, _, _ = int8
    bundle = read_bundle(out)
    table = bundle.manifest.table(OPENVINO_INT8, "int8")
    with_attention = {c for c in COMPONENTS if has_attention(bundle.artifact_path("onnx", "fp32", c))}
    assert "unet" in with_attention and set(table) == with_attention
    gates = bundle.manifest.gates[OPENVINO_INT8]["int8"]
    assert gates["end_to_end"]["passed"] and gates["end_to_end_worst"]["passed"]
    assert sorted(bundle.manifest.quantization["int8"]["openvino_form"]["components"]) == sorted(table)
    model = onnx.load(str(bundle.artifact_path(OPENVINO_INT8, "int8", "unet")))
    made_by = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_point = {n.output[0]: inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    around_concat, elsewhere = set(), set()
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            src = made_by.get(n.input[0])
            (around_concat if src is not None and src.op_type == "Concat" else elsewhere).add(str(zero_point[n.output[0]].dtype))
    assert around_concat == {"uint8"} and "int8" in elsewhere


def test_openvino_int8_runs_its_form_and_computes_what_onnxruntime_does(int8):
    """The OpenVINO form on OpenVINO is as close to the fp32 graph as ONNX Runtime's run of the same graph
    (OpenVINO 2026.4 is not, on the twin: backend_openvino.py); without passed gates for the form the
    backend runs the uint8 graph and says so."""
    pytest.importorskip("openvino", reason="needs openvino (pip install -e '.[test]')")
    import numpy as np

    from refocus_edge.runtime.backends.backend_onnxruntime import array_session_runner
    from refocus_edge.runtime.backends.backend_openvino import BACKEND as openvino, int8_source

    out, _, _ = int8
    bundle = read_bundle(out)
    spec = bundle.specs["unet"]
    name = spec.output_names[0]
    feeds = spec.sample_arrays(np.random.default_rng(0), "opt")

    def ort(kind, precision="int8"):
        runner = array_session_runner(bundle.artifact_path(kind, precision, "unet"), spec, precision)
        try:
            return runner(feeds)[name]
        finally:
            runner.close()

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    fp32 = ort("onnx", "fp32")
    assert int8_source(bundle, "unet")[0] == OPENVINO_INT8 and openvino.gate_passed(bundle, "int8", "unet")
    runner = openvino.load_arrays(bundle, spec, "int8")
    try:
        assert "openvino form" in runner.device
        got = runner(feeds)[name]
    finally:
        runner.close()
    assert rel(got, fp32) <= 1.5 * rel(ort(OPENVINO_INT8), fp32), (rel(got, fp32), rel(ort(OPENVINO_INT8), fp32))

    # each int8 graph holds itself at load to ONNX Runtime's recorded error on it: a graph OpenVINO
    # computed 10x worse than that would fail to load
    recorded = bundle.manifest.quantization["int8"]["sample_rel_l2"]
    assert 0 < recorded[OPENVINO_INT8]["unet"] < 1 and 0 < recorded["onnx"]["unet"] < 1
    recorded[OPENVINO_INT8]["unet"] = recorded[OPENVINO_INT8]["unet"] / 10
    with pytest.raises(BackendUnavailableError, match="computes this graph differently from ONNX Runtime"):
        openvino.load_arrays(bundle, spec, "int8")

    bundle.manifest.gates[OPENVINO_INT8]["int8"]["end_to_end"]["passed"] = False
    assert int8_source(bundle, "unet") == ("onnx", "uint8 activations")
    assert openvino.gate_passed(bundle, "int8", "unet")  # the uint8 graph's own gate
    runner = openvino.load_arrays(bundle, spec, "int8")
    try:
        assert "uint8 activations" in runner.device
        assert rel(runner(feeds)[name], fp32) <= 1.5 * rel(ort("onnx"), fp32)
    finally:
        runner.close()
