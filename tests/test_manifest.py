"""The typed bundle manifest (runtime/manifest.py): round trip, tables, and one clear error per fault."""
from __future__ import annotations

import json

import pytest

from refocus_edge.runtime.artifacts import BUNDLE_FORMAT, MANIFEST_NAME, ONNX, TENSORRT_TWIN, onnx_artifact
from refocus_edge.runtime.bundle import BundleError, read_bundle
from refocus_edge.runtime.manifest import Manifest, ManifestError


def _manifest() -> Manifest:
    return Manifest(created_by="test", source={"hash": "abc"}, dims={}, components={"unet": {}}, configs={},
                    clip={}, sampler={"num_inference_steps": 1}, tools={"onnx": "1"})


def _written(tmp_path, m: Manifest) -> dict:
    (tmp_path / "onnx" / "fp32").mkdir(parents=True)
    (tmp_path / onnx_artifact("unet", "fp32")).write_bytes(b"graph")
    m.set_table(ONNX, "fp32", {"unet": onnx_artifact("unet", "fp32")})
    m.set_gates(ONNX, "fp32", {"unet": {"passed": True}})
    m.write(tmp_path)
    return json.loads((tmp_path / MANIFEST_NAME).read_text())


def test_round_trip_and_tables(tmp_path):
    data = _written(tmp_path, _manifest())
    assert data["format"] == BUNDLE_FORMAT and list(data)[:2] == ["format", "created_by"]
    assert data["files"] == {"onnx/fp32/unet.onnx": __import__("hashlib").sha256(b"graph").hexdigest()}
    assert "quantization" not in data and "default_precision" not in data  # empty optional tables stay out
    m = Manifest.read(tmp_path)
    assert m.to_json() == data
    assert m.precisions(ONNX) == ["fp32"] and m.table(ONNX, "fp32") == {"unet": "onnx/fp32/unet.onnx"}
    assert m.gate_passed(ONNX, "fp32", "unet") and not m.gate_passed(ONNX, "fp16", "unet")
    assert m.table(TENSORRT_TWIN, "int8") == {}
    # tables handed out are copies: editing one does not edit the manifest
    m.table(ONNX, "fp32")["unet"] = "elsewhere"
    assert m.table(ONNX, "fp32")["unet"] == "onnx/fp32/unet.onnx"
    assert read_bundle(tmp_path).manifest.to_json() == data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format=2), r"unsupported bundle format 2 \(this runtime reads format 1\)"),
    (lambda d: d.pop("components"), r"no 'components' field"),
    (lambda d: d.update(sampler=[1, 2]), r"'sampler' is list, expected dict"),
    (lambda d: d.update(format=True), r"unsupported bundle format True"),
    (lambda d: d.update(default_precision=8), r"'default_precision' has the wrong type"),
    (lambda d: d.update(files={"a": 1}), r"'files' is not a table of checksums"),
    (lambda d: d["artifacts"].update(onnx={"fp32": ["unet"]}), r"artifacts\['onnx'\] is not a table"),
])
def test_a_malformed_manifest_is_one_clear_error(tmp_path, edit, message):
    data = _written(tmp_path, _manifest())
    edit(data)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message) as exc:
        read_bundle(tmp_path)
    assert isinstance(exc.value, BundleError)  # callers that catch bundle faults catch these too
    assert str(exc.value).startswith(str(tmp_path / MANIFEST_NAME))  # names the file
    assert "re-export" in str(exc.value)  # says what to do


def test_unreadable_manifest(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[]")
    with pytest.raises(ManifestError, match="not a JSON object"):
        Manifest.read(tmp_path)


def test_unknown_tables_are_refused_rather_than_dropped(tmp_path):
    """A table this version does not know would be lost when the manifest is rewritten (quantize
    rewrites it): refused, with what to do."""
    data = _written(tmp_path, _manifest())
    data["something_new"] = {}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="unknown field 'something_new'"):
        Manifest.read(tmp_path)
