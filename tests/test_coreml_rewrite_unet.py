"""The conversion-ready SVD UNet rewrite (export/coreml/rewrites/unet.py): same state dict and
same function as diffusers' UNetSpatioTemporalConditionModel, exact chunking, chunk plans,
no rank > 5 tensor in its traced graph, and it converts with coremltools."""
from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from conftest import RANDOM_UNET_CONFIG
from refocus_edge.export.coreml.rewrites.unet import MODEL_INPUTS, MODEL_OUTPUT, ConvertibleUNet, UNetChunk, plan_chunks

TWO_LEVELS = RANDOM_UNET_CONFIG  # the conftest refocuser's UNet: 2 levels, heads (1, 2)


# The full SVD layout in miniature: 4 levels (default block types), 2 layers per block (3
# resnets per up block), per-level transformer depths, heads (1, 2, 2, 4).
FOUR_LEVELS = dict(
    in_channels=8, out_channels=4, block_out_channels=(32, 32, 64, 64), addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24, layers_per_block=2, cross_attention_dim=32,
    transformer_layers_per_block=(1, 2, 1, 1), num_attention_heads=(1, 2, 2, 4), num_frames=4)


def _three_levels():
    from training.tiny_architecture import UNET_CONFIG  # 3 levels, heads (1, 2, 4)

    return dict(UNET_CONFIG)


def _random_unet(config: dict, seed: int):
    """A diffusers UNet with every parameter perturbed, the zero-initialised ones (proj_out,
    conv_out) included, and mix factors spread well away from 0.5: nothing passes through
    zeros or through an even blend by accident."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**config).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            p.add_(torch.randn_like(p) * (1.5 if name.endswith("mix_factor") else 0.1))
    return unet


def _inputs(unet_config: dict, shape, seed: int = 1):
    b = shape[0]
    g = torch.Generator().manual_seed(seed)
    n_ids = unet_config["projection_class_embeddings_input_dim"] // unet_config["addition_time_embed_dim"]
    sample = torch.randn(*shape, generator=g)
    timestep = 0.25 * torch.log(torch.rand(b, generator=g) * 50 + 0.02)  # 0.25 ln(sigma), as the sampler
    context = torch.randn(b, 1, unet_config["cross_attention_dim"], generator=g)
    added = torch.stack([torch.full((b,), 6.0), torch.full((b,), 127.0), torch.rand(b, generator=g) * 0.1], 1)
    return sample, timestep, context, added[:, :n_ids]


def _diffusers(unet, inputs):
    sample, timestep, context, added = inputs
    return unet(sample, timestep, encoder_hidden_states=context, added_time_ids=added, return_dict=False)[0]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def two_levels():
    unet = _random_unet(TWO_LEVELS, seed=0)
    return unet, ConvertibleUNet.from_diffusers(unet)


@pytest.fixture(scope="module")
def three_levels():
    unet = _random_unet(_three_levels(), seed=1)
    return unet, ConvertibleUNet.from_diffusers(unet)


@pytest.fixture(scope="module")
def four_levels():
    unet = _random_unet(FOUR_LEVELS, seed=2)
    return unet, ConvertibleUNet.from_diffusers(unet)


@pytest.mark.parametrize("which", ["two_levels", "three_levels", "four_levels"])
def test_state_dict_is_the_diffusers_one(which, request):
    unet, _ = request.getfixturevalue(which)
    ours = ConvertibleUNet(dict(unet.config))
    theirs = unet.state_dict()
    assert list(ours.state_dict()) == list(theirs)  # same keys, same order
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    ours.load_state_dict(theirs, strict=True)
    # from_diffusers shares the diffusers storage instead of copying it.
    shared = ConvertibleUNet.from_diffusers(unet)
    assert shared.conv_in.weight.data_ptr() == unet.conv_in.weight.data_ptr()
    assert sum(shared.stage_parameter_count(i) for i in range(len(shared.stage_names()))) == \
        sum(p.numel() for p in unet.parameters())


@pytest.mark.parametrize("which, shape", [
    ("two_levels", (1, 3, 8, 8, 8)),
    ("two_levels", (2, 4, 8, 8, 8)),
    ("two_levels", (2, 3, 8, 6, 10)),  # non-square
    ("three_levels", (1, 3, 32, 16, 16)),
    ("three_levels", (2, 2, 32, 8, 12)),  # non-square
    ("three_levels", (1, 2, 32, 10, 6)),  # not divisible by 4: forwarded upsample sizes
    ("four_levels", (2, 3, 8, 16, 8)),
    ("four_levels", (1, 2, 8, 12, 10)),  # not divisible by 8
])
def test_forward_matches_diffusers(which, shape, request):
    unet, ours = request.getfixturevalue(which)
    inputs = _inputs(dict(unet.config), shape)
    with torch.no_grad():
        expected = _diffusers(unet, inputs)
        got = ours(*inputs)
    assert got.shape == expected.shape
    assert expected.abs().max() > 0.1  # a real signal, not zeros
    assert _rel_err(got, expected) <= 1e-4


def test_scalar_timestep_is_broadcast(two_levels):
    unet, ours = two_levels
    sample, _, context, added = _inputs(dict(unet.config), (2, 2, 8, 8, 8))
    with torch.no_grad():
        expected = _diffusers(unet, (sample, torch.tensor(0.7), context, added))
        got = ours(sample, torch.tensor(0.7), context, added)
    assert _rel_err(got, expected) <= 1e-4


def test_shipped_model_matches():
    from refocus_edge.runtime.loading import load_refocuser

    unet = load_refocuser("refocus-tiny").unet
    ours = ConvertibleUNet.from_diffusers(unet)
    inputs = _inputs(dict(unet.config), (2, int(unet.config.num_frames), int(unet.config.in_channels), 16, 16))
    with torch.no_grad():
        expected = _diffusers(unet, inputs)
        got = ours(*inputs)
    assert _rel_err(got, expected) <= 1e-4


def _run_chunks(unet: ConvertibleUNet, plan, inputs):
    """Run the plan's chunks over one pool of named tensors, checking the announced shapes."""
    pool = dict(zip(MODEL_INPUTS, inputs))
    for start, stop in plan:
        chunk = UNetChunk(unet, start, stop)
        assert not set(chunk.input_names) & set(chunk.output_names)  # Core ML needs distinct names
        assert [tuple(pool[n].shape) for n in chunk.input_names] == chunk.input_shapes(inputs[0].shape)
        out = chunk(*(pool[n] for n in chunk.input_names))
        out = out if isinstance(out, tuple) else (out,)
        assert [tuple(t.shape) for t in out] == chunk.output_shapes(inputs[0].shape), (start, stop)
        pool.update(zip(chunk.output_names, out))
    return pool[MODEL_OUTPUT]


def _chain_chunks(unet: ConvertibleUNet, plan, inputs):
    """pass_through chunks: each one's outputs are the next one's inputs, in order."""
    x = tuple(inputs)
    for start, stop in plan:
        chunk = UNetChunk(unet, start, stop, pass_through=True)
        assert [tuple(t.shape) for t in x] == chunk.input_shapes(inputs[0].shape)
        x = chunk(*x)
        x = x if isinstance(x, tuple) else (x,)
    assert len(x) == 1
    return x[0]


@pytest.mark.parametrize("which, shape", [("three_levels", (2, 3, 32, 10, 6)), ("four_levels", (1, 2, 8, 12, 10))])
def test_chunks_in_sequence_equal_forward(which, shape, request):
    unet, ours = request.getfixturevalue(which)
    n = len(ours.stage_names())
    levels = len(unet.config.block_out_channels)
    assert ours.stage_names() == (["embed"] + [f"down_{i}" for i in range(levels)] + ["mid"]
                                  + [f"up_{i}" for i in range(levels)] + ["out"])
    for pass_through in (False, True):
        assert UNetChunk(ours, 0, 1, pass_through).input_names == list(MODEL_INPUTS)
        assert UNetChunk(ours, 0, n, pass_through).output_names == [MODEL_OUTPUT]
        assert UNetChunk(ours, n - 1, n, pass_through).output_names == [MODEL_OUTPUT]
    if which == "three_levels":
        # down_1 (level 1, cross-attention) needs neither the skips of level 0 nor mid's output.
        chunk = UNetChunk(ours, 2, 3)
        assert chunk.input_names == ["emb", "context", "skip_2"] and chunk.output_names == ["skip_3", "skip_4"]
    inputs = _inputs(dict(unet.config), shape)
    total = sum(ours.stage_parameter_count(i) for i in range(n)) * 2
    plans = [[(0, n)], [(i, i + 1) for i in range(n)], [(0, 4), (4, 5), (5, n)]]
    plans += [plan_chunks(ours, total // parts, 2) for parts in (2, 3, 5)]
    with torch.no_grad():
        expected = ours(*inputs)
        for plan in plans:
            assert [s for s, _ in plan] == [0] + [e for _, e in plan[:-1]] and plan[-1][1] == n
            assert torch.equal(_run_chunks(ours, plan, inputs), expected), plan
            assert torch.equal(_chain_chunks(ours, plan, inputs), expected), plan


def test_chunk_interfaces_are_the_unet_spec(four_levels):
    """The rewrite's model inputs and output are the UNet spec's tensors, and chunk boundary shapes
    computed from the spec's input shapes equal those derived from the sample shape alone."""
    from refocus_edge.runtime.components import UNET, ModelDims, component_specs

    _, ours = four_levels
    cfg = ours.config
    dims = ModelDims(latent_channels=cfg["out_channels"], embed_dim=cfg["cross_attention_dim"], clip_size=(64, 64),
                     vae_scale_factor=8, num_frames=cfg["num_frames"], decode_chunk_sizes=(4, 1),
                     resolutions=((96, 80),))
    spec = component_specs(dims)[UNET]
    assert list(MODEL_INPUTS) == spec.input_names and [MODEL_OUTPUT] == spec.output_names
    shapes = spec.input_shapes("opt")
    assert ours.model_input_shapes(shapes["sample"]) == shapes
    assert ours.boundary_shapes(shapes) == ours.boundary_shapes(shapes["sample"])
    n = len(ours.stage_names())
    assert UNetChunk(ours, 0, 2).input_shapes(shapes) == [shapes[name] for name in UNetChunk(ours, 0, 2).input_names]
    assert UNetChunk(ours, 2, n).output_shapes(shapes) == [(2, 4, 4, 10, 12)]


def test_chunk_holds_only_its_own_weights(three_levels):
    _, ours = three_levels
    chunk = UNetChunk(ours, 4, 6)  # mid, up_0
    assert sum(p.numel() for p in chunk.parameters()) == ours.stage_parameter_count(4) + ours.stage_parameter_count(5)
    with pytest.raises(ValueError):
        UNetChunk(ours, 3, 3)


class _ToyStages:
    """Just what plan_chunks reads from a UNet: the stages and their parameter counts."""

    def __init__(self, counts):
        self.counts = list(counts)

    def stage_names(self):
        return [f"s{i}" for i in range(len(self.counts))]

    def stage_parameter_count(self, i):
        return self.counts[i]


def _best_plan_by_brute_force(counts, max_bytes, bpp):
    """(chunk count, largest chunk) of the best valid plan: every chunk within the limit
    unless it is a single stage; fewest chunks first, then the smallest largest chunk."""
    n, best = len(counts), None
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        sizes = [sum(counts[a:b]) * bpp for a, b in zip(bounds, bounds[1:])]
        if all(s <= max_bytes or b - a == 1 for s, a, b in zip(sizes, bounds, bounds[1:])):
            key = (len(sizes), max(sizes))
            best = key if best is None or key < best else best
    return best


def test_plan_chunks_fewest_and_balanced():
    toy = _ToyStages([4, 4, 4, 4, 4, 4])
    assert plan_chunks(toy, 100, 1) == [(0, 6)]
    # Greedy packing would give 16 + 8; the same two chunks balanced give 12 + 12.
    assert plan_chunks(toy, 16, 1) == [(0, 3), (3, 6)]
    # A stage over the limit stands alone; the stages around it are planned as usual.
    assert plan_chunks(_ToyStages([3, 3, 20, 3, 3]), 10, 1) == [(0, 2), (2, 3), (3, 5)]
    assert plan_chunks(_ToyStages([3, 3, 20, 3, 3]), 20, 2) == [(0, 2), (2, 3), (3, 5)]
    rng = random.Random(0)
    for _ in range(200):
        counts = [rng.randint(1, 20) for _ in range(rng.randint(1, 9))]
        max_bytes, bpp = rng.randint(10, 60), rng.choice([1, 2])
        plan = plan_chunks(_ToyStages(counts), max_bytes, bpp)
        assert plan[0][0] == 0 and plan[-1][1] == len(counts)
        assert all(a < b and b == c for (a, b), (c, _) in zip(plan, plan[1:]))
        sizes = [sum(counts[a:b]) * bpp for a, b in plan]
        assert all(s <= max_bytes or b - a == 1 for s, (a, b) in zip(sizes, plan))
        assert (len(plan), max(sizes)) == _best_plan_by_brute_force(counts, max_bytes, bpp), counts


def test_plan_chunks_on_a_unet(three_levels):
    _, ours = three_levels
    n = len(ours.stage_names())
    counts = [ours.stage_parameter_count(i) for i in range(n)]
    limit = max(counts) * 2  # every stage fits alone (fp16)
    plan = plan_chunks(ours, limit, 2)
    assert all(sum(counts[a:b]) * 2 <= limit for a, b in plan)
    assert len(plan) == _best_plan_by_brute_force(counts, limit, 2)[0] > 1


def _traced_ranks(module, inputs) -> list[int]:
    traced = torch.jit.trace(module, inputs, check_trace=False)
    ranks = []
    for node in traced.inlined_graph.nodes():
        for value in node.outputs():
            kind = value.type()
            if isinstance(kind, torch._C.TensorType) and kind.dim() is not None:
                ranks.append(kind.dim())
    return ranks


def test_traced_graph_has_no_tensor_above_rank_5(two_levels):
    unet, ours = two_levels
    inputs = _inputs(dict(unet.config), (2, 3, 8, 8, 8))
    with torch.no_grad():
        ranks = _traced_ranks(ours, inputs)
    assert max(ranks) == 5 and ranks.count(5) == 1  # only out_sample [B, F, C, h, w]
    assert ranks.count(4) > 0
    chunk = UNetChunk(ours, 1, 5)  # down_0 .. up_0: rank <= 4 throughout
    with torch.no_grad():
        x = UNetChunk(ours, 0, 1)(*inputs)
        assert max(_traced_ranks(chunk, x)) <= 4


def _convert(module, names, example, output_names):
    import coremltools as ct

    traced = torch.jit.trace(module, tuple(example), check_trace=False)
    return ct.convert(traced, inputs=[ct.TensorType(name=n, shape=tuple(t.shape)) for n, t in zip(names, example)],
                      outputs=[ct.TensorType(name=n) for n in output_names],
                      convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17)


def test_coreml_converts_the_unet(two_levels):
    pytest.importorskip("coremltools")
    unet, ours = two_levels
    inputs = _inputs(dict(unet.config), (1, 2, 8, 8, 8))
    with torch.no_grad():
        model = _convert(ours, list(MODEL_INPUTS), inputs, [MODEL_OUTPUT])
    outputs = model.get_spec().description.output
    assert [(o.name, list(o.type.multiArrayType.shape)) for o in outputs] == [(MODEL_OUTPUT, [1, 2, 4, 8, 8])]
    # The converted program keeps rank <= 4 too, apart from the rank-5 output's reshape.
    ranks = [value.rank for function in model._mil_program.functions.values()
             for op in function.operations for value in op.outputs if hasattr(value, "rank")]
    assert max(ranks) == 5 and ranks.count(5) == 1


def test_coreml_converts_a_chunk(two_levels):
    pytest.importorskip("coremltools")
    unet, ours = two_levels
    inputs = _inputs(dict(unet.config), (1, 2, 8, 8, 8))
    chunk = UNetChunk(ours, 0, 2)  # embed, down_0 (attention): several outputs
    with torch.no_grad():
        example = [torch.randn(s) for s in chunk.input_shapes(inputs[0].shape)]
        model = _convert(chunk, chunk.input_names, example, chunk.output_names)
    spec = model.get_spec().description
    assert [i.name for i in spec.input] == chunk.input_names
    assert [(o.name, list(o.type.multiArrayType.shape)) for o in spec.output] == \
        [(n, list(s)) for n, s in zip(chunk.output_names, chunk.output_shapes(inputs[0].shape))]


def test_unsupported_configs_and_inputs_raise(two_levels):
    with pytest.raises(ValueError, match="down block type"):
        ConvertibleUNet(dict(TWO_LEVELS, down_block_types=("CrossAttnDownBlock3D", "DownBlockSpatioTemporal")))
    with pytest.raises(ValueError, match="config keys"):
        ConvertibleUNet(dict(TWO_LEVELS, dropout=0.1))
    with pytest.raises(ValueError, match="divisible"):
        ConvertibleUNet(dict(TWO_LEVELS, num_attention_heads=(3, 2)))
    with pytest.raises(ValueError, match="same nonzero length"):
        ConvertibleUNet(dict(TWO_LEVELS, block_out_channels=(32, 64, 64)))
    unet, ours = two_levels
    sample, timestep, context, added = _inputs(dict(unet.config), (1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="one token"):
        ours(sample, timestep, context.expand(1, 2, -1), added)
    with torch.no_grad():
        assert math.isfinite(float(ours(sample, timestep, context, added).abs().max()))
