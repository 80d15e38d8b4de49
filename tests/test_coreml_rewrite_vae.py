"""export/coreml/rewrites/vae.py: ConvertibleVAE against diffusers' AutoencoderKLTemporalDecoder.

Every random VAE here has all its parameters perturbed (zero-initialised biases, unit
norm weights and the AlphaBlender mix factors included), so no comparison passes because
a branch is multiplied by zero or a blend sits at exactly one half."""
from __future__ import annotations

import warnings

import pytest
import torch

from refocus_edge.export.coreml.rewrites.vae import ConvertibleVAE, SpatialSelfAttention

SMALL = dict(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
             layers_per_block=1, latent_channels=4)
TOL = 1e-4


def _wide_config() -> dict:
    """The shipped architecture (channels change between levels, 16 latent channels) with two
    layers per block, so the decoder's mid-block attention is used (with one layer diffusers
    zips it away) and the up blocks have three resnets."""
    from training.tiny_architecture import VAE_CONFIG

    return {**VAE_CONFIG, "layers_per_block": 2}


def _perturbed_vae(config: dict, seed: int):
    from diffusers import AutoencoderKLTemporalDecoder

    torch.manual_seed(seed)
    vae = AutoencoderKLTemporalDecoder(**config).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            # mix_factor starts at 0 (blend 0.5 everywhere): move each far enough to tell
            # spatial from temporal weighting; everything else gets a small shift.
            p.add_(torch.randn_like(p) * (1.0 if name.endswith("mix_factor") else 0.02))
    return vae


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape
    return float((got - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def vaes():
    """name -> (diffusers VAE, ConvertibleVAE with its weights)."""
    out = {}
    for name, config, seed in (("small", SMALL, 1), ("wide", _wide_config(), 2)):
        vae = _perturbed_vae(config, seed)
        out[name] = (vae, ConvertibleVAE.from_diffusers(vae))
    return out


def _trace(module: torch.nn.Module, example: torch.Tensor):
    with warnings.catch_warnings():
        # Reading shapes as Python ints warns under tracing; constants are the intent here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch.jit.trace is deprecated in favour of torch.export, but it is what
        # coremltools' TorchScript frontend (the one the export uses) takes.
        warnings.simplefilter("ignore", DeprecationWarning)
        # No check_trace re-run: the tests compare the traced module's output themselves.
        return torch.jit.trace(module, example, check_trace=False)


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name", ["small", "wide"])
def test_state_dict_is_the_diffusers_one(vaes, name):
    vae, _ = vaes[name]
    rewrite = ConvertibleVAE(dict(vae.config))
    ours = {k: tuple(v.shape) for k, v in rewrite.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert list(ours) == list(theirs)  # same keys, same order
    assert ours == theirs
    rewrite.load_state_dict(vae.state_dict(), strict=True)
    for key, value in rewrite.state_dict().items():
        assert torch.equal(value, vae.state_dict()[key]), key


def test_component_modules_share_parameters(vaes):
    _, rewrite = vaes["small"]
    own = {id(p) for p in rewrite.parameters()}
    for module in (rewrite.encoder_module(), rewrite.decoder_module(8)):
        params = list(module.parameters())
        assert params and all(id(p) in own for p in params)
    assert rewrite.encoder_module().encoder is rewrite.encoder
    assert rewrite.decoder_module(3).decoder is rewrite.decoder
    # from_diffusers copies: the diffusers model and the rewrite do not alias memory.
    vae, _ = vaes["small"]
    theirs = {p.data_ptr() for p in vae.parameters()}
    assert not any(p.data_ptr() in theirs for p in rewrite.parameters())


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("name,shape", [
    ("small", (2, 3, 64, 64)),
    ("small", (1, 3, 40, 72)),   # non-square
    ("wide", (1, 3, 48, 80)),    # non-square
    ("wide", (1, 3, 36, 52)),    # not a multiple of 8: exercises the asymmetric downsample pad
])
def test_encoder_matches_posterior_mode(vaes, name, shape):
    vae, rewrite = vaes[name]
    torch.manual_seed(3)
    image = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        ref = vae.encode(image).latent_dist.mode()
        got = rewrite.encoder_module()(image)
    assert _rel_err(got, ref) <= TOL


@pytest.mark.parametrize("name,num_frames,shape", [
    ("small", 8, (8, 4, 6, 6)),
    ("small", 1, (1, 4, 5, 7)),      # non-square
    ("small", 3, (6, 4, 4, 6)),      # two chunks of three frames
    ("wide", 8, (8, 16, 5, 7)),      # non-square
    ("wide", 1, (1, 16, 6, 6)),
    ("wide", 3, (3, 16, 4, 4)),
])
def test_decoder_matches_decode(vaes, name, num_frames, shape):
    vae, rewrite = vaes[name]
    torch.manual_seed(4)
    latent = torch.randn(shape)
    with torch.no_grad():
        ref = vae.decode(latent, num_frames=num_frames).sample
        got = rewrite.decoder_module(num_frames)(latent)
    assert _rel_err(got, ref) <= TOL


def test_multi_head_attention_matches_diffusers():
    """The VAEs use one head; the explicit head split must also hold for several."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(5)
    ref = Attention(64, heads=4, dim_head=16, eps=1e-6, norm_num_groups=32, bias=True,
                    residual_connection=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = SpatialSelfAttention(64, heads=4, dim_head=16)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 64, 5, 7)
    with torch.no_grad():
        assert _rel_err(ours(x), ref(x)) <= TOL


def test_shipped_model():
    from refocus_edge.runtime.loading import load_refocuser

    vae = load_refocuser("refocus-tiny").vae
    rewrite = ConvertibleVAE.from_diffusers(vae)
    torch.manual_seed(6)
    image = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(image).latent_dist.mode()
        assert latent.shape == (1, 16, 16, 16)
        assert _rel_err(rewrite.encoder_module()(image), latent) <= TOL
        latents = torch.randn(8, 16, 16, 16)
        for num_frames in (8, 1):
            z = latents[:num_frames]
            ref = vae.decode(z, num_frames=num_frames).sample
            assert _rel_err(rewrite.decoder_module(num_frames)(z), ref) <= TOL


# ----------------------------------------------------------------------------- conversion readiness


def _graph_nodes(graph):
    for node in graph.nodes():
        yield node
        for block in node.blocks():
            yield from _graph_nodes(block)


@pytest.mark.parametrize("which,example_shape", [
    ("encoder", (1, 3, 32, 48)),
    ("decoder", (8, 16, 4, 6)),
    ("decoder", (1, 16, 4, 6)),
])
def test_traced_graph_is_static_and_low_rank(vaes, which, example_shape):
    _, rewrite = vaes["wide"]
    module = rewrite.encoder_module() if which == "encoder" else rewrite.decoder_module(example_shape[0])
    example = torch.randn(example_shape)
    traced = _trace(module, example)
    graph = traced.inlined_graph
    kinds = {node.kind() for node in _graph_nodes(graph)}
    # Shapes were read as Python ints: no run-time shape arithmetic (what Core ML rejected).
    assert not kinds & {"aten::size", "aten::Int", "prim::NumToTensor", "aten::scaled_dot_product_attention"}
    for node in _graph_nodes(graph):
        for value in node.outputs():
            if not isinstance(value.type(), torch._C.TensorType):
                continue
            if node.kind() == "prim::GetAttr":
                continue  # parameters, checked below
            rank = value.type().dim()
            assert rank is not None and rank <= 4, (node.kind(), rank)
    # Parameters keep diffusers' shapes: the frame convs' weights are rank 5, never more.
    assert max(p.dim() for p in module.parameters()) <= 5
    with torch.no_grad():
        assert _rel_err(traced(example), module(example)) <= 1e-6


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_coreml_conversion(vaes, which):
    ct = pytest.importorskip("coremltools")
    if which == "encoder":
        # The wide VAE: channel changes, shortcut convs, the mid-block attention and softmax.
        module, name, shape = vaes["wide"][1].encoder_module(), "image", (1, 3, 32, 48)
    else:
        module, name, shape = vaes["small"][1].decoder_module(2), "latent", (2, 4, 4, 6)
    traced = _trace(module, torch.randn(shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name=name, shape=shape)], convert_to="mlprogram",
                             minimum_deployment_target=ct.target.iOS17)
    spec = mlmodel.get_spec()
    [output] = spec.description.output
    if which == "encoder":
        expected = (shape[0], 16, shape[2] // 8, shape[3] // 8)
    else:
        expected = (shape[0], 3, shape[2] * 8, shape[3] * 8)
    assert tuple(output.type.multiArrayType.shape) == expected
    main = spec.mlProgram.functions["main"]
    ops = main.block_specializations[main.opset].operations
    ranks = [value.type.tensorType.rank for op in ops for value in op.outputs
             if value.type.WhichOneof("type") == "tensorType"]
    assert max(ranks) <= 4  # group norm written out: not even the converter goes to rank 5
