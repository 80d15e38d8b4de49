"""Cross-attention against a single token, without the attention.

The refocuser's cross-attention context is one CLIP token. Softmax over one key
is exactly 1, so every query's output is to_out(to_v(token)): a constant per
image. This processor computes that directly (O(C^2) per image instead of
O(N * C) queries and keys per call) and falls back to the stock processor for
anything else (self-attention, masks, longer contexts).
"""
from __future__ import annotations

import contextlib


class SingleTokenCrossAttnProcessor:
    def __init__(self, fallback):
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        simple = (
            encoder_hidden_states is not None
            and encoder_hidden_states.shape[1] == 1
            and attention_mask is None
            and hidden_states.ndim == 3
            and attn.spatial_norm is None
            and attn.group_norm is None
            and not attn.residual_connection
        )
        if not simple:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 *args, **kwargs)
        context = encoder_hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        out = attn.to_out[1](attn.to_out[0](attn.to_v(context)))  # [B, 1, C]
        out = out / attn.rescale_output_factor
        return out.expand(-1, hidden_states.shape[1], -1)


def _patched(original: dict) -> dict:
    return {name: (proc if isinstance(proc, SingleTokenCrossAttnProcessor) or ".attn2." not in name
                   else SingleTokenCrossAttnProcessor(proc))
            for name, proc in original.items()}


def install_single_token_cross_attention(unet) -> None:
    """Install the shortcut for good (a UNet owned by one component module)."""
    unet.set_attn_processor(_patched(dict(unet.attn_processors)))


@contextlib.contextmanager
def single_token_cross_attention(unet):
    """Swap every cross-attention (attn2) processor of `unet` for the shortcut, then restore.

    A backend wrapper (not a PyTorch UNet) is left alone: its graph already has it."""
    if not hasattr(unet, "set_attn_processor"):
        yield unet
        return
    original = dict(unet.attn_processors)
    unet.set_attn_processor(_patched(original))
    try:
        yield unet
    finally:
        unet.set_attn_processor(original)
