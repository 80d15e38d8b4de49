"""Core ML conversion pieces on Linux: recipes, compressed-weight checks, saved-spec checks
and the chunk chain. Conversion runs here; prediction needs macOS and is not attempted."""
from __future__ import annotations

import pytest
import torch

from refocus_edge.export.coreml.recipes import CoreMLRecipe, compress_module
from refocus_edge.runtime.backends.chain import ChainRunner
from refocus_edge.runtime.errors import InvalidArgumentError

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'refocus-edge[coreml]')")

from refocus_edge.export.coreml.convert import TensorIO, convert  # noqa: E402
from refocus_edge.export.coreml.package_check import PackageSpecError, check_package  # noqa: E402
from refocus_edge.export.coreml.weights_check import CompressedWeightsError, check_compressed_weights  # noqa: E402


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 32, 3, padding=1)
        self.proj = torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.proj(torch.nn.functional.silu(self.conv(x)).mean(dim=(2, 3)))


IO_IN, IO_OUT = [TensorIO("x", (1, 4, 8, 8), "input")], [TensorIO("y", (1, 8), "output")]


def test_recipe_names_bits_and_errors():
    assert CoreMLRecipe().name == "fp16"
    assert CoreMLRecipe("fp16", "p6").name == "fp16-p6"
    assert CoreMLRecipe("fp16", "p4").weight_bits("unet") == 4
    assert CoreMLRecipe("fp16", "p4").weight_bits("vae_decoder_8") == 16  # only the UNet is compressed
    assert CoreMLRecipe("fp32").weight_bits("unet") == 32
    with pytest.raises(InvalidArgumentError, match="--compress must be one of"):
        CoreMLRecipe("fp16", "p3")
    with pytest.raises(InvalidArgumentError, match="precision must be one of"):
        CoreMLRecipe("int8")


@pytest.mark.parametrize("kind, levels", [("p4", 16), ("p6", 64)])
def test_palettized_weights_take_at_most_2_to_the_bits_values(kind, levels):
    net = TinyNet()
    compressed = compress_module(net, CoreMLRecipe("fp16", kind))
    assert compressed is not net and torch.equal(net.conv.weight, TinyNet().conv.weight)  # original untouched
    assert torch.unique(compressed.conv.weight.detach()).numel() <= levels
    assert not torch.equal(compressed.conv.weight, net.conv.weight)


def test_w8_weights_are_int8_times_a_per_channel_scale():
    compressed = compress_module(TinyNet(), CoreMLRecipe("fp16", "w8"))
    w = compressed.conv.weight.detach().reshape(32, -1)
    scale = w.abs().max(dim=1, keepdim=True).values / 127
    q = w / scale
    assert torch.allclose(q, q.round(), atol=1e-3) and q.abs().max() <= 127.01


@pytest.mark.parametrize("kind", ["p4", "w8"])
def test_package_holds_exactly_the_pytorch_compressed_weights(kind):
    compressed = compress_module(TinyNet(), CoreMLRecipe("fp16", kind))
    model = convert(compressed, IO_IN, IO_OUT, "fp16", {}, "test")
    assert check_compressed_weights(model, compressed, "fp16", "tiny") == 2  # conv and linear weights
    with pytest.raises(CompressedWeightsError, match="differs from parameter"):
        check_compressed_weights(model, TinyNet(), "fp16", "tiny")  # the uncompressed weights


def test_uncompressed_package_has_no_compressed_weights():
    model = convert(TinyNet(), IO_IN, IO_OUT, "fp16", {}, "test")
    with pytest.raises(CompressedWeightsError, match="no compressed weights"):
        check_compressed_weights(model, TinyNet(), "fp16", "tiny")


@pytest.fixture(scope="module")
def saved_package(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "tiny.mlpackage"
    model = convert(TinyNet(), IO_IN, IO_OUT, "fp16", {"refocus.source_hash": "abc"}, "a tiny net")
    model.save(str(path))
    return path


def test_saved_spec_passes_and_carries_metadata(saved_package):
    report = check_package(saved_package, {"x": (1, 4, 8, 8)}, {"y": (1, 8)}, "FLOAT16")
    assert report.opset == "CoreML7" and report.max_rank <= 4 and report.weight_bytes > 0
    assert {"conv", "linear"} <= set(report.ops)
    spec = ct.utils.load_spec(str(saved_package))
    assert spec.description.metadata.userDefined["refocus.source_hash"] == "abc"
    assert spec.description.metadata.shortDescription == "a tiny net"
    assert spec.description.input[0].shortDescription == "input"


@pytest.mark.parametrize("inputs, outputs, dtype, message", [
    ({"x": (1, 4, 8, 16)}, {"y": (1, 8)}, "FLOAT16", r"input 'x' has shape \[1, 4, 8, 8\], expected \[1, 4, 8, 16\]"),
    ({"image": (1, 4, 8, 8)}, {"y": (1, 8)}, "FLOAT16", r"inputs are \['x'\], expected \['image'\]"),
    ({"x": (1, 4, 8, 8)}, {"y": (1, 8)}, "FLOAT32", "input 'x' is FLOAT16, expected FLOAT32"),
])
def test_saved_spec_mismatches_are_named(saved_package, inputs, outputs, dtype, message):
    with pytest.raises(PackageSpecError, match=message):
        check_package(saved_package, inputs, outputs, dtype)


def test_an_op_outside_the_supported_set_is_reported(saved_package, monkeypatch):
    import refocus_edge.export.coreml.package_check as pc

    monkeypatch.setattr(pc, "SUPPORTED_OPS", pc.SUPPORTED_OPS - {"conv"})
    with pytest.raises(PackageSpecError, match="ops outside the supported set: conv"):
        check_package(saved_package, {"x": (1, 4, 8, 8)}, {"y": (1, 8)}, "FLOAT16")


def test_a_broken_package_is_a_one_line_error(tmp_path):
    broken = tmp_path / "broken.mlpackage"
    broken.mkdir()
    with pytest.raises(PackageSpecError, match="cannot read the package spec"):
        check_package(broken, {}, {}, "FLOAT16")


class Piece:
    def __init__(self, inputs, outputs, fn):
        self.input_names, self.output_names, self.fn = inputs, outputs, fn

    def __call__(self, feeds):
        assert set(feeds) == set(self.input_names)  # a piece sees only what it declares
        return self.fn(feeds)


def test_chain_passes_named_tensors_across_pieces():
    first = Piece(["a"], ["h", "skip"], lambda f: {"h": f["a"] + 1, "skip": f["a"] * 10})
    second = Piece(["h", "b"], ["h2"], lambda f: {"h2": f["h"] * f["b"]})
    third = Piece(["h2", "skip"], ["out"], lambda f: {"out": f["h2"] + f["skip"]})
    chain = ChainRunner([first, second, third], ["out"])
    assert chain.input_names == ["a", "b"]
    out = chain({"a": torch.tensor(2.0), "b": torch.tensor(3.0)})
    assert float(out["out"]) == (2 + 1) * 3 + 20


def test_chain_refuses_pieces_that_do_not_fit():
    with pytest.raises(ValueError, match=r"no piece produces \['out'\]"):
        ChainRunner([Piece(["a"], ["h"], lambda f: f)], ["out"])
    chain = ChainRunner([Piece(["a"], ["h"], lambda f: {"h": f["a"]})], ["h"])
    with pytest.raises(KeyError, match="neither the caller nor an earlier chunk"):
        chain({"b": torch.tensor(1.0)})
