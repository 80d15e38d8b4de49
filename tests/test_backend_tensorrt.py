"""TensorRT backend: the cache/key/precision logic everywhere, engines only on an NVIDIA GPU."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
import types

import pytest
import torch

from refocus_edge.runtime import artifacts
from refocus_edge.runtime.backends import backend_tensorrt as trt_backend
from refocus_edge.runtime.backends.base import BackendUnavailableError
from refocus_edge.runtime.manifest import Manifest
from refocus_edge.runtime.bundle import BundleError, read_bundle
from refocus_edge.runtime.components import ModelDims, component_specs
from refocus_edge.runtime.errors import InvalidArgumentError

HAS_GPU_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU_TRT, reason="needs an NVIDIA GPU and the tensorrt package")


def tiny_specs(resolutions=((64, 64),)):
    return component_specs(ModelDims(latent_channels=4, embed_dim=8, clip_size=(32, 32), vae_scale_factor=8,
                                     num_frames=9, decode_chunk_sizes=(8, 1), resolutions=resolutions))


def _manifest(source, components, files, tables, gates) -> Manifest:
    """A manifest with the tables the TensorRT backend reads (the rest empty but present)."""
    return Manifest(created_by="test", source=source, dims={}, components=components, configs={}, clip={},
                    sampler={}, tools={}, artifacts=tables, gates=gates, files=files)


def make_bundle(root, graphs: dict[str, bytes], source_hash="model-hash-1", specs=None):
    """A minimal bundle: the given fp32 ONNX graphs (any bytes) with checksums and specs."""
    specs = specs or tiny_specs()
    files, table = {}, {}
    for name, data in graphs.items():
        rel = artifacts.onnx_artifact(name, "fp32")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel], table[name] = hashlib.sha256(data).hexdigest(), rel
    manifest = _manifest({"hash": source_hash}, {n: specs[n].to_json() for n in graphs}, files,
                         {"onnx": {"fp32": table}}, {})
    (root / artifacts.MANIFEST_NAME).write_text(json.dumps(manifest.to_json()))
    return read_bundle(root)


def make_quant_bundle(root, quantized=("unet",), float_kept=("image_encoder",), twin=True, fp8=True,
                      twin_gates=True):
    """A bundle as `refocus quantize` writes it: fp32 graphs, onnx/int8 (uint8 activations), the
    TensorRT twin onnx-tensorrt/int8 and onnx/fp8, where the components kept in float point at
    their fp32 graph. Graph bytes name what they are, so a fake build shows its source."""
    specs = tiny_specs()
    names = (*quantized, *float_kept)
    files, tables = {}, {"onnx": {"fp32": {}}}

    def put(artifact, precision, name, rel, data):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = hashlib.sha256(data).hexdigest()
        tables.setdefault(artifact, {}).setdefault(precision, {})[name] = rel

    for name in names:
        put("onnx", "fp32", name, artifacts.onnx_artifact(name, "fp32"), b"fp32 " + name.encode())
    kinds = [("onnx", "int8", b"uint8-qdq "), *([("onnx-tensorrt", "int8", b"int8-qdq ")] if twin else []),
             *([("onnx", "fp8", b"fp8-qdq ")] if fp8 else [])]
    gates = {"onnx": {"fp32": {n: {"passed": True} for n in names}}}
    for artifact, precision, tag in kinds:
        for name in quantized:
            put(artifact, precision, name, f"{artifact}/{precision}/{name}.onnx", tag + name.encode())
        for name in float_kept:
            tables[artifact][precision][name] = tables["onnx"]["fp32"][name]
        if artifact == "onnx":
            gates["onnx"][precision] = {n: {"passed": True} for n in names}
    if twin:
        gates["onnx-tensorrt"] = {"int8": {"end_to_end": {"passed": True},
                                           "end_to_end_worst": {"passed": twin_gates}}}
    manifest = _manifest({"hash": "model-hash-1"}, {n: specs[n].to_json() for n in names}, files, tables, gates)
    (root / artifacts.MANIFEST_NAME).write_text(json.dumps(manifest.to_json()))
    return read_bundle(root)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFOCUS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tensorrt"


# ------------------------------------------------------------------ keys and profiles
def test_profile_shapes_follow_the_spec():
    shapes = trt_backend.profile_shapes(tiny_specs()["unet"])
    assert shapes["sample"] == {"min": [1, 9, 8, 8, 8], "opt": [2, 9, 8, 8, 8], "max": [2, 9, 8, 8, 8]}
    assert shapes["timestep"] == {"min": [1], "opt": [2], "max": [2]}
    wide = trt_backend.profile_shapes(tiny_specs(((64, 64), (128, 64)))["vae_decoder_1"])
    assert wide["latent"] == {"min": [1, 4, 8, 8], "opt": [1, 4, 8, 8], "max": [1, 4, 8, 16]}


def test_engine_key_is_stable_and_changes_with_every_fact():
    spec = tiny_specs()["unet"]
    base = dict(model_hash_="m1", component="unet", precision="fp16", spec=spec, trt_version="10.3.0",
                compute_capability="8.9")
    key = artifacts.engine_key(**base)
    assert key == artifacts.engine_key(**base)
    assert key == artifacts.engine_key(**{**base, "spec": tiny_specs()["unet"]})  # equal spec, new object
    changes = {"precision": "fp32", "trt_version": "10.4.0", "compute_capability": "9.0", "model_hash_": "m2",
               "spec": tiny_specs(((64, 64), (128, 64)))["unet"]}
    keys = {name: artifacts.engine_key(**{**base, name: value}) for name, value in changes.items()}
    assert key not in keys.values()
    assert len(set(keys.values())) == len(keys)


def test_engine_facts_carry_the_key_and_survive_json():
    spec = tiny_specs()["image_encoder"]
    facts = trt_backend.engine_facts("m1", spec, "fp16", "abc", "10.3.0", "8.9")
    assert facts["key"] == artifacts.engine_key("m1", "image_encoder", "fp16", spec, "10.3.0", "8.9")
    assert trt_backend.sidecar_mismatch(json.loads(json.dumps(facts)), facts) is None


@pytest.mark.parametrize("field", trt_backend.VERIFIED_FIELDS)
def test_any_changed_sidecar_fact_means_rebuild(field):
    facts = trt_backend.engine_facts("m1", tiny_specs()["unet"], "fp16", "abc", "10.3.0", "8.9")
    why = trt_backend.sidecar_mismatch({**facts, field: "something else"}, facts)
    assert why and field in why
    assert trt_backend.sidecar_mismatch(None, facts) == "no readable sidecar"


def test_engine_bytes_must_match_the_sidecar():
    data = b"engine-bytes"
    sidecar = {"engine_bytes": len(data), "engine_sha256": hashlib.sha256(data).hexdigest()}
    assert trt_backend.engine_bytes_mismatch(sidecar, data) is None
    assert "bytes" in trt_backend.engine_bytes_mismatch(sidecar, data + b"x")
    assert "sha256" in trt_backend.engine_bytes_mismatch(sidecar, b"ENGINE-bytes")


# ------------------------------------------------------------------ precision decisions
@pytest.mark.parametrize("precision,capability,ok", [
    ("fp32", (3, 0), True), ("fp16", (5, 2), False), ("fp16", (5, 3), True), ("fp16", (8, 9), True),
    ("bf16", (7, 5), False), ("bf16", (8, 0), True), ("bf16", (9, 0), True), ("bf16", (12, 0), True),
    ("int8", (5, 3), False), ("int8", (6, 0), False), ("int8", (6, 1), True), ("int8", (7, 5), True),
    ("fp8", (8, 0), False), ("fp8", (8, 6), False), ("fp8", (8, 7), False), ("fp8", (8, 9), True),
    ("fp8", (9, 0), True), ("fp8", (12, 0), True)])
def test_reduced_precision_needs_capability(precision, capability, ok):
    assert (trt_backend.precision_problem(precision, capability) is None) == ok


def test_unsupported_precision_errors():
    with pytest.raises(BackendUnavailableError, match=r"unet: .*bf16 needs compute capability 8\.0.*7\.5"):
        trt_backend.check_precision("unet", "bf16", (7, 5))
    with pytest.raises(InvalidArgumentError, match="int4"):
        trt_backend.precision_problem("int4", (9, 0))
    with pytest.raises(InvalidArgumentError, match="int4"):
        trt_backend.builder_flags("int4")


def test_quantized_precisions_name_what_the_gpu_lacks():
    assert "6.1" in trt_backend.precision_problem("int8", (6, 0)) and "DP4A" in \
        trt_backend.precision_problem("int8", (6, 0))
    fp8 = trt_backend.precision_problem("fp8", (8, 6))
    assert "8.9" in fp8 and "8.6" in fp8 and "FP8" in fp8
    with pytest.raises(BackendUnavailableError, match=r"unet: TensorRT cannot build fp8 here"):
        trt_backend.check_precision("unet", "fp8", (8, 6))


@pytest.mark.parametrize("precision,flags", [
    ("fp32", ()), ("fp16", ("FP16",)), ("bf16", ("BF16",)), ("int8", ("INT8", "FP16")), ("fp8", ("FP8", "FP16"))])
def test_builder_flags_per_precision(precision, flags):
    assert trt_backend.builder_flags(precision) == flags


def test_components_kept_in_float_get_no_quantization_flag():
    # No Q/DQ nodes + INT8 would be TensorRT's deprecated implicit (calibrated) mode.
    assert trt_backend.builder_flags("int8", quantized=False) == ("FP16",)
    assert trt_backend.builder_flags("fp8", quantized=False) == ("FP16",)
    assert trt_backend.builder_flags("bf16", quantized=False) == ("BF16",)


class FakeFlags:
    FP16, BF16, INT8 = "fp16-flag", "bf16-flag", "int8-flag"


def fake_trt(flags=FakeFlags, version="10.0.1"):
    return types.SimpleNamespace(BuilderFlag=flags, __version__=version)


class FakeConfig:
    def __init__(self):
        self.flags = []

    def set_flag(self, flag):
        self.flags.append(flag)


GPU = trt_backend._Gpu(0, "fake gpu", (8, 9))


def set_flags(precision, trt=None, fast_fp16=True, quantized=True):
    config, spec = FakeConfig(), tiny_specs()["unet"]
    builder = types.SimpleNamespace(platform_has_fast_fp16=fast_fp16)
    trt_backend._set_precision_flags(trt or fake_trt(), builder, config, spec, precision, GPU, quantized)
    return config.flags


def test_build_sets_each_named_flag():
    assert set_flags("int8") == ["int8-flag", "fp16-flag"]
    assert set_flags("int8", quantized=False) == ["fp16-flag"]
    assert set_flags("bf16") == ["bf16-flag"] and set_flags("fp32") == []
    # FP16 only permits half kernels for the float layers: no fast fp16 is no reason to refuse int8.
    assert set_flags("int8", fast_fp16=False) == ["int8-flag", "fp16-flag"]
    with pytest.raises(BackendUnavailableError, match="no fast fp16"):
        set_flags("fp16", fast_fp16=False)


def test_missing_fp8_flag_names_the_tensorrt_version():
    with pytest.raises(BackendUnavailableError, match=r"unet: tensorrt 10\.0\.1 has no BuilderFlag FP8.*fp8"):
        set_flags("fp8")

    class WithFp8(FakeFlags):
        FP8 = "fp8-flag"

    assert set_flags("fp8", trt=fake_trt(WithFp8)) == ["fp8-flag", "fp16-flag"]


# ------------------------------------------------------------------ source graphs per precision
def test_source_graph_per_precision(tmp_path):
    bundle = make_quant_bundle(tmp_path / "b")
    files, spec = bundle.manifest.files, bundle.specs["unet"]
    expect = {"int8": "onnx-tensorrt/int8/unet.onnx", "fp8": "onnx/fp8/unet.onnx",
              **{p: artifacts.onnx_artifact("unet", "fp32") for p in ("fp32", "fp16", "bf16")}}
    for precision, rel in expect.items():
        path, sha = trt_backend.source_graph(bundle, spec, precision)
        assert path == tmp_path / "b" / rel and sha == files[rel], precision
    # Kept in float by the recipe: the twin's entry is the fp32 graph, built without INT8.
    enc = bundle.specs["image_encoder"]
    fp32 = trt_backend.source_graph(bundle, enc, "fp32")
    assert trt_backend.source_graph(bundle, enc, "int8") == fp32 == trt_backend.source_graph(bundle, enc, "fp8")
    assert trt_backend.source_is_quantized(bundle, "unet", "int8")
    assert trt_backend.source_is_quantized(bundle, "unet", "fp8")
    assert not trt_backend.source_is_quantized(bundle, "image_encoder", "int8")
    assert not trt_backend.source_is_quantized(bundle, "unet", "fp16")


def test_int8_without_tensorrt_twin_says_to_requantize(tmp_path):
    bundle = make_quant_bundle(tmp_path / "b", twin=False)
    for name in ("unet", "image_encoder"):
        with pytest.raises(BundleError, match=r"uint8.*TensorRT cannot build.*refocus quantize --recipe int8"):
            trt_backend.source_graph(bundle, bundle.specs[name], "int8")
    plain = make_bundle(tmp_path / "p", {"unet": b"graph"})
    with pytest.raises(BundleError, match=r"no int8 graphs.*refocus quantize --recipe int8"):
        trt_backend.source_graph(plain, plain.specs["unet"], "int8")
    with pytest.raises(BundleError, match=r"no fp8 graphs.*refocus quantize --recipe fp8"):
        trt_backend.source_graph(plain, plain.specs["unet"], "fp8")


def test_twin_with_a_failed_gate_is_refused(tmp_path):
    bundle = make_quant_bundle(tmp_path / "b", twin_gates=False)
    with pytest.raises(BundleError, match=r"end_to_end_worst.*refocus quantize --recipe int8"):
        trt_backend.source_graph(bundle, bundle.specs["unet"], "int8")


def test_twin_graph_is_checksum_verified(tmp_path):
    bundle = make_quant_bundle(tmp_path / "b")
    (tmp_path / "b" / "onnx-tensorrt" / "int8" / "unet.onnx").write_bytes(b"edited")
    with pytest.raises(BundleError, match="checksum mismatch"):
        trt_backend.source_graph(bundle, bundle.specs["unet"], "int8")


def test_supports_the_tensorrt_precisions_only():
    for precision in ("fp32", "fp16", "bf16", "int8", "fp8"):
        assert trt_backend.BACKEND.supports(precision)
    for precision in ("int4", "w8", "p6", "fp16-p4"):
        assert not trt_backend.BACKEND.supports(precision)


# ------------------------------------------------------------------ the engine cache (fake builds)
class FakeBuild:
    def __init__(self):
        self.calls = 0

    def __call__(self, onnx_path):
        self.calls += 1
        return b"engine:" + onnx_path.read_bytes() + b":%d" % self.calls


def ensure(bundle, spec, build, precision="fp16", trt_version="10.3.0", cc="8.9"):
    return trt_backend.ensure_engine(bundle, spec, precision, trt_version=trt_version, compute_capability=cc,
                                     build=build, info={"gpu": "fake"})


def test_cache_builds_once_then_reuses(tmp_path, cache):
    bundle = make_bundle(tmp_path / "b", {"image_encoder": b"graph"})
    spec, build = bundle.specs["image_encoder"], FakeBuild()
    first = ensure(bundle, spec, build)
    assert first.built and first.reason == "no cached engine" and build.calls == 1
    assert first.path.parent == cache and first.path.name == artifacts.engine_file("image_encoder", "fp16", first.key)
    sidecar = json.loads(first.path.with_name(first.path.name + ".json").read_text())
    assert sidecar["key"] == first.key and sidecar["gpu"] == "fake"
    again = ensure(bundle, spec, build)
    assert not again.built and again.reason == "cached" and build.calls == 1 and again.data == first.data
    assert not list(cache.glob("*.tmp"))


def test_int8_engine_is_built_from_the_twin_under_its_own_key(tmp_path, cache):
    bundle = make_quant_bundle(tmp_path / "b")
    spec, build = bundle.specs["unet"], FakeBuild()
    fp16, int8, fp8 = (ensure(bundle, spec, build, precision=p) for p in ("fp16", "int8", "fp8"))
    assert fp16.data.startswith(b"engine:fp32 unet") and int8.data.startswith(b"engine:int8-qdq unet")
    assert fp8.data.startswith(b"engine:fp8-qdq unet")
    assert len({fp16.key, int8.key, fp8.key}) == 3 and len({fp16.path, int8.path, fp8.path}) == 3
    sidecar = json.loads(int8.path.with_name(int8.path.name + ".json").read_text())
    assert sidecar["precision"] == "int8"
    assert sidecar["onnx_sha256"] == bundle.manifest.files["onnx-tensorrt/int8/unet.onnx"]
    assert not ensure(bundle, spec, build, precision="int8").built and build.calls == 3


def test_build_engines_checks_every_source_graph_before_building(tmp_path, cache, monkeypatch):
    bundle = make_quant_bundle(tmp_path / "b", quantized=("image_encoder",), float_kept=("unet",), twin=False)
    monkeypatch.setattr(trt_backend.BACKEND, "require", lambda: None)
    monkeypatch.setattr(trt_backend, "_import_trt", lambda: fake_trt())
    monkeypatch.setattr(trt_backend, "_gpu", lambda: GPU)
    monkeypatch.setattr(trt_backend.BACKEND, "_engine", lambda *a: pytest.fail("nothing may be built"))
    with pytest.raises(BundleError, match="uint8"):
        trt_backend.build_engines(bundle, "int8", progress=False)


def test_changed_facts_give_new_engines_never_the_old_one(tmp_path, cache):
    bundle = make_bundle(tmp_path / "b", {"image_encoder": b"graph"})
    spec, build = bundle.specs["image_encoder"], FakeBuild()
    first = ensure(bundle, spec, build)
    others = [ensure(bundle, spec, build, precision="fp32"), ensure(bundle, spec, build, trt_version="10.4.0"),
              ensure(bundle, spec, build, cc="9.0"),
              ensure(make_bundle(tmp_path / "b2", {"image_encoder": b"graph"}, source_hash="model-hash-2"),
                     spec, build),
              ensure(bundle, dataclasses.replace(spec, profile={"batch": (1, 2, 4)}), build)]
    assert all(o.built for o in others) and build.calls == 6
    assert len({first.path, *(o.path for o in others)}) == 6


def test_edited_sidecar_means_rebuild(tmp_path, cache):
    bundle = make_bundle(tmp_path / "b", {"image_encoder": b"graph"})
    spec, build = bundle.specs["image_encoder"], FakeBuild()
    first = ensure(bundle, spec, build)
    sidecar_path = first.path.with_name(first.path.name + ".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar_path.write_text(json.dumps({**sidecar, "precision": "fp32"}))
    again = ensure(bundle, spec, build)
    assert again.built and "precision" in again.reason and build.calls == 2
    sidecar_path.unlink()
    assert ensure(bundle, spec, build).reason == "no readable sidecar"


def test_renamed_engine_is_not_loaded(tmp_path, cache):
    """An fp32 engine copied over the fp16 file (sidecar left in place) is detected and rebuilt."""
    bundle = make_bundle(tmp_path / "b", {"image_encoder": b"graph"})
    spec, build = bundle.specs["image_encoder"], FakeBuild()
    fp16 = ensure(bundle, spec, build, precision="fp16")
    fp32 = ensure(bundle, spec, build, precision="fp32")
    fp16.path.write_bytes(fp32.path.read_bytes())
    again = ensure(bundle, spec, build, precision="fp16")
    assert again.built and "engine" in again.reason and again.data != fp32.data
    # Renaming the sidecar along with it does not help: its key names the other engine.
    fp32.path.with_name(fp32.path.name + ".json").replace(fp16.path.with_name(fp16.path.name + ".json"))
    fp16.path.write_bytes(fp32.path.read_bytes())
    assert "key" in ensure(bundle, spec, build, precision="fp16").reason


def test_changed_graph_bytes_mean_rebuild(tmp_path, cache):
    spec, build = tiny_specs()["image_encoder"], FakeBuild()
    ensure(make_bundle(tmp_path / "b", {"image_encoder": b"graph"}), spec, build)
    again = ensure(make_bundle(tmp_path / "b", {"image_encoder": b"graph v2"}), spec, build)
    assert again.built and "onnx_sha256" in again.reason


def test_unchecked_external_weights_are_refused(tmp_path, cache):
    bundle = make_bundle(tmp_path / "b", {"unet": b"graph"})
    (tmp_path / "b" / "onnx" / "fp32" / artifacts.onnx_external_data("unet")).write_bytes(b"weights")
    with pytest.raises(BundleError, match="no checksum"):
        ensure(bundle, bundle.specs["unet"], FakeBuild())


# ------------------------------------------------------------------ availability without tensorrt
def test_missing_package_is_named_and_not_imported(monkeypatch):
    monkeypatch.setattr(trt_backend, "importable", lambda name: name != "tensorrt")
    monkeypatch.setattr(trt_backend, "_import_trt", lambda: pytest.fail("tensorrt must not be imported"))
    state = trt_backend.BACKEND.availability()
    assert not state.available and "'tensorrt' is not installed" in state.reason
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        trt_backend.BACKEND.load(None, tiny_specs()["unet"], "fp16")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        trt_backend.build_engines(None, "fp16")


def test_no_cuda_gpu_is_the_reason_when_the_package_is_there(monkeypatch):
    monkeypatch.setattr(trt_backend, "importable", lambda name: True)
    monkeypatch.setattr(trt_backend, "_import_trt", lambda: pytest.fail("tensorrt must not be imported"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = trt_backend.BACKEND.availability()
    assert not state.available and "no CUDA GPU" in state.reason


def test_registered_as_an_onnx_backend():
    assert (trt_backend.BACKEND.name, trt_backend.BACKEND.artifact) == ("tensorrt", "onnx")
    if importlib.util.find_spec("tensorrt") is None:
        trt_backend.BACKEND.availability()
        assert "tensorrt" not in sys.modules


# ------------------------------------------------------------------ real engines (GPU)
def _onnx_graphs(specs) -> dict[str, bytes]:
    """Tiny real graphs for two components, with weights the torch references below reuse."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(3 * 32 * 32, 8, generator=gen) * 0.02, torch.randn(8, generator=gen)

    def value_info(t):
        return helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims))

    def model(spec, nodes, inits):
        graph = helper.make_graph(nodes, spec.name, [value_info(t) for t in spec.inputs],
                                  [value_info(t) for t in spec.outputs], inits)
        # IR 8 is what opset 17 shipped with; newer onnx writes IRs the parsers may not read yet.
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(m)
        return m.SerializeToString()

    def const(name, values, dtype="int64"):
        import numpy as np
        return numpy_helper.from_array(np.array(values, dtype=dtype), name)

    enc = specs["image_encoder"]
    encoder = model(enc, [helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
                          helper.make_node("MatMul", ["flat", "w"], ["mm"]),
                          helper.make_node("Add", ["mm", "b"], ["image_embeds"])],
                    [numpy_helper.from_array(weight.numpy(), "w"), numpy_helper.from_array(bias.numpy(), "b")])
    # unet stand-in: out = sample[:, :, :4] * t + sum(encoder_hidden_states) + sum(added_time_ids)
    unet = model(specs["unet"], [
        helper.make_node("Slice", ["sample", "s0", "s4", "ax2"], ["noisy"]),
        helper.make_node("Reshape", ["timestep", "col"], ["t"]),
        helper.make_node("ReduceSum", ["encoder_hidden_states", "ax12"], ["e"], keepdims=0),
        helper.make_node("ReduceSum", ["added_time_ids", "ax1"], ["q"], keepdims=0),
        helper.make_node("Add", ["e", "q"], ["eq"]),
        helper.make_node("Reshape", ["eq", "col"], ["shift"]),
        helper.make_node("Mul", ["noisy", "t"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["out_sample"])],
        [const("s0", [0]), const("s4", [4]), const("ax2", [2]), const("col", [-1, 1, 1, 1, 1]),
         const("ax12", [1, 2]), const("ax1", [1])])

    def ref_encoder(pixel_values):
        return {"image_embeds": pixel_values.flatten(1) @ weight + bias}

    def ref_unet(sample, timestep, encoder_hidden_states, added_time_ids):
        shift = encoder_hidden_states.sum((1, 2)) + added_time_ids.sum(1)
        return {"out_sample": sample[:, :, :4] * timestep.view(-1, 1, 1, 1, 1) + shift.view(-1, 1, 1, 1, 1)}

    return {"image_encoder": encoder, "unet": unet}, {"image_encoder": ref_encoder, "unet": ref_unet}


def _max_rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@needs_gpu
def test_engine_matches_torch_and_replays_cuda_graph(tmp_path, cache):
    graphs, refs = _onnx_graphs(tiny_specs())
    bundle = make_bundle(tmp_path / "b", graphs)
    gen = torch.Generator().manual_seed(1)
    for name in ("image_encoder", "unet"):
        spec = bundle.specs[name]
        runner = trt_backend.BACKEND.load(bundle, spec, "fp32")
        assert runner.device.startswith("tensorrt") and "fp32" in runner.device
        # min, opt, opt (captured), opt (replayed with new values), max: shape changes and replays.
        for which in ("min", "opt", "opt", "opt", "max"):
            feeds = spec.sample_inputs(gen, which)
            out, ref = runner(feeds), refs[name](**feeds)
            for key in spec.output_names:
                assert out[key].device.type == "cpu" and out[key].dtype == torch.float32
                assert out[key].shape == ref[key].shape
                assert _max_rel(out[key], ref[key]) < spec.tolerance("fp32"), (name, which)
        assert "capture failed" not in runner.device, runner.device
        runner.close()


@needs_gpu
def test_fp16_engine_within_tolerance(tmp_path, cache):
    if trt_backend.precision_problem("fp16", torch.cuda.get_device_capability()):
        pytest.skip("this GPU has no fast fp16")
    graphs, refs = _onnx_graphs(tiny_specs())
    bundle = make_bundle(tmp_path / "b", graphs)
    spec = bundle.specs["unet"]
    runner = trt_backend.BACKEND.load(bundle, spec, "fp16")
    feeds = spec.sample_inputs(torch.Generator().manual_seed(2), "opt")
    assert _max_rel(runner(feeds)["out_sample"], refs["unet"](**feeds)["out_sample"]) < spec.tolerance("fp16")


@needs_gpu
def test_build_engines_caches_and_keys_by_precision(tmp_path, cache):
    graphs, _ = _onnx_graphs(tiny_specs())
    bundle = make_bundle(tmp_path / "b", graphs)
    lines = []
    first = trt_backend.build_engines(bundle, "fp32", progress=lines.append)
    assert [r["name"] for r in first] == list(bundle.specs) and all(r["built"] for r in first) and lines
    assert sorted(p.name for p in cache.glob("timing.*.cache"))
    second = trt_backend.build_engines(bundle, "fp32", progress=False)
    assert not any(r["built"] for r in second)
    assert [r["key"] for r in second] == [r["key"] for r in first]
    if trt_backend.precision_problem("fp16", torch.cuda.get_device_capability()) is None:
        fp16 = trt_backend.build_engines(bundle, "fp16", progress=False)
        assert all(r["built"] for r in fp16)
        assert not {r["path"] for r in fp16} & {r["path"] for r in first}


def test_gpu_test_graphs_match_their_references_on_cpu():
    """The GPU tests' graphs and torch references agree (checked with onnxruntime, no GPU needed)."""
    ort = pytest.importorskip("onnxruntime")
    specs = tiny_specs()
    graphs, refs = _onnx_graphs(specs)
    gen = torch.Generator().manual_seed(3)
    for name, graph in graphs.items():
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        for which in ("min", "max"):
            feeds = specs[name].sample_inputs(gen, which)
            out = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
            ref = refs[name](**feeds)[specs[name].output_names[0]]
            assert _max_rel(torch.from_numpy(out), ref) < 1e-5, (name, which)
