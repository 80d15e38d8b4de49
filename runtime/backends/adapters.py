"""PyTorch call signatures on top of backend runners.

The sampler calls `unet(sample, t, encoder_hidden_states=..., added_time_ids=...,
return_dict=False)[0]`, `vae.encode(x).latent_dist.mode()`,
`vae.decode(z, num_frames=n).sample` and `image_encoder(pixels).image_embeds`,
and reads `.dtype` and `.config`. These adapters provide exactly that, so the
loop is written once and never chooses a backend. They pass through whatever
array kind they are given, torch tensors or numpy arrays (the thin runtime), to
runners of that kind (runtime/backends/base.py: `load` or `load_arrays`). Tensor
names come from each runner's component spec: the call's arguments are its inputs
in spec order (the order of runtime/component_modules.py's flat modules), the
result its first output.
"""
from __future__ import annotations

from types import SimpleNamespace

from refocus_edge.runtime.arrays import as_float32, per_sample
from refocus_edge.runtime.components import (IMAGE_ENCODER, UNET, VAE_ENCODER, decoder_chunk, decoder_name,
                                             is_decoder)
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

    def _run(self, component: str, *inputs):
        """`component`'s runner on `inputs` (its spec's inputs, in order): its spec's first output."""
        runner = self.runners[component]
        spec = runner.spec
        return runner(dict(zip(spec.input_names, inputs, strict=True)))[spec.output_names[0]]

    def close(self) -> None:
        for r in self.runners.values():
            r.close()


class UNetAdapter(_Adapter):
    def __call__(self, sample, timestep, encoder_hidden_states=None, added_time_ids=None,
                 return_dict: bool = True, **unused):
        t = per_sample(as_float32(timestep, sample), sample.shape[0])
        out = self._run(UNET, as_float32(sample, sample), t, as_float32(encoder_hidden_states, sample),
                        as_float32(added_time_ids, sample))
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
        latent = self._run(VAE_ENCODER, as_float32(image, image))
        dist = _Mode(latent)
        return SimpleNamespace(latent_dist=dist) if return_dict else (dist,)

    @property
    def takes_guide(self) -> bool:
        """The bundle's decoder is photo-guided: its spec takes the photo and the frames' offsets."""
        return any(len(r.spec.inputs) > 1 for k, r in self.runners.items() if is_decoder(k))

    def decode(self, latent, num_frames: int, return_dict: bool = True, guide: tuple | None = None):
        if decoder_name(num_frames) not in self.runners:
            chunks = sorted(decoder_chunk(k) for k in self.runners if is_decoder(k))
            raise InvalidArgumentError(f"no VAE decoder for chunks of {num_frames} frames in this bundle "
                                       f"(it has {chunks}); export with matching decode_chunk_sizes")
        extra = () if guide is None else tuple(as_float32(g, latent) for g in guide)
        image = self._run(decoder_name(num_frames), as_float32(latent, latent), *extra)
        return SimpleNamespace(sample=image) if return_dict else (image,)


class ImageEncoderAdapter(_Adapter):
    def __call__(self, pixel_values, **unused):
        embeds = self._run(IMAGE_ENCODER, as_float32(pixel_values, pixel_values))
        return SimpleNamespace(image_embeds=embeds)
