"""A conversion-ready rewrite of diffusers' `UNetSpatioTemporalConditionModel` (the SVD UNet).

coremltools rejects the diffusers UNet as it is: its attention processors read tensor
shapes at run time (traced into `aten::Int` of non-scalars), and the spatio-temporal
blocks compute on rank-5 tensors (and rank-6 reshapes once torch.export decomposes them).
`ConvertibleUNet` mirrors the diffusers attribute tree, so its state dict is the diffusers
one key for key and shape for shape, and computes the same function with:

  * every shape read as a Python int (`_ints`): under `torch.jit.trace` it becomes a
    constant, which is what a Core ML package wants (its shapes are static anyway);
  * spatial work on [B*F, C, H, W] (frames folded into the batch, as diffusers does);
  * temporal convolutions on [B, C, F, H*W]: the (3, 1, 1) Conv3d is a (3, 1) Conv2d with
    the frames as the height axis (its weight keeps the rank-5 diffusers shape as a
    parameter and is squeezed before use);
  * group norm written out on [N, G, C/G * rest] (coremltools lowers aten::group_norm
    through a rank-5 reshape);
  * tokens as [B*F, H*W, C] for spatial attention and [B*H*W, F, C] for temporal
    attention, heads split into a rank-4 [N, heads, L, head_dim] batched matmul with a
    plain softmax (no scaled_dot_product_attention);
  * cross-attention against the single CLIP token computed exactly without attention:
    softmax over one key is 1, so every query gets to_out(to_v(token)) (the shortcut of
    runtime/fast_attention.py);
  * image_only_indicator fixed at zero (as the pipeline passes it): every AlphaBlender
    ("learned_with_images") mixes with the constant sigmoid(mix_factor).

No activation has rank > 4 except the rank-5 model input `sample` and output `out_sample`
(the flat interface of runtime/component_modules.py's UNetComponent).

Chunking. The forward is a fixed sequence of named stages over a named state:

    embed, down_0 .. down_{n-1}, mid, up_0 .. up_{n-1}, out

  embed   reads sample, timestep, encoder_hidden_states, added_time_ids and writes
          emb [B, 4*C0] (time + added-time embedding, one row per video: the frames of a
          video share it), context [B, D] (the CLIP token) and skip_0 (conv_in output);
  down_i  reads the newest skip (its input), emb and, with attention, context; writes one
          skip per layer and one for its downsampler (the newest skip doubles as the
          running hidden state, so no tensor is held under two names);
  mid     reads the newest skip, emb, context; writes mid_out;
  up_i    reads the previous stage's output, emb, context (with attention) and the skips
          it concatenates; writes up_i_out. Its upsampler takes its output size from the
          next skip still waiting (diffusers' forwarded upsample size; plain 2x whenever
          the latent size divides by 2^(levels-1));
  out     reads the last up output (and emb, only for the batch size); writes out_sample.

Every skip / stage output is [B*F, C, H, W], and every tensor name is written once, so a
name identifies one tensor. `UNetChunk(unet, start, stop)` runs stages [start, stop); its
inputs are the tensors alive at boundary `start` that it reads and its outputs the ones it
writes that are still needed at boundary `stop` (so input and output names never collide,
which Core ML requires, and skips a chunk does not use stay out of its package). A runner
keeps one pool of named tensors across chunks (runtime/backends/chain.py does);
`pass_through=True` instead gives every tensor alive at the two boundaries, so that chunk
k's outputs are chunk k+1's inputs in order and `x = chunk(*x)` chains them. Two reads
are for shapes only (the waiting skip that sizes an up stage's upsampler, emb in `out`):
a chunk ending right after such a stage has that input unused in its traced graph, which
coremltools accepts (the package just keeps the input).
`plan_chunks` splits the stages into the fewest, most balanced weight budgets.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from refocus_edge.export.coreml.rewrites.layers import group_norm, static_shape
from refocus_edge.runtime.components import UNET_INPUTS, UNET_OUTPUT

NORM_GROUPS = 32
CROSS_DOWN = "CrossAttnDownBlockSpatioTemporal"
PLAIN_DOWN = "DownBlockSpatioTemporal"
CROSS_UP = "CrossAttnUpBlockSpatioTemporal"
PLAIN_UP = "UpBlockSpatioTemporal"
# The UNet component's tensor names, as its spec names them (the first chunk's inputs, the last one's output).
MODEL_INPUTS, MODEL_OUTPUT = UNET_INPUTS, UNET_OUTPUT

# Defaults of UNetSpatioTemporalConditionModel.__init__ (the SVD img2vid UNet), used for
# the keys a config leaves out.
DEFAULT_CONFIG = dict(
    sample_size=None,
    in_channels=8,
    out_channels=4,
    down_block_types=(CROSS_DOWN, CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN),
    up_block_types=(PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP),
    block_out_channels=(320, 640, 1280, 1280),
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=768,
    layers_per_block=2,
    cross_attention_dim=1024,
    transformer_layers_per_block=1,
    num_attention_heads=(5, 10, 20, 20),
    num_frames=25,
)

# Resnet epsilons as diffusers' blocks hard-code them (get_up_block does not forward the
# UNet's 1e-5 to the spatio-temporal up blocks, which keep their 1e-6 default).
_EPS_CROSS_DOWN, _EPS_PLAIN_DOWN, _EPS_MID, _EPS_UP = 1e-6, 1e-5, 1e-5, 1e-6


class Sinusoid(nn.Module):
    """diffusers' Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0): [cos | sin]
    of value * exp(-ln(10000) * k / (dim // 2)), zero-padded to an odd `dim`. No weights."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        half = self.dim // 2
        # Evaluated in float32 in the order diffusers evaluates it, so the frequencies are
        # the same floats; held as Python floats (not a buffer) so the state dict stays the
        # diffusers one, the meta device cannot swallow them and .half() cannot round them.
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device="cpu")
        self.freqs = torch.exp(exponent / max(half, 1)).tolist()

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """values [...] -> [..., dim], float32 (the caller casts, as diffusers does)."""
        with warnings.catch_warnings():
            # The tracer warns that torch.tensor is recorded as a constant: it is one.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            freqs = torch.tensor(self.freqs, dtype=torch.float32, device=values.device)
        arg = values.float().unsqueeze(-1) * freqs
        out = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)
        if self.dim % 2:
            out = F.pad(out, (0, 1))
        return out


class TimestepMLP(nn.Module):
    """diffusers' TimestepEmbedding: linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_dim)
        self.linear_2 = nn.Linear(hidden_dim, out_dim or hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class Mixer(nn.Module):
    """diffusers' AlphaBlender("learned_with_images") with image_only_indicator all zero:
    alpha = sigmoid(mix_factor) for every frame, out = alpha * spatial + (1 - alpha) * temporal."""

    def __init__(self, alpha: float = 0.5):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.full((1,), float(alpha)))

    def forward(self, x_spatial: torch.Tensor, x_temporal: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.mix_factor).to(x_spatial.dtype)
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


# ----------------------------------------------------------------------------- resnets


class SpatialResnet(nn.Module):
    """diffusers' ResnetBlock2D as the SVD UNet builds it (groups 32, SiLU, additive time
    embedding, output_scale_factor 1), on x [B*F, C, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, b: int, f: int) -> torch.Tensor:
        h = self.conv1(F.silu(group_norm(x, self.norm1)))
        # One projection per video, repeated per frame: diffusers repeats emb per frame
        # first, which gives the same rows.
        t = self.time_emb_proj(F.silu(emb))
        c = static_shape(t)[1]
        h = h + t.reshape(b, 1, c).expand(b, f, c).reshape(b * f, c, 1, 1)
        h = self.conv2(F.silu(group_norm(h, self.norm2)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


def _frame_conv(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A (k, 1, 1) Conv3d on [B, C, F, H, W] as a (k, 1) Conv2d on [B, C, F, H*W]: the same
    weights (squeezed from rank 5 to rank 4), the same zero padding along frames."""
    return F.conv2d(x, conv.weight.squeeze(-1), conv.bias, padding=(int(conv.padding[0]), 0))


class TemporalResnet(nn.Module):
    """diffusers' TemporalResnetBlock on x [B, C, F, H*W].

    The Conv3d leaves are kept (never called) so the parameters have the diffusers names,
    shapes and initialisation; `_frame_conv` computes with them at rank 4. Group norm on
    [B, C, F, H*W] has the same groups (C/G x F x H x W) as on the rank-5 original."""

    def __init__(self, channels: int, temb_channels: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, channels, eps=eps)
        self.conv1 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.time_emb_proj = nn.Linear(temb_channels, channels)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, channels, eps=eps)
        self.conv2 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = _frame_conv(self.conv1, F.silu(group_norm(x, self.norm1)))
        # emb is the same for every frame of a video, so one [B, C, 1, 1] term per video.
        h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = _frame_conv(self.conv2, F.silu(group_norm(h, self.norm2)))
        return x + h


class SpatioTemporalResnet(nn.Module):
    """diffusers' SpatioTemporalResBlock: spatial resnet, then a temporal resnet mixed in."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, eps: float):
        super().__init__()
        self.spatial_res_block = SpatialResnet(in_channels, out_channels, temb_channels, eps)
        self.temporal_res_block = TemporalResnet(out_channels, temb_channels, eps)
        self.time_mixer = Mixer(0.5)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, b: int, f: int) -> torch.Tensor:
        x = self.spatial_res_block(x, emb, b, f)
        bf, c, h, w = static_shape(x)
        # [B*F, C, H, W] -> [B, C, F, H*W]: channels first for the frame convolution, frames
        # as its height axis; one transpose in and one out instead of rank-5 tensors.
        xt = x.reshape(b, f, c, h * w).permute(0, 2, 1, 3)
        mixed = self.time_mixer(xt, self.temporal_res_block(xt, emb))
        return mixed.permute(0, 2, 1, 3).reshape(bf, c, h, w)


# ----------------------------------------------------------------------------- attention


class Attention(nn.Module):
    """diffusers' Attention as the SVD transformer blocks build it (no q/k/v bias, output
    projection with bias, scale head_dim ** -0.5), keys to_q/to_k/to_v/to_out.0."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = int(heads), int(head_dim)
        inner = self.heads * self.head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        # diffusers' to_out.1 is a Dropout(0.0): nothing to keep, the Linear stays at index 0.
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over x [N, L, C] (N independent sequences of length L)."""
        n, length, _ = static_shape(x)
        heads, d = self.heads, self.head_dim
        # [N, L, heads*d] -> [N, heads, L, d]: one rank-4 batched matmul over all heads.
        q = self.to_q(x).reshape(n, length, heads, d).permute(0, 2, 1, 3)
        k = self.to_k(x).reshape(n, length, heads, d).permute(0, 2, 3, 1)  # [N, heads, d, L]
        v = self.to_v(x).reshape(n, length, heads, d).permute(0, 2, 1, 3)
        scores = torch.matmul(q * (d ** -0.5), k)  # [N, heads, L, L]
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(n, length, heads * d)
        return self.to_out[0](out)

    def single_token(self, context: torch.Tensor) -> torch.Tensor:
        """Cross-attention output against one context token, context [B, D] -> [B, C].

        Softmax over a single key is exactly 1, so every query receives that token's value:
        the queries (to_q, to_k and the norm before them) do not change the result."""
        return self.to_out[0](self.to_v(context))


class GEGLU(nn.Module):
    """diffusers' GEGLU: proj to 2*inner, first half * gelu(second half) (exact erf GELU)."""

    def __init__(self, dim_in: int, inner: int):
        super().__init__()
        self.inner = int(inner)
        self.proj = nn.Linear(dim_in, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return h[..., : self.inner] * F.gelu(h[..., self.inner:])


class FeedForward(nn.Module):
    """diffusers' FeedForward(activation_fn="geglu", mult=4): keys net.0.proj and net.2."""

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4):
        super().__init__()
        inner = dim * mult
        # net.1 is diffusers' Dropout(0.0); Identity keeps the output projection at net.2.
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim_out or dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


def _per_frame(rows: torch.Tensor, b: int, repeats: int) -> torch.Tensor:
    """[B, C] -> [B*repeats, 1, C]: one row per sequence of each video (broadcast over tokens)."""
    c = static_shape(rows)[1]
    return rows.reshape(b, 1, c).expand(b, repeats, c).reshape(b * repeats, 1, c)


class SpatialTransformerBlock(nn.Module):
    """diffusers' BasicTransformerBlock (layer norms, self-attn, cross-attn, GEGLU FF) on
    tokens [B*F, H*W, C]."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)  # feeds only the cross-attention queries: unused
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, b: int, f: int) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = _per_frame(self.attn2.single_token(context), b, f) + x
        return self.ff(self.norm3(x)) + x


class TemporalTransformerBlock(nn.Module):
    """diffusers' TemporalBasicTransformerBlock on tokens [B*H*W, F, C] (attention along
    frames). time_mix_inner_dim equals dim in the SVD UNet, so both residuals apply."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim_out=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)  # feeds only the cross-attention queries: unused
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, b: int, positions: int) -> torch.Tensor:
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        # diffusers' time context is the first frame's token of each video, broadcast to
        # every spatial position: the video's CLIP token (all frames carry the same one).
        x = _per_frame(self.attn2.single_token(context), b, positions) + x
        return self.ff(self.norm3(x)) + x


class SpatioTemporalTransformer(nn.Module):
    """diffusers' TransformerSpatioTemporalModel on x [B*F, C, H, W]."""

    def __init__(self, channels: int, heads: int, num_layers: int, context_dim: int):
        super().__init__()
        head_dim = channels // heads
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [SpatialTransformerBlock(channels, heads, head_dim, context_dim) for _ in range(num_layers)])
        self.temporal_transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, heads, head_dim, context_dim) for _ in range(num_layers)])
        self.time_pos_embed = TimestepMLP(channels, 4 * channels, channels)
        self.time_proj = Sinusoid(channels)
        self.time_mixer = Mixer(0.5)
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, b: int, f: int) -> torch.Tensor:
        bf, c, h, w = static_shape(x)
        hw = h * w
        # Tokens [B*F, H*W, C]: channels last, so the linears and layer norms act on the
        # last axis and each frame is one attention batch entry.
        tokens = group_norm(x, self.norm).permute(0, 2, 3, 1).reshape(bf, hw, c)
        tokens = self.proj_in(tokens)
        # Frame-position embedding [F, C]; added to each frame's tokens as [1, F, 1, C].
        frames = torch.arange(f, dtype=torch.float32, device=x.device)
        pos = self.time_pos_embed(self.time_proj(frames).to(x.dtype)).reshape(1, f, 1, c)
        for spatial, temporal in zip(self.transformer_blocks, self.temporal_transformer_blocks):
            tokens = spatial(tokens, context, b, f)
            # [B*F, H*W, C] -> [B, H*W, F, C] -> [B*H*W, F, C]: every pixel's frames become
            # one sequence for attention along time.
            t = (tokens.reshape(b, f, hw, c) + pos).permute(0, 2, 1, 3).reshape(b * hw, f, c)
            t = temporal(t, context, b, hw)
            t = t.reshape(b, hw, f, c).permute(0, 2, 1, 3).reshape(bf, hw, c)
            tokens = self.time_mixer(tokens, t)
        out = self.proj_out(tokens).reshape(bf, h, w, c).permute(0, 3, 1, 2)
        return out + x


# ----------------------------------------------------------------------------- blocks


class Downsample(nn.Module):
    """diffusers' Downsample2D(use_conv=True, padding=1): a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """diffusers' Upsample2D(use_conv=True): nearest resize, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = static_shape(x)[2:]
        if tuple(size) == (2 * h, 2 * w):
            # The usual case, as diffusers does it without a forwarded size: a plain 2x
            # nearest upsample (Core ML's upsample_nearest_neighbor).
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            # Odd sizes upstream: diffusers forwards the skip's size (2x would overshoot).
            x = F.interpolate(x, size=(int(size[0]), int(size[1])), mode="nearest")
        return self.conv(x)


def _transformers(channels: int, heads: int | None, layers: Sequence[int], context_dim: int | None,
                  num_layers: int) -> nn.ModuleList | None:
    """A block's spatio-temporal transformers, one per resnet; None for a block without attention."""
    if heads is None:
        return None
    return nn.ModuleList([SpatioTemporalTransformer(channels, heads, layers[j], context_dim) for j in range(num_layers)])


class DownBlock(nn.Module):
    """diffusers' CrossAttnDownBlockSpatioTemporal (heads given) or DownBlockSpatioTemporal."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int,
                 add_downsample: bool, eps: float, heads: int | None = None,
                 transformer_layers: Sequence[int] = (), context_dim: int | None = None):
        super().__init__()
        # Registered first, as in diffusers (state-dict order).
        self.attentions = _transformers(out_channels, heads, transformer_layers, context_dim, num_layers)
        self.resnets = nn.ModuleList([
            SpatioTemporalResnet(in_channels if j == 0 else out_channels, out_channels, temb_channels, eps)
            for j in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if add_downsample else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None,
                b: int, f: int) -> list[torch.Tensor]:
        """Every layer's output, then the downsampled one: the skips this block provides."""
        outputs = []
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, emb, b, f)
            if self.attentions is not None:
                x = self.attentions[j](x, context, b, f)
            outputs.append(x)
        if self.downsamplers is not None:
            outputs.append(self.downsamplers[0](x))
        return outputs


class MidBlock(nn.Module):
    """diffusers' UNetMidBlockSpatioTemporal (one attention layer between two resnets)."""

    def __init__(self, channels: int, temb_channels: int, heads: int, transformer_layers: int,
                 context_dim: int):
        super().__init__()
        self.attentions = nn.ModuleList([SpatioTemporalTransformer(channels, heads, transformer_layers,
                                                                   context_dim)])
        self.resnets = nn.ModuleList([SpatioTemporalResnet(channels, channels, temb_channels, _EPS_MID)
                                      for _ in range(2)])

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, b: int, f: int) -> torch.Tensor:
        x = self.resnets[0](x, emb, b, f)
        for attention, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attention(x, context, b, f), emb, b, f)
        return x


class UpBlock(nn.Module):
    """diffusers' CrossAttnUpBlockSpatioTemporal (heads given) or UpBlockSpatioTemporal."""

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb_channels: int,
                 num_layers: int, add_upsample: bool, heads: int | None = None,
                 transformer_layers: Sequence[int] = (), context_dim: int | None = None):
        super().__init__()
        # Registered first, as in diffusers (state-dict order).
        self.attentions = _transformers(out_channels, heads, transformer_layers, context_dim, num_layers)
        resnets = []
        for j in range(num_layers):
            skip_channels = in_channels if j == num_layers - 1 else out_channels
            own_channels = prev_channels if j == 0 else out_channels
            resnets.append(SpatioTemporalResnet(own_channels + skip_channels, out_channels, temb_channels, _EPS_UP))
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if add_upsample else None

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor], emb: torch.Tensor,
                context: torch.Tensor | None, b: int, f: int,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """`skips` in the order the resnets take them (newest first)."""
        for j, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips[j]], dim=1), emb, b, f)
            if self.attentions is not None:
                x = self.attentions[j](x, context, b, f)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, size)
        return x


# ----------------------------------------------------------------------------- config


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def _per_level(value, n: int, what: str) -> list:
    """An int for every level, or one entry per level."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * n
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"{what} must be an int or a sequence of {n} (one per block), got {value!r}")
    return list(value)


def _per_layer(entry, num_layers: int, what: str) -> list[int]:
    """A level's transformer_layers_per_block entry for a block of `num_layers` layers:
    an int for each layer, or a sequence (diffusers reads its first num_layers values)."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        values = [entry] * num_layers
    elif isinstance(entry, (list, tuple)) and len(entry) >= num_layers:
        values = list(entry[:num_layers])
    else:
        raise ValueError(f"{what}: expected an int or a sequence of at least {num_layers} ints, got {entry!r}")
    return [_positive_int(v, what) for v in values]


@dataclass(frozen=True)
class Stage:
    """One step of the forward. `owners`: attribute paths whose parameters it owns;
    `reads` / `writes`: state tensors it uses (a read may be a shape-only peek) and defines."""

    name: str
    owners: tuple[str, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    skips: tuple[str, ...] = ()  # up stages: the skips its resnets take, newest first
    size_from: str | None = None  # up stages: the waiting skip whose H, W the upsampler produces


def _resolve_config(config: Mapping) -> dict:
    """The config with diffusers' defaults filled in, checked, and expanded per level."""
    unknown = sorted(k for k in config if not str(k).startswith("_") and k not in DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unsupported UNetSpatioTemporalConditionModel config keys: {unknown}")
    cfg = dict(DEFAULT_CONFIG)
    cfg.update({k: v for k, v in config.items() if not str(k).startswith("_")})
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    channels = [_positive_int(c, "block_out_channels") for c in cfg["block_out_channels"]]
    n = len(down)
    if n == 0 or len(up) != n or len(channels) != n:
        raise ValueError(f"down_block_types, up_block_types and block_out_channels need the same nonzero length, "
                         f"got {len(down)}, {len(up)}, {len(channels)}")
    for kind in down:
        if kind not in (CROSS_DOWN, PLAIN_DOWN):
            raise ValueError(f"unsupported down block type {kind!r} (supported: {CROSS_DOWN}, {PLAIN_DOWN})")
    for kind in up:
        if kind not in (CROSS_UP, PLAIN_UP):
            raise ValueError(f"unsupported up block type {kind!r} (supported: {CROSS_UP}, {PLAIN_UP})")
    for c in channels:
        if c % NORM_GROUPS:
            raise ValueError(f"block_out_channels must be multiples of {NORM_GROUPS} (group norm), got {channels}")
    heads = [_positive_int(h, "num_attention_heads") for h in _per_level(cfg["num_attention_heads"], n,
                                                                       "num_attention_heads")]
    layers = [_positive_int(v, "layers_per_block") for v in _per_level(cfg["layers_per_block"], n,
                                                                     "layers_per_block")]
    transformer_layers = _per_level(cfg["transformer_layers_per_block"], n, "transformer_layers_per_block")
    cross = cfg["cross_attention_dim"]
    cross_dims = {_positive_int(d, "cross_attention_dim") for d in _per_level(cross, n, "cross_attention_dim")}
    if len(cross_dims) != 1:
        raise ValueError(f"per-level cross_attention_dim with different values is unsupported (one "
                         f"encoder_hidden_states feeds every level), got {cross!r}")
    time_dim = _positive_int(cfg["addition_time_embed_dim"], "addition_time_embed_dim")
    projection = _positive_int(cfg["projection_class_embeddings_input_dim"], "projection_class_embeddings_input_dim")
    if projection % time_dim:
        raise ValueError(f"projection_class_embeddings_input_dim ({projection}) must be a multiple of "
                         f"addition_time_embed_dim ({time_dim}): one sinusoid per added time id")
    attention_levels = {i for i, kind in enumerate(down) if kind == CROSS_DOWN}
    attention_levels |= {n - 1 - i for i, kind in enumerate(up) if kind == CROSS_UP}
    attention_levels.add(n - 1)  # the mid block always has attention
    for level in sorted(attention_levels):
        if channels[level] % heads[level]:
            raise ValueError(f"block_out_channels[{level}]={channels[level]} is not divisible by "
                             f"num_attention_heads[{level}]={heads[level]}")
    return dict(
        in_channels=_positive_int(cfg["in_channels"], "in_channels"),
        out_channels=_positive_int(cfg["out_channels"], "out_channels"),
        down_block_types=tuple(down), up_block_types=tuple(up), block_out_channels=tuple(channels),
        addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=projection,
        layers_per_block=tuple(layers), cross_attention_dim=cross_dims.pop(),
        transformer_layers_per_block=tuple(transformer_layers), num_attention_heads=tuple(heads),
        num_frames=_positive_int(cfg["num_frames"], "num_frames"), sample_size=cfg["sample_size"],
    )


# ----------------------------------------------------------------------------- the UNet


def _run_stage(stage: Stage, module: Callable[[str], nn.Module], state: dict) -> None:
    """Run `stage` on `state` (name -> tensor) in place; `module(path)` gives its modules."""
    kind, _, index = stage.name.partition("_")
    if kind == "embed":
        sample, timestep, context, ids = (state[name] for name in MODEL_INPUTS)
        b, f, c, h, w = static_shape(sample)
        cb, tokens, d = static_shape(context)
        if tokens != 1:
            raise ValueError(f"encoder_hidden_states must hold one token per video ([B, 1, D]), got "
                             f"{tuple(context.shape)}: the rewrite's cross-attention is exact only for one token")
        if timestep.dim() == 0:
            timestep = timestep.reshape(1)
        timestep = timestep.expand(b)  # diffusers broadcasts a single timestep to the batch
        emb = module("time_embedding")(module("time_proj")(timestep).to(sample.dtype))
        n_ids = static_shape(ids)[1]
        added = module("add_time_proj")(ids)  # [B, n_ids, A]
        added = added.reshape(b, n_ids * module("add_time_proj").dim).to(emb.dtype)
        state["emb"] = emb + module("add_embedding")(added)
        state["context"] = context.reshape(cb, d)
        state["skip_0"] = module("conv_in")(sample.reshape(b * f, c, h, w))
        return
    emb = state["emb"]
    b = static_shape(emb)[0]
    if kind == "down":
        x = state[stage.reads[0]]
        f = static_shape(x)[0] // b
        outputs = module(f"down_blocks.{index}")(x, emb, state.get("context"), b, f)
        state.update(zip(stage.writes, outputs))
    elif kind == "mid":
        x = state[stage.reads[0]]
        state[stage.writes[0]] = module("mid_block")(x, emb, state["context"], b, static_shape(x)[0] // b)
    elif kind == "up":
        x = state.pop(stage.reads[0])
        size = static_shape(state[stage.size_from])[2:] if stage.size_from else None
        skips = [state.pop(name) for name in stage.skips]  # consumed: free them at once
        state[stage.writes[0]] = module(f"up_blocks.{index}")(x, skips, emb, state.get("context"), b,
                                                              static_shape(x)[0] // b, size)
    elif kind == "out":
        x = state.pop(stage.reads[0])
        bf, _, h, w = static_shape(x)
        y = module("conv_out")(F.silu(group_norm(x, module("conv_norm_out"))))
        state[MODEL_OUTPUT] = y.reshape(b, bf // b, static_shape(y)[1], h, w)
    else:  # pragma: no cover - stages are built by ConvertibleUNet
        raise ValueError(f"unknown stage {stage.name!r}")


class ConvertibleUNet(nn.Module):
    """UNetSpatioTemporalConditionModel, rewritten for Core ML conversion (see module doc).

    `ConvertibleUNet(dict(unet.config)).load_state_dict(unet.state_dict(), strict=True)`
    loads a diffusers UNet unchanged. forward(sample [B, F, in, h, w], timestep [B] (or a
    scalar / [1]), encoder_hidden_states [B, 1, D], added_time_ids [B, n_ids]) ->
    [B, F, out, h, w], with image_only_indicator all zero."""

    def __init__(self, config: Mapping):
        super().__init__()
        cfg = _resolve_config(config)
        self.config = cfg
        channels, n = cfg["block_out_channels"], len(cfg["block_out_channels"])
        heads, layers = cfg["num_attention_heads"], cfg["layers_per_block"]
        t_layers, context_dim = cfg["transformer_layers_per_block"], cfg["cross_attention_dim"]
        temb = 4 * channels[0]

        # Registration order follows diffusers', so state_dict() lists keys in its order.
        self.conv_in = nn.Conv2d(cfg["in_channels"], channels[0], 3, padding=1)
        self.time_proj = Sinusoid(channels[0])
        self.time_embedding = TimestepMLP(channels[0], temb)
        self.add_time_proj = Sinusoid(cfg["addition_time_embed_dim"])
        self.add_embedding = TimestepMLP(cfg["projection_class_embeddings_input_dim"], temb)
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg["down_block_types"]):
            cross = kind == CROSS_DOWN
            self.down_blocks.append(DownBlock(
                channels[max(i - 1, 0)], channels[i], temb, layers[i], add_downsample=i < n - 1,
                eps=_EPS_CROSS_DOWN if cross else _EPS_PLAIN_DOWN, heads=heads[i] if cross else None,
                transformer_layers=_per_layer(t_layers[i], layers[i], f"transformer_layers_per_block[{i}]")
                if cross else (), context_dim=context_dim))
        self.mid_block = MidBlock(channels[-1], temb, heads[-1],
                                  _per_layer(t_layers[-1], 1, "transformer_layers_per_block[-1]")[0], context_dim)
        for i, kind in enumerate(cfg["up_block_types"]):
            level = n - 1 - i  # up block i works at the resolution of down block n-1-i
            cross = kind == CROSS_UP
            self.up_blocks.append(UpBlock(
                in_channels=channels[max(level - 1, 0)], prev_channels=channels[min(level + 1, n - 1)],
                out_channels=channels[level], temb_channels=temb, num_layers=layers[level] + 1,
                add_upsample=i < n - 1, heads=heads[level] if cross else None,
                transformer_layers=_per_layer(t_layers[level], layers[level] + 1,
                                              f"transformer_layers_per_block[{level}]") if cross else (),
                context_dim=context_dim))
        self.conv_norm_out = nn.GroupNorm(NORM_GROUPS, channels[0], eps=1e-5)
        self.conv_out = nn.Conv2d(channels[0], cfg["out_channels"], 3, padding=1)
        self._stages = self._build_stages()

    @classmethod
    def from_diffusers(cls, unet) -> "ConvertibleUNet":
        """The rewrite of a diffusers UNetSpatioTemporalConditionModel, loaded strictly.

        Built on the meta device and loaded with assign=True, so it shares the diffusers
        model's weight storage (no copy, no random init: cheap even for the 1.5B SVD UNet)."""
        with torch.device("meta"):
            model = cls(dict(unet.config))
        model.load_state_dict(unet.state_dict(), strict=True, assign=True)
        return model.eval()

    # ------------------------------------------------------------------ stages

    def _build_stages(self) -> list[Stage]:
        cfg = self.config
        n = len(cfg["block_out_channels"])
        stages = [Stage("embed", ("conv_in", "time_proj", "time_embedding", "add_time_proj", "add_embedding"),
                        MODEL_INPUTS, ("emb", "context", "skip_0"))]
        skips = ["skip_0"]  # produced, not yet consumed (newest last)
        count = 1
        for i, kind in enumerate(cfg["down_block_types"]):
            produced = cfg["layers_per_block"][i] + (1 if i < n - 1 else 0)
            names = tuple(f"skip_{count + k}" for k in range(produced))
            count += produced
            reads = (skips[-1], "emb") + (("context",) if kind == CROSS_DOWN else ())
            stages.append(Stage(f"down_{i}", (f"down_blocks.{i}",), reads, names))
            skips.extend(names)
        stages.append(Stage("mid", ("mid_block",), (skips[-1], "emb", "context"), ("mid_out",)))
        previous = "mid_out"
        for i, kind in enumerate(cfg["up_block_types"]):
            taken = len(self.up_blocks[i].resnets)
            if taken > len(skips):
                raise ValueError("the up blocks take more skips than the down blocks provide "
                                 "(layers_per_block per level does not pair up)")
            used = tuple(reversed(skips[-taken:]))
            del skips[-taken:]
            size_from = skips[-1] if self.up_blocks[i].upsamplers is not None else None
            reads = (previous, "emb") + (("context",) if kind == CROSS_UP else ()) + used
            reads += (size_from,) if size_from else ()
            stages.append(Stage(f"up_{i}", (f"up_blocks.{i}",), reads, (f"up_{i}_out",), used, size_from))
            previous = f"up_{i}_out"
        if skips:
            raise ValueError(f"{len(skips)} skip(s) left unused by the up blocks (layers_per_block does not pair up)")
        # out reads emb only for the batch size (the frames are folded into the batch axis).
        stages.append(Stage("out", ("conv_norm_out", "conv_out"), (previous, "emb"), (MODEL_OUTPUT,)))
        return stages

    def stage_names(self) -> list[str]:
        return [stage.name for stage in self._stages]

    def stage_parameter_count(self, i: int) -> int:
        """Number of parameters owned by stage i (each parameter belongs to one stage)."""
        return sum(p.numel() for path in self._stages[i].owners
                   for p in self.get_submodule(path).parameters())

    def tensor_names(self) -> list[str]:
        """Every state tensor, in order of production (model inputs first, out_sample last).
        Each is written by exactly one stage."""
        return list(MODEL_INPUTS) + [name for stage in self._stages for name in stage.writes]

    def boundary_names(self, k: int) -> list[str]:
        """Tensors alive at boundary k (before stage k; k = len(stages) is the end): produced
        earlier (or a model input) and read by stage k or later; in order of production."""
        if not 0 <= k <= len(self._stages):
            raise IndexError(f"boundary {k} out of range 0..{len(self._stages)}")
        if k == len(self._stages):
            return [MODEL_OUTPUT]
        produced = self.tensor_names()[:len(MODEL_INPUTS) + sum(len(st.writes) for st in self._stages[:k])]
        later = {name for stage in self._stages[k:] for name in stage.reads}
        return [name for name in produced if name in later]

    def model_input_shapes(self, sample_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """The model inputs' shapes for a run on sample [B, F, in, h, w]: timestep [B],
        encoder_hidden_states [B, 1, D], added_time_ids [B, n_ids], from the config."""
        b = int(sample_shape[0])
        cfg = self.config
        n_ids = cfg["projection_class_embeddings_input_dim"] // cfg["addition_time_embed_dim"]
        return dict(zip(MODEL_INPUTS, (tuple(int(s) for s in sample_shape), (b,),
                                       (b, 1, cfg["cross_attention_dim"]), (b, n_ids))))

    def boundary_shapes(self, inputs: Mapping[str, Sequence[int]] | Sequence[int]) -> list[dict[str, tuple[int, ...]]]:
        """For a run on `inputs` (the model inputs' shapes by name, as a component spec's
        `input_shapes()` gives them; or the sample's shape alone, the rest following from the
        config): at each boundary 0..len(stages), name -> shape of every tensor alive there.
        Computed from the config alone (no weights, no run)."""
        shapes = ({name: tuple(int(d) for d in inputs[name]) for name in MODEL_INPUTS}
                  if isinstance(inputs, Mapping) else self.model_input_shapes(inputs))
        b, f, c, h, w = shapes[MODEL_INPUTS[0]]
        cfg = self.config
        channels = cfg["block_out_channels"]
        result = [{name: shapes[name] for name in self.boundary_names(0)}]
        for k, stage in enumerate(self._stages):
            kind, _, index = stage.name.partition("_")
            if kind == "embed":
                shapes.update(emb=(b, 4 * channels[0]), context=(b, cfg["cross_attention_dim"]),
                              skip_0=(b * f, channels[0], h, w))
            elif kind == "down":
                i = int(index)
                _, _, sh, sw = shapes[stage.reads[0]]
                for j, name in enumerate(stage.writes):
                    if j == cfg["layers_per_block"][i]:  # the downsampler: 3x3, stride 2, pad 1
                        sh, sw = (sh - 1) // 2 + 1, (sw - 1) // 2 + 1
                    shapes[name] = (b * f, channels[i], sh, sw)
            elif kind == "mid":
                shapes[stage.writes[0]] = shapes[stage.reads[0]]
            elif kind == "up":
                level = len(channels) - 1 - int(index)
                sh, sw = shapes[stage.size_from][2:] if stage.size_from else shapes[stage.reads[0]][2:]
                shapes[stage.writes[0]] = (b * f, channels[level], sh, sw)
            else:
                shapes[MODEL_OUTPUT] = (b, f, cfg["out_channels"]) + shapes[stage.reads[0]][2:]
            result.append({name: shapes[name] for name in self.boundary_names(k + 1)})
        return result

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                added_time_ids: torch.Tensor) -> torch.Tensor:
        state = dict(zip(MODEL_INPUTS, (sample, timestep, encoder_hidden_states, added_time_ids)))
        for stage in self._stages:
            _run_stage(stage, self.get_submodule, state)
        return state[MODEL_OUTPUT]


class UNetChunk(nn.Module):
    """Stages [start, stop) of a ConvertibleUNet, as a module with flat tensor I/O.

    `input_names`: the tensors alive at boundary `start` that the chunk reads;
    `output_names`: the tensors it writes that are alive at boundary `stop`; both in order
    of production. The first chunk's inputs are sample, timestep, encoder_hidden_states,
    added_time_ids and the last chunk's output is out_sample. Names are written once, so
    inputs and outputs never share a name (Core ML rejects a name used as both) and the
    chunks run over one pool of named tensors:

        pool = dict(zip(MODEL_INPUTS, inputs))
        for chunk in chunks:
            out = chunk(*(pool[n] for n in chunk.input_names))
            pool.update(zip(chunk.output_names, out if isinstance(out, tuple) else (out,)))

    With pass_through=True the lists are every tensor alive at the two boundaries instead:
    chunk k's outputs are then chunk k+1's inputs, in order (`x = chunk(*x)`), at the cost
    of copying unused skips through each package (and of output names that repeat input
    names, which a Core ML conversion must rename).

    forward(*tensors in input_names order) returns a tuple in output_names order (a single
    tensor when there is one). `input_shapes(inputs)` / `output_shapes(inputs)` give the
    matching shapes when the UNet runs on model inputs of those shapes (a spec's
    `input_shapes()`, or the sample's shape alone; see ConvertibleUNet.boundary_shapes).

    Holds only the modules of its own stages (shared with the UNet, not copied), so its
    parameters are exactly the weights its package needs."""

    def __init__(self, unet: ConvertibleUNet, start: int, stop: int, pass_through: bool = False):
        super().__init__()
        total = len(unet.stage_names())
        if not 0 <= start < stop <= total:
            raise ValueError(f"chunk [{start}, {stop}) is not a nonempty range of the {total} stages")
        self.start, self.stop = int(start), int(stop)
        self._stages = unet._stages[start:stop]
        self.stage_names = [stage.name for stage in self._stages]
        self.input_names = unet.boundary_names(start)
        self.output_names = unet.boundary_names(stop)
        if not pass_through:
            read = {name for stage in self._stages for name in stage.reads}
            written = {name for stage in self._stages for name in stage.writes}
            self.input_names = [name for name in self.input_names if name in read]
            self.output_names = [name for name in self.output_names if name in written]
        # ModuleDict keys cannot hold dots; the paths map one to one onto these keys.
        self.parts = nn.ModuleDict({path.replace(".", "__"): unet.get_submodule(path)
                                    for stage in self._stages for path in stage.owners})
        self._boundary_shapes = unet.boundary_shapes  # config-only maths, no weights used

    def _module(self, path: str) -> nn.Module:
        return self.parts[path.replace(".", "__")]

    def input_shapes(self, inputs: Mapping[str, Sequence[int]] | Sequence[int]) -> list[tuple[int, ...]]:
        shapes = self._boundary_shapes(inputs)[self.start]
        return [shapes[name] for name in self.input_names]

    def output_shapes(self, inputs: Mapping[str, Sequence[int]] | Sequence[int]) -> list[tuple[int, ...]]:
        shapes = self._boundary_shapes(inputs)[self.stop]
        return [shapes[name] for name in self.output_names]

    def forward(self, *tensors: torch.Tensor):
        if len(tensors) != len(self.input_names):
            raise ValueError(f"chunk {self.stage_names} takes {len(self.input_names)} tensors "
                             f"({', '.join(self.input_names)}), got {len(tensors)}")
        state = dict(zip(self.input_names, tensors))
        for stage in self._stages:
            _run_stage(stage, self._module, state)
        # Pass-through names were never touched by a stage; the rest were written by one.
        outputs = tuple(state[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs


def _min_max_partition(sizes: Sequence[int], parts: int) -> list[int]:
    """Cut points splitting `sizes` into `parts` contiguous nonempty runs with the smallest
    possible largest run (exact dynamic programme; the stage count is small)."""
    n = len(sizes)
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    inf = float("inf")
    # best[p][j]: smallest largest run when sizes[:j] is split into p runs; cut[p][j]: last cut.
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for p in range(1, parts + 1):
        for j in range(p, n + 1):
            for i in range(p - 1, j):
                value = max(best[p - 1][i], prefix[j] - prefix[i])
                if value < best[p][j]:
                    best[p][j], cut[p][j] = value, i
    cuts, j = [], n
    for p in range(parts, 0, -1):
        cuts.append(j)
        j = cut[p][j]
    return sorted(cuts)


def plan_chunks(unet: ConvertibleUNet, max_bytes: int, bytes_per_param: float) -> list[tuple[int, int]]:
    """Contiguous [start, stop) stage ranges covering the UNet, for packages of at most
    `max_bytes` of weights each (a stage's weights: its parameter count * bytes_per_param).

    The fewest chunks possible, split only at stage boundaries; among plans with that
    count, the one whose largest chunk is smallest (balanced). A single stage over the
    limit cannot be split and becomes a chunk of its own (the only chunk over the limit);
    the stages between such stages are planned as above."""
    if max_bytes <= 0 or bytes_per_param <= 0:
        raise ValueError("max_bytes and bytes_per_param must be positive")
    sizes = [unet.stage_parameter_count(i) * bytes_per_param for i in range(len(unet.stage_names()))]
    plan: list[tuple[int, int]] = []

    def plan_run(start: int, stop: int) -> None:
        if start == stop:
            return
        run = sizes[start:stop]
        count, used = 1, 0.0  # greedy packing gives the fewest chunks for contiguous runs
        for s in run:
            if used + s > max_bytes:
                count, used = count + 1, 0.0
            used += s
        previous = start
        for end in _min_max_partition(run, count):
            plan.append((previous, start + end))
            previous = start + end

    start = 0
    for i, size in enumerate(sizes):
        if size > max_bytes:
            plan_run(start, i)
            plan.append((i, i + 1))
            start = i + 1
    plan_run(start, len(sizes))
    return plan
