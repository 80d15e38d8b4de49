"""Bundles: checksums verified before loading; every manifest path stays inside."""
from __future__ import annotations

import json
import os
import shutil

import pytest

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install -e '.[test]')")

from refocus_edge.runtime.bundle import BundleError, read_bundle  # noqa: E402
from refocus_edge.runtime.loading import load_refocuser  # noqa: E402


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    return out


def _edit_manifest(root, edit):
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_a_changed_artifact_fails_its_checksum_before_loading(bundle_copy):
    graph = bundle_copy / "onnx" / "fp32" / "unet.onnx"
    data = bytearray(graph.read_bytes())
    data[-10] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for 'onnx/fp32/unet.onnx'.*re-export"):
        load_refocuser(bundle_copy, backend="onnxruntime", precision="fp32")


def test_a_missing_artifact_is_named(bundle_copy):
    (bundle_copy / "onnx" / "fp32" / "vae_encoder.onnx").unlink()
    with pytest.raises(BundleError, match="'onnx/fp32/vae_encoder.onnx' listed in the manifest is missing"):
        load_refocuser(bundle_copy, backend="onnxruntime", precision="fp32")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.onnx", "onnx/../../x.onnx"])
def test_paths_outside_the_bundle_are_rejected(bundle_copy, bad):
    _edit_manifest(bundle_copy, lambda m: m["artifacts"]["onnx"]["fp32"].__setitem__("unet", bad))
    with pytest.raises(BundleError, match="absolute|climbs out"):
        read_bundle(bundle_copy)


def test_a_link_leading_out_of_the_bundle_is_rejected(bundle_copy, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle_copy / "onnx" / "fp32" / "unet.onnx", outside)
    os.symlink(outside, bundle_copy / "onnx" / "fp32" / "linked.onnx")
    _edit_manifest(bundle_copy, lambda m: m["artifacts"]["onnx"]["fp32"].__setitem__("unet", "onnx/fp32/linked.onnx"))
    with pytest.raises(BundleError, match="link that leads outside"):
        read_bundle(bundle_copy)


def test_an_unlisted_file_is_not_loaded(bundle_copy):
    def drop(m):
        del m["files"]["onnx/fp32/unet.onnx"]
    _edit_manifest(bundle_copy, drop)
    with pytest.raises(BundleError, match="has no checksum in the manifest"):
        load_refocuser(bundle_copy, backend="onnxruntime", precision="fp32")


def test_a_bundle_of_another_format_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.__setitem__("format", 99))
    with pytest.raises(BundleError, match="unsupported bundle format 99"):
        read_bundle(bundle_copy)


def test_cli_reports_a_bad_bundle_in_one_line(bundle_copy, tmp_path, capsys):
    from refocus_edge.cli.main import main
    from PIL import Image

    (bundle_copy / "refocus.json").write_text("{}")  # edited after export
    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (120, 80, 40)).save(photo)
    assert main(["run", str(photo), "--model", str(bundle_copy), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum mismatch for 'refocus.json'" in err[0]
    assert not (tmp_path / "o").exists()
