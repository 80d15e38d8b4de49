"""One description of each exported component, read by everything downstream.

A refocuser is run as five graphs: the image encoder, the VAE encoder, the UNet
and the VAE decoder at each decode chunk size (8 and 1 for the reference; the
temporal decoder mixes frames inside a chunk, so each chunk size is its own
graph). For each, `ComponentSpec` names the inputs and outputs, their dtypes and
shapes (symbolic where dynamic), the min/opt/max shape profile, how to make
sample inputs, and the parity tolerance an artifact must meet. ONNX export,
TensorRT optimisation profiles, Core ML inputs and the runtime's input checks
all read these objects; nothing else hard-codes a tensor name or a shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refocus_edge.runtime.component_names import (DECODER_FAMILY, DECODER_PREFIX, IMAGE_ENCODER, UNET,  # noqa: F401
                                                  VAE_ENCODER, VAE_PREFIX, component_family, decoder_chunk,
                                                  decoder_name, is_decoder)
from refocus_edge.runtime.errors import InvalidArgumentError

# Relative error (max |artifact - torch| / max |torch|) an artifact may have per component.
# fp32 graphs differ from eager PyTorch only by op ordering (measured ~1e-6); fp16
# carries a 10-bit mantissa through dozens of layers; bf16 a 7-bit one, 8x coarser: OpenVINO's
# bf16 CPU kernels measured 4e-3 (encoders), 1.2e-2 (UNet) and 3.9e-2 (VAE decoders) on the
# default student, so 1e-1 passes them with 2.5x room and still fails a broken compile.
PARITY_TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "bf16": 1e-1}

# The UNet's tensors, inputs in the order of its flat interface (component_modules.UNetComponent):
# the spec below names them, and the Core ML rewrite's stages and chunk interfaces read them from here.
UNET_INPUTS = ("sample", "timestep", "encoder_hidden_states", "added_time_ids")
UNET_OUTPUT = "out_sample"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. `dims` holds ints (static) or axis names (dynamic)."""

    name: str
    dims: tuple
    dtype: str = "float32"  # "float32" or "model" (the export precision: fp32 or fp16)

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.dims) if isinstance(d, str)}

    def shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else int(sizes[d]) for d in self.dims)


def _input_range(name: str) -> tuple[str, object, object]:
    """How sample inputs of input `name` are drawn: ("uniform", low, high), ("pixels", -1, 1) (uniform
    too), ("fixed", values, None) or ("normal", None, None)."""
    if name == "timestep":  # 0.25 ln sigma over the Karras range 0.002..700
        return "uniform", 0.25 * math.log(0.002), 0.25 * math.log(700.0)
    if name == "added_time_ids":  # fps id 6, motion bucket 0, noise aug 0
        return "fixed", [6.0, 0.0, 0.0], None
    if name in ("image", "pixel_values", "photo"):  # [-1, 1] pixels
        return "pixels", -1.0, 1.0
    if name == "frame_offsets":  # (j - k) / (frames - 1) of a photo-guided decoder
        return "uniform", -1.0, 1.0
    return "normal", None, None


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # "image_encoder", "vae_encoder", "unet", "vae_decoder_8", ...
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # axis name -> (min, opt, max); every dynamic axis of every input has an entry.
    profile: dict[str, tuple[int, int, int]]
    num_frames: int | None = None  # the decoder's chunk size (a static argument of decode)
    notes: str = ""

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def sizes(self, which: str = "opt") -> dict[str, int]:
        index = {"min": 0, "opt": 1, "max": 2}[which]
        return {axis: bounds[index] for axis, bounds in self.profile.items()}

    def input_shapes(self, which: str = "opt") -> dict[str, tuple[int, ...]]:
        sizes = self.sizes(which)
        return {t.name: t.shape(sizes) for t in self.inputs}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes() for t in (*self.inputs, *self.outputs) if t.dynamic_axes()}

    def tolerance(self, precision: str) -> float:
        return PARITY_TOLERANCE[precision]

    def sample_arrays(self, rng: np.random.Generator, which: str = "opt") -> dict[str, np.ndarray]:
        """Fresh random float32 inputs in each input's realistic range, at the profile's min/opt/max:
        numpy arrays, for runners that take them (the thin runtime's backends, dispatch's timing)."""
        shapes = self.input_shapes(which)
        out = {}
        for t in self.inputs:
            kind, low, high = _input_range(t.name)
            if kind == "fixed":
                out[t.name] = np.broadcast_to(np.asarray(low, np.float32), shapes[t.name]).copy()
            elif kind in ("uniform", "pixels"):
                out[t.name] = rng.uniform(low, high, shapes[t.name]).astype(np.float32)
            else:
                out[t.name] = rng.standard_normal(shapes[t.name], dtype=np.float32)
        return out

    def sample_inputs(self, generator, which: str = "opt", dtype=None) -> dict:
        """`sample_arrays`' ranges as torch tensors drawn from a torch.Generator (the export's parity
        gates); `dtype` (default float32) applies to the inputs whose dtype is "model"."""
        import torch

        shapes = self.input_shapes(which)
        out = {}
        for t in self.inputs:
            shape = shapes[t.name]
            kind, low, high = _input_range(t.name)
            if kind == "fixed":
                x = torch.tensor(low).expand(shape).clone()
            elif kind == "uniform":
                x = torch.empty(shape).uniform_(low, high, generator=generator)
            elif kind == "pixels":
                x = torch.rand(shape, generator=generator) * 2 - 1
            else:
                x = torch.randn(shape, generator=generator)
            out[t.name] = x.to(dtype if dtype is not None and t.dtype == "model" else torch.float32)
        return out

    def check_inputs(self, feeds: dict) -> None:
        """Raise InvalidArgumentError naming the input, the shape and the allowed range."""
        sizes: dict[str, int] = {}
        for t in self.inputs:
            if t.name not in feeds:
                raise InvalidArgumentError(f"{self.name}: missing input '{t.name}'")
            shape = tuple(feeds[t.name].shape)
            if len(shape) != len(t.dims):
                raise InvalidArgumentError(f"{self.name}: input '{t.name}' has shape {list(shape)}, "
                                           f"expected {len(t.dims)} dims {list(t.dims)}")
            for axis, (dim, got) in enumerate(zip(t.dims, shape)):
                if isinstance(dim, int):
                    if got != dim:
                        raise InvalidArgumentError(
                            f"{self.name}: input '{t.name}' axis {axis} is {got}, must be {dim}")
                    continue
                lo, _, hi = self.profile[dim]
                if not lo <= got <= hi:
                    raise InvalidArgumentError(
                        f"{self.name}: input '{t.name}' {dim}={got} is outside the exported range "
                        f"{lo}..{hi}; export again with --resolution covering it")
                if sizes.setdefault(dim, got) != got:
                    raise InvalidArgumentError(
                        f"{self.name}: axis '{dim}' is {sizes[dim]} in one input and {got} in '{t.name}'")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "inputs": [{"name": t.name, "dims": list(t.dims), "dtype": t.dtype} for t in self.inputs],
            "outputs": [{"name": t.name, "dims": list(t.dims), "dtype": t.dtype} for t in self.outputs],
            "profile": {k: list(v) for k, v in self.profile.items()},
            "num_frames": self.num_frames,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict) -> "ComponentSpec":
        def tensors(items):
            return tuple(TensorSpec(t["name"], tuple(t["dims"]), t.get("dtype", "float32")) for t in items)

        return cls(name=data["name"], inputs=tensors(data["inputs"]), outputs=tensors(data["outputs"]),
                   profile={k: tuple(int(x) for x in v) for k, v in data["profile"].items()},
                   num_frames=data.get("num_frames"), notes=data.get("notes", ""))


@dataclass(frozen=True)
class ModelDims:
    """The facts about a refocuser that fix its components' shapes."""

    latent_channels: int
    embed_dim: int  # CLIP projection dim = UNet cross-attention dim
    clip_size: tuple[int, int]  # (H, W) of the CLIP input
    vae_scale_factor: int
    num_frames: int
    decode_chunk_sizes: tuple[int, ...]
    num_time_ids: int = 3
    resolutions: tuple[tuple[int, int], ...] = ((128, 128),)  # (W, H); the first is "opt"
    # A guided model calls the UNet on both guidance branches at once (batch 2); a
    # distilled student (guidance 0) on batch 1. That is the UNet's "opt" batch, the
    # shape TensorRT tunes for and Core ML packages are built at.
    guided: bool = True
    # The decoder is photo-guided (runtime/tiny_decoder.py): besides the latents it takes the input
    # photo and each frame's focus offset.
    photo_guided_decoder: bool = False

    @classmethod
    def of(cls, refocuser, resolutions=None) -> "ModelDims":
        cfg = refocuser.config
        if not resolutions:
            resolutions = (cfg.working_size,)
        return cls(
            latent_channels=refocuser.latent_channels,
            embed_dim=int(refocuser.image_encoder.config.projection_dim),
            clip_size=tuple(refocuser.clip_size),
            vae_scale_factor=refocuser.vae_scale_factor,
            num_frames=cfg.num_frames,
            decode_chunk_sizes=tuple(sorted(set(cfg.decode_chunk_sizes), reverse=True)),
            num_time_ids=len(cfg.added_time_ids),
            resolutions=tuple((int(w), int(h)) for w, h in resolutions),
            guided=cfg.guidance_scale > 0,
            photo_guided_decoder=bool(getattr(refocuser.vae, "takes_guide", False)),
        )

    def validate(self) -> None:
        for w, h in self.resolutions:
            if w % self.vae_scale_factor or h % self.vae_scale_factor or w <= 0 or h <= 0:
                raise InvalidArgumentError(f"resolution {w}x{h}: sides must be positive multiples "
                                           f"of {self.vae_scale_factor}")

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _range(values, opt) -> tuple[int, int, int]:
    return (min(values), opt, max(values))


def component_specs(dims: ModelDims) -> dict[str, ComponentSpec]:
    """The specs of every component, keyed by component name, for these model dims."""
    dims.validate()
    f = dims.vae_scale_factor
    widths = [w for w, _ in dims.resolutions]
    heights = [h for _, h in dims.resolutions]
    opt_w, opt_h = dims.resolutions[0]
    pixel_profile = {"height": _range(heights, opt_h), "width": _range(widths, opt_w)}
    latent_profile = {"latent_height": _range([h // f for h in heights], opt_h // f),
                      "latent_width": _range([w // f for w in widths], opt_w // f)}
    c, n = dims.latent_channels, dims.num_frames
    specs = {
        IMAGE_ENCODER: ComponentSpec(
            IMAGE_ENCODER,
            inputs=(TensorSpec("pixel_values", ("batch", 3, *dims.clip_size), "model"),),
            outputs=(TensorSpec("image_embeds", ("batch", dims.embed_dim), "model"),),
            profile={"batch": (1, 1, 2)},
            notes="CLIP vision tower + projection; input already resized and normalised"),
        # Batch: 1 for the fast path (input frame only), num_frames for the literal path.
        VAE_ENCODER: ComponentSpec(
            VAE_ENCODER,
            inputs=(TensorSpec("image", ("frames", 3, "height", "width"), "model"),),
            outputs=(TensorSpec("latent", ("frames", c, "latent_height", "latent_width"), "model"),),
            profile={"frames": (1, 1, n), **pixel_profile},
            notes="posterior mode (mean), unscaled"),
        # Batch: 1 per guidance branch in the literal loop, 2 (both branches) in the fast one.
        UNET: ComponentSpec(
            UNET,
            inputs=tuple(TensorSpec(name, dims_, "model") for name, dims_ in zip(UNET_INPUTS, (
                ("batch", n, 2 * c, "latent_height", "latent_width"), ("batch",),
                ("batch", 1, dims.embed_dim), ("batch", dims.num_time_ids)))),
            outputs=(TensorSpec(UNET_OUTPUT, ("batch", n, c, "latent_height", "latent_width"), "model"),),
            profile={"batch": (1, 2 if dims.guided else 1, 2), **latent_profile},
            notes="v-prediction; sample = scaled noisy latents ++ conditioning latents on channels"),
    }
    for chunk in dims.decode_chunk_sizes:
        latent = TensorSpec("latent", (chunk, c, "latent_height", "latent_width"), "model")
        if dims.photo_guided_decoder:  # + the input photo and the chunk's focus offsets (euler_loop.frame_offsets)
            inputs = (latent, TensorSpec("photo", (1, 3, "height", "width"), "model"),
                      TensorSpec("frame_offsets", (chunk,), "model"))
            profile = {**latent_profile, **pixel_profile}
        else:
            inputs, profile = (latent,), dict(latent_profile)
        specs[decoder_name(chunk)] = ComponentSpec(
            decoder_name(chunk),
            inputs=inputs,
            outputs=(TensorSpec("image", (chunk, 3, "height", "width"), "model"),),
            profile=profile,
            num_frames=chunk,
            notes="temporal decoder over one chunk of frames; input already divided by the scaling factor"
                  + ("; guided by the input photo" if dims.photo_guided_decoder else ""))
    return specs
