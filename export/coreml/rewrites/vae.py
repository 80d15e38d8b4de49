"""A conversion-ready rewrite of diffusers' `AutoencoderKLTemporalDecoder` (the SVD VAE).

coremltools rejects the diffusers modules as they are: the attention processor reads
tensor shapes at run time (traced into `aten::size` / `aten::Int` chains that the
converter cannot turn into Python scalars), and the temporal decoder computes on
rank-5 tensors with Conv3d. `ConvertibleVAE` mirrors the diffusers attribute tree, so
its state dict is the diffusers one key for key and shape for shape, and computes the
same function with:

  * every shape read as a Python int (under `torch.jit.trace` it becomes a constant:
    Core ML packages have static shapes anyway);
  * spatial work on [N, C, H, W] (N = frames), temporal work on [B, C, F, H*W], so no
    activation has rank > 4 (the Conv3d weights keep their rank-5 diffusers shape as
    parameters and are squeezed to rank 4 before use);
  * group norm written out on [N, G, C/G * spatial] (coremltools lowers aten::group_norm
    through a rank-5 reshape; this keeps the converted program at rank <= 4 too);
  * self-attention with heads split explicitly, batched matmuls and a plain softmax
    (no scaled_dot_product_attention).

The two component modules (`encoder_module()`, `decoder_module(num_frames)`) have the flat
interface of runtime/component_modules.py's VaeEncoderComponent / VaeDecoderComponent and
share their parameters with the ConvertibleVAE.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from refocus_edge.export.coreml.rewrites.layers import group_norm, static_shape

# The SVD VAE hard-codes these (diffusers' Encoder / TemporalDecoder do not expose them).
NORM_GROUPS = 32
SPATIAL_EPS = 1e-6
TEMPORAL_EPS = 1e-5
SUPPORTED_DOWN_BLOCK = "DownEncoderBlock2D"
# Defaults of AutoencoderKLTemporalDecoder.__init__, used for keys missing from a config.
DEFAULT_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                      block_out_channels=(64,), layers_per_block=1, latent_channels=4,
                      sample_size=32, scaling_factor=0.18215, force_upcast=True)


class ResnetBlock2D(nn.Module):
    """diffusers ResnetBlock2D as the VAE builds it: no time embedding, pre-norm, SiLU,
    output_scale_factor 1 (so the output is skip + residual, undivided)."""

    def __init__(self, in_channels: int, out_channels: int, eps: float = SPATIAL_EPS):
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # A 1x1 projection of the skip path only when the channel count changes.
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(group_norm(x, self.norm1)))
        h = self.conv2(F.silu(group_norm(h, self.norm2)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv as the encoder builds it (downsample_padding=0): the input is padded
    by one zero column on the right and one zero row at the bottom only, an asymmetric
    padding the conv's own `padding` cannot express, hence the explicit pad."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = static_shape(x)
        # An explicit output size (same indices as scale_factor=2 for nearest) keeps the
        # traced upsample free of run-time shape arithmetic.
        return self.conv(F.interpolate(x, size=(2 * h, 2 * w), mode="nearest"))


class SpatialSelfAttention(nn.Module):
    """diffusers Attention as both VAE mid blocks configure it: group norm (32 groups, eps
    1e-6), self-attention over the H*W positions of each frame with scale dim_head**-0.5,
    output projection, residual_connection=True and rescale_output_factor=1 (so the output
    is attention + input, undivided).

    Tokens are laid out [N, H*W, C] (so the projections are plain Linears on the last
    axis), heads split to [N, heads, H*W, dim_head] (rank 4) for batched matmuls."""

    def __init__(self, channels: int, heads: int, dim_head: int, eps: float = SPATIAL_EPS):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = int(heads), int(dim_head)
        self.scale = dim_head ** -0.5
        self.group_norm = nn.GroupNorm(NORM_GROUPS, channels, eps=eps)
        self.to_q = nn.Linear(channels, inner)
        self.to_k = nn.Linear(channels, inner)
        self.to_v = nn.Linear(channels, inner)
        # diffusers' to_out is [Linear, Dropout]; the dropout has no parameters and is the
        # identity at inference, so only the Linear (key to_out.0) is kept.
        self.to_out = nn.ModuleList([nn.Linear(inner, channels)])

    def _split_heads(self, t: torch.Tensor, n: int, length: int) -> torch.Tensor:
        return t.reshape(n, length, self.heads, self.dim_head).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = static_shape(x)
        length = h * w
        tokens = group_norm(x, self.group_norm).reshape(n, c, length).permute(0, 2, 1)
        # Scaling q before the product (not the scores after) keeps fp16 scores in range.
        q = self._split_heads(self.to_q(tokens) * self.scale, n, length)
        k = self._split_heads(self.to_k(tokens), n, length)
        v = self._split_heads(self.to_v(tokens), n, length)
        # A plain softmax on the last axis: aten::softmax maps onto one MIL softmax op.
        probs = torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1)
        out = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(n, length, self.heads * self.dim_head)
        return self.to_out[0](out).permute(0, 2, 1).reshape(n, c, h, w) + x


def _spatial_attention(channels: int, attention_head_dim: int) -> SpatialSelfAttention:
    # Both VAE mid blocks set attention_head_dim = channels, i.e. one head; heads/dim_head
    # follow diffusers' rule (heads = channels // attention_head_dim) in general.
    return SpatialSelfAttention(channels, heads=channels // attention_head_dim, dim_head=attention_head_dim)


# ----------------------------------------------------------------------------- encoder


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if add_downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
        return x


class UNetMidBlock2D(nn.Module):
    """resnet, then (attention, resnet) per layer; the encoder builds one layer."""

    def __init__(self, channels: int, num_layers: int = 1):
        super().__init__()
        # Attentions registered first, as in diffusers, so the state dict keys come in its order.
        self.attentions = nn.ModuleList([_spatial_attention(channels, channels) for _ in range(num_layers)])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels) for _ in range(num_layers + 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x))
        return x


class Encoder(nn.Module):
    """diffusers' 2-D VAE Encoder with double_z: image [N, 3, H, W] -> moments [N, 2C, H/8, W/8]."""

    def __init__(self, in_channels: int, latent_channels: int, block_out_channels, layers_per_block: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        blocks, out_ch = [], block_out_channels[0]
        for i, ch in enumerate(block_out_channels):
            in_ch, out_ch = out_ch, ch
            blocks.append(DownEncoderBlock2D(in_ch, out_ch, layers_per_block,
                                             add_downsample=i != len(block_out_channels) - 1))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = UNetMidBlock2D(block_out_channels[-1])
        self.conv_norm_out = nn.GroupNorm(NORM_GROUPS, block_out_channels[-1], eps=SPATIAL_EPS)
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(group_norm(x, self.conv_norm_out)))


# ----------------------------------------------------------------------------- temporal parts


class FrameConv(nn.Module):
    """diffusers' Conv3d with kernel (k, 1, 1): a convolution along frames only (k = 3 in
    the temporal resnets and time_conv_out).

    The parameters keep the Conv3d shapes ([out, in, k, 1, 1], [out]) so the state dict
    loads unchanged; forward runs on [B, C, F, H*W] as a rank-4 conv2d with kernel (k, 1)
    and padding (k // 2, 0), the same zero padding at the first and last frame."""

    def __init__(self, in_channels: int, out_channels: int, kernel_frames: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_frames, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.padding = (kernel_frames // 2, 0)
        # Conv3d's own initialisation, for a model built without loading weights.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(in_channels * kernel_frames)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.squeeze(-1), self.bias, padding=self.padding)


class TemporalResnetBlock(nn.Module):
    """diffusers TemporalResnetBlock (no time embedding) on x [B, C, F, H*W].

    SpatioTemporalResBlock always builds it with in = out channels, so there is no
    shortcut conv. In this layout GroupNorm's statistics span (C/G, F, H*W), the same as
    diffusers' rank-5 [B, C, F, H, W]: the temporal norms pool over all frames of a chunk."""

    def __init__(self, channels: int, eps: float = TEMPORAL_EPS):
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, channels, eps=eps)
        self.conv1 = FrameConv(channels, channels, 3)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, channels, eps=eps)
        self.conv2 = FrameConv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(group_norm(x, self.norm1)))
        return x + self.conv2(F.silu(group_norm(h, self.norm2)))


class AlphaBlender(nn.Module):
    """diffusers AlphaBlender as the VAE decoder builds it (merge_strategy "learned",
    switch_spatial_to_temporal_mix=True), i.e. with the all-zero image_only_indicator of
    vae.decode folded in: the indicator only matters to "learned_with_images", which gives
    sigmoid(mix_factor) too when no frame is image-only.

    diffusers computes alpha = 1 - sigmoid(m) (the switch) and returns
    alpha * spatial + (1 - alpha) * temporal; the same expression is kept here. mix_factor
    is a parameter, so the whole weight folds to a constant on conversion."""

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.tensor([float(alpha)]))

    def forward(self, x_spatial: torch.Tensor, x_temporal: torch.Tensor) -> torch.Tensor:
        alpha = 1.0 - torch.sigmoid(self.mix_factor)
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


class SpatioTemporalResBlock(nn.Module):
    """Spatial resnet per frame on [N, C, H, W], temporal resnet across the frames of each
    chunk on [B, C, F, H*W], blended. Frames are consecutive along N (chunk-major), as in
    diffusers' reshape(batch, frames, ...)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.spatial_res_block = ResnetBlock2D(in_channels, out_channels, eps=SPATIAL_EPS)
        self.temporal_res_block = TemporalResnetBlock(out_channels, eps=TEMPORAL_EPS)
        self.time_mixer = AlphaBlender(alpha=0.0)  # diffusers: merge_factor=0.0

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.spatial_res_block(x)
        n, c, h, w = static_shape(x)
        b = n // num_frames
        # [B*F, C, H, W] -> [B, C, F, H*W]: channels on axis 1 for group norm, frames on a
        # conv axis for the (3, 1) frame conv, H*W merged to stay at rank 4.
        t = x.reshape(b, num_frames, c, h * w).permute(0, 2, 1, 3)
        t = self.temporal_res_block(t)
        t = t.permute(0, 2, 1, 3).reshape(n, c, h, w)
        return self.time_mixer(x, t)


class MidBlockTemporalDecoder(nn.Module):
    """resnets[0], then (attention, resnet) for zip(attentions, resnets[1:]).

    diffusers builds exactly one attention however many resnets there are, and zips: with
    one layer (the tiny VAEs) the attention is never applied, with more than two the extra
    resnets are never applied. Both are kept here (for the state dict) and skipped alike."""

    def __init__(self, channels: int, num_layers: int, attention_head_dim: int):
        super().__init__()
        # Registered attentions first, as diffusers does, so state_dict() lists keys in its order.
        self.attentions = nn.ModuleList([_spatial_attention(channels, attention_head_dim)])
        self.resnets = nn.ModuleList([SpatioTemporalResBlock(channels, channels) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.resnets[0](x, num_frames)
        for resnet, attn in zip(self.resnets[1:], self.attentions):
            x = resnet(attn(x), num_frames)
        return x


class UpBlockTemporalDecoder(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, add_upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([SpatioTemporalResBlock(in_channels if i == 0 else out_channels, out_channels)
                                      for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, num_frames)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x)
        return x


class TemporalDecoder(nn.Module):
    """diffusers' TemporalDecoder: latent [B*F, C, h, w] -> image [B*F, 3, 8h, 8w]."""

    def __init__(self, latent_channels: int, out_channels: int, block_out_channels, layers_per_block: int):
        super().__init__()
        top = block_out_channels[-1]
        self.conv_in = nn.Conv2d(latent_channels, top, 3, padding=1)
        self.mid_block = MidBlockTemporalDecoder(top, layers_per_block, attention_head_dim=top)
        reversed_channels = list(reversed(block_out_channels))
        blocks, out_ch = [], reversed_channels[0]
        for i, ch in enumerate(reversed_channels):
            in_ch, out_ch = out_ch, ch
            blocks.append(UpBlockTemporalDecoder(in_ch, out_ch, layers_per_block + 1,
                                                 add_upsample=i != len(reversed_channels) - 1))
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(NORM_GROUPS, block_out_channels[0], eps=SPATIAL_EPS)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)
        self.time_conv_out = FrameConv(out_channels, out_channels, 3)

    def forward(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        n = int(z.shape[0])
        if n % num_frames:
            raise ValueError(f"{n} latents do not split into chunks of {num_frames} frames")
        x = self.mid_block(self.conv_in(z), num_frames)
        for block in self.up_blocks:
            x = block(x, num_frames)
        x = self.conv_out(F.silu(group_norm(x, self.conv_norm_out)))
        n, c, h, w = static_shape(x)
        b = n // num_frames
        # The final frame conv in the same [B, C, F, H*W] layout as the temporal resnets.
        t = x.reshape(b, num_frames, c, h * w).permute(0, 2, 1, 3)
        t = self.time_conv_out(t)
        return t.permute(0, 2, 1, 3).reshape(n, c, h, w)


# ----------------------------------------------------------------------------- the VAE


class VaeEncoderModule(nn.Module):
    """image [N, 3, H, W] in [-1, 1] -> posterior mode [N, C, H/8, W/8], unscaled.

    The mode is the mean, the first C output channels of the 1x1 quant_conv; only those
    rows of its weight are applied (exactly the same values, half the work, no slice of
    the output)."""

    def __init__(self, encoder: Encoder, quant_conv: nn.Conv2d, latent_channels: int):
        super().__init__()
        self.encoder, self.quant_conv = encoder, quant_conv  # shared, not copied
        self.latent_channels = int(latent_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        c = self.latent_channels
        return F.conv2d(self.encoder(image), self.quant_conv.weight[:c], self.quant_conv.bias[:c])


class VaeDecoderModule(nn.Module):
    """latent [num_frames, C, h, w] (unscaled) -> image [num_frames, 3, 8h, 8w]; the frames are
    decoded together (the temporal layers mix them), as vae.decode(latent, num_frames)."""

    def __init__(self, decoder: TemporalDecoder, num_frames: int):
        super().__init__()
        self.decoder = decoder  # shared, not copied
        self.num_frames = int(num_frames)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent, self.num_frames)


class ConvertibleVAE(nn.Module):
    """Same state dict as AutoencoderKLTemporalDecoder(**config), conversion-ready forward.

    `config` is a diffusers VAE config (e.g. dict(vae.config)); unknown keys (_class_name,
    _diffusers_version, ...) are ignored and missing ones take diffusers' defaults."""

    def __init__(self, config: dict):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **{k: v for k, v in dict(config).items() if k in DEFAULT_CONFIG}}
        down_types = tuple(cfg["down_block_types"])
        block_out_channels = tuple(int(c) for c in cfg["block_out_channels"])
        if any(t != SUPPORTED_DOWN_BLOCK for t in down_types):
            raise ValueError(f"only {SUPPORTED_DOWN_BLOCK} encoder blocks are supported, got {down_types}")
        if len(down_types) != len(block_out_channels):
            raise ValueError("down_block_types and block_out_channels differ in length")
        self.config = {**cfg, "down_block_types": down_types, "block_out_channels": block_out_channels}
        self.latent_channels = int(cfg["latent_channels"])
        self.scaling_factor = float(cfg["scaling_factor"])
        self.encoder = Encoder(int(cfg["in_channels"]), self.latent_channels, block_out_channels,
                               int(cfg["layers_per_block"]))
        self.decoder = TemporalDecoder(self.latent_channels, int(cfg["out_channels"]), block_out_channels,
                                       int(cfg["layers_per_block"]))
        self.quant_conv = nn.Conv2d(2 * self.latent_channels, 2 * self.latent_channels, 1)

    @classmethod
    def from_diffusers(cls, vae) -> "ConvertibleVAE":
        """A ConvertibleVAE with `vae`'s config and a copy of its weights (strict load), in
        eval mode, on vae's device and in its dtype."""
        # Built on the meta device (no initialisation work, no throw-away memory), then the
        # cloned tensors are assigned: one copy, with their device and dtype.
        with torch.device("meta"):
            model = cls(dict(vae.config))
        weights = {k: v.detach().clone() for k, v in vae.state_dict().items()}
        model.load_state_dict(weights, strict=True, assign=True)
        return model.eval()

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """vae.encode(image).latent_dist.mode()."""
        return self.encoder_module()(image)

    def decode(self, latent: torch.Tensor, num_frames: int) -> torch.Tensor:
        """vae.decode(latent, num_frames=num_frames).sample."""
        return self.decoder(latent, int(num_frames))

    def encoder_module(self) -> VaeEncoderModule:
        return VaeEncoderModule(self.encoder, self.quant_conv, self.latent_channels).train(self.training)

    def decoder_module(self, num_frames: int) -> VaeDecoderModule:
        return VaeDecoderModule(self.decoder, num_frames).train(self.training)
