"""PyTorch call signatures on top of backend runners.

The sampler calls `unet(sample, t, encoder_hidden_states=..., added_time_ids=...,
return_dict=False)[0]`, `vae.encode(x).latent_dist.mode()`,
`vae.decode(z, num_frames=n).sample` and `image_encoder(pixels).image_embeds`,
and reads `.dtype` and `.config`. These adapters provide exactly that, so the
loop is written once and never chooses a backend. They pass through whatever
array kind they are given, torch tensors or numpy arrays (the thin runtime), to
runners of that kind (runtime/backends/base.py: `load` or `load_arrays`).
"""
from __future__ import annotations

from types import SimpleNamespace

from refocus_edge.runtime.arrays import as_float32, per_sample
from refocus_edge.runtime.components import VAE_ENCODER, decoder_chunk, decoder_name, is_decoder
from refocus_edge.runtime.errors import InvalidArgumentError


class AttrConfig(dict):
    """A model config with attribute access, like diffusers' FrozenDict."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Adapter:
    def __init__(self, config: dict, runners: dict):
        self.config = AttrConfig(config)
        self.runners = runners

    @property
    def dtype(self):
        """torch.float32, the I/O dtype the PyTorch sampler casts to (a runner casts to its graph's
        precision itself); asked only by torch code, so torch is loaded already."""
        import torch

        return torch.float32

    @property
    def devices(self) -> dict[str, str]:
        return {name: r.device for name, r in self.runners.items()}

    def close(self) -> None:
        for r in self.runners.values():
            r.close()


class UNetAdapter(_Adapter):
    def __call__(self, sample, timestep, encoder_hidden_states=None, added_time_ids=None,
                 return_dict: bool = True, **unused):
        t = per_sample(as_float32(timestep, sample), sample.shape[0])
        out = self.runners["unet"]({"sample": as_float32(sample, sample), "timestep": t,
                                    "encoder_hidden_states": as_float32(encoder_hidden_states, sample),
                                    "added_time_ids": as_float32(added_time_ids, sample)})["out_sample"]
        return SimpleNamespace(sample=out) if return_dict else (out,)


class _Mode:
    def __init__(self, latent):
        self._latent = latent

    def mode(self):
        return self._latent

    mean = property(mode)


class VaeAdapter(_Adapter):
    """Encoder runner under "vae_encoder", decoder runners under "vae_decoder_<chunk>"."""

    def encode(self, image, return_dict: bool = True):
        latent = self.runners[VAE_ENCODER]({"image": as_float32(image, image)})["latent"]
        dist = _Mode(latent)
        return SimpleNamespace(latent_dist=dist) if return_dict else (dist,)

    def decode(self, latent, num_frames: int, return_dict: bool = True):
        runner = self.runners.get(decoder_name(num_frames))
        if runner is None:
            chunks = sorted(decoder_chunk(k) for k in self.runners if is_decoder(k))
            raise InvalidArgumentError(f"no VAE decoder for chunks of {num_frames} frames in this bundle "
                                       f"(it has {chunks}); export with matching decode_chunk_sizes")
        image = runner({"latent": as_float32(latent, latent)})["image"]
        return SimpleNamespace(sample=image) if return_dict else (image,)


class ImageEncoderAdapter(_Adapter):
    def __call__(self, pixel_values, **unused):
        embeds = self.runners["image_encoder"]({"pixel_values": as_float32(pixel_values, pixel_values)})["image_embeds"]
        return SimpleNamespace(image_embeds=embeds)
