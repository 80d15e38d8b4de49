"""Each component as a PyTorch module with the flat tensor interface of its spec.

These are what ONNX export traces, what parity gates compare against, and what
the `torch` backend runs for a bundle: forward(*inputs in spec order) returns the
spec's outputs. They wrap the original diffusers/transformers modules without
copying weights.
"""
from __future__ import annotations

import torch

from refocus_edge.runtime.components import is_decoder
from refocus_edge.runtime.fast_attention import install_single_token_cross_attention


class ImageEncoderComponent(torch.nn.Module):
    def __init__(self, image_encoder):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixel_values):
        return self.image_encoder(pixel_values).image_embeds


class VaeEncoderComponent(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image).latent_dist.mode()


class UNetComponent(torch.nn.Module):
    """The UNet with the single-token cross-attention shortcut installed (exact maths, see
    runtime/fast_attention.py), so every backend's graph gets it for free."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        install_single_token_cross_attention(unet)

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         added_time_ids=added_time_ids, return_dict=False)[0]


class VaeDecoderComponent(torch.nn.Module):
    def __init__(self, vae, num_frames: int):
        super().__init__()
        self.vae, self.num_frames = vae, int(num_frames)

    def forward(self, latent, photo=None, frame_offsets=None):
        if photo is None:
            return self.vae.decode(latent, num_frames=self.num_frames).sample
        # a photo-guided decoder (the spec then has these inputs; runtime/tiny_decoder.py)
        return self.vae.decode(latent, num_frames=self.num_frames, guide=(photo, frame_offsets)).sample


def component_module(refocuser, spec) -> torch.nn.Module:
    """The flat PyTorch module of `spec` built on a loaded torch refocuser."""
    if spec.name == "image_encoder":
        return ImageEncoderComponent(refocuser.image_encoder).eval()
    if spec.name == "vae_encoder":
        return VaeEncoderComponent(refocuser.vae).eval()
    if spec.name == "unet":
        return UNetComponent(refocuser.unet).eval()
    if is_decoder(spec.name):
        return VaeDecoderComponent(refocuser.vae, spec.num_frames).eval()
    raise KeyError(f"unknown component {spec.name!r}")
