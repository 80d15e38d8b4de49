"""What a refocuser folder says about how to run it (`refocus.json`).

The released learn2refocus checkpoint has no such file, so every default here
is the reference's value (../shared/reference/learn2refocus.md). A shipped
model only writes the fields where it differs (e.g. its working size).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from refocus_edge.runtime.errors import InvalidArgumentError, ModelLoadError
from refocus_edge.runtime.learnt_scale import generation_size
from refocus_edge.runtime.resize import ResolutionPolicy

REFOCUS_CONFIG_NAME = "refocus.json"
NUM_FOCAL_POSITIONS = 9  # the method is defined for 9 focal positions (iPhone lens 0.0..0.8)


@dataclass(frozen=True)
class RefocusModelConfig:
    """Sampling and data conventions of one refocuser."""

    num_frames: int = NUM_FOCAL_POSITIONS
    num_inference_steps: int = 25
    guidance_scale: float = 1.5
    # fps id (fps 7 minus 1), motion bucket, noise augmentation: the reference's [6, 0, 0].
    added_time_ids: tuple[float, float, float] = (6.0, 0.0, 0.0)
    # The temporal decoder mixes frames inside a chunk only, so chunking changes pixels.
    decode_chunk_sizes: tuple[int, ...] = (8, 1)
    # Where the input photo is assumed to sit when the user does not say (middle of the stack).
    default_position: int = 4
    # Reference rule for photos: <= 500k pixels, sides multiples of 64.
    max_pixels: int | None = 500_000
    size_multiple: int = 64
    fixed_size: tuple[int, int] | None = None  # (W, H) working size for models trained at one size
    # Photos at their own shape (runtime/resize.py): a short side of at least this, under max_pixels,
    # aspect capped at max_aspect. Set, it serves photos so even where fixed_size is set; fixed_size then
    # stays the size the model is trained, exported and benchmarked at.
    min_short_side: int | None = None
    max_aspect: float | None = None
    # A model that learnt focus blur at a smaller size generates with the photo shrunk by this factor (its
    # short side never below fixed_size's) and brings the frames back to the served size
    # (runtime/learnt_scale.py), in either mode: it is how the model is run, around the sampler's loop.
    # None (the released checkpoint): generate at the served size.
    generate_scale: float | None = None
    # Distilled students carry their own sigmas (None: the scheduler's Karras schedule).
    sigmas: tuple[float, ...] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def resolution_policy(self) -> ResolutionPolicy:
        if self.min_short_side is not None:
            return ResolutionPolicy(max_pixels=self.max_pixels or 500_000, multiple=self.size_multiple,
                                    min_short_side=self.min_short_side, max_aspect=self.max_aspect)
        if self.fixed_size is not None:
            return ResolutionPolicy(fixed=tuple(self.fixed_size))
        return ResolutionPolicy(max_pixels=self.max_pixels or 500_000, multiple=self.size_multiple)

    @property
    def working_size(self) -> tuple[int, int]:
        """(W, H) the model's graphs are exported and measured at: its fixed size, else the
        reference's 512x320 (a multiple of 64 under the pixel budget)."""
        return tuple(self.fixed_size) if self.fixed_size else (512, 320)

    def generation_size(self, w: int, h: int) -> tuple[int, int]:
        """(W, H) this model generates at for a photo served at w x h (runtime/learnt_scale.py)."""
        if self.generate_scale is None:
            return w, h
        return generation_size(w, h, self.generate_scale, min(self.fixed_size) if self.fixed_size else 0)

    @property
    def decoder(self) -> str:
        """The decoder this config runs: "tiny" once runtime/loading.py swapped in the model's tiny
        decoder (and in a bundle exported with it), else "full"."""
        return self.extra.get("decoder", "full")

    @property
    def uses_guidance(self) -> bool:
        # The reference applies guidance whenever the weight is > 0 (stock diffusers: > 1).
        return self.guidance_scale > 0

    def validate(self, where: Path | str) -> "RefocusModelConfig":
        if self.num_frames != NUM_FOCAL_POSITIONS:
            raise ModelLoadError(
                f"num_frames is {self.num_frames}, but refocusing is defined for exactly "
                f"{NUM_FOCAL_POSITIONS} focal positions; fix {REFOCUS_CONFIG_NAME}", where)
        if sum(self.decode_chunk_sizes) != self.num_frames or min(self.decode_chunk_sizes) < 1:
            raise ModelLoadError(
                f"decode_chunk_sizes {list(self.decode_chunk_sizes)} must be positive and sum to "
                f"{self.num_frames}; fix {REFOCUS_CONFIG_NAME}", where)
        if not 0 <= self.default_position < self.num_frames:
            raise ModelLoadError(f"default_position {self.default_position} is outside 0..8", where)
        if self.num_inference_steps < 1:
            raise ModelLoadError("num_inference_steps must be >= 1", where)
        if self.sigmas is not None and len(self.sigmas) != self.num_inference_steps:
            raise ModelLoadError(
                f"{len(self.sigmas)} sigmas given for {self.num_inference_steps} steps", where)
        g = self.generate_scale
        if g is not None and (not isinstance(g, (int, float)) or isinstance(g, bool) or not 0 < g <= 1):
            raise ModelLoadError(f"generate_scale must be a number in (0, 1] (the share of the served size the "
                                 f"model generates at), got {g!r}; fix {REFOCUS_CONFIG_NAME}", where)
        if self.min_short_side is not None:
            try:
                self.resolution_policy  # checks min_short_side, max_aspect and the budget together
            except InvalidArgumentError as exc:
                raise ModelLoadError(f"{exc}; fix {REFOCUS_CONFIG_NAME}", where) from None
        return self

    def to_json(self) -> dict:
        defaults = RefocusModelConfig()
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(defaults, f.name):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def load_model_config(model_dir: Path) -> RefocusModelConfig:
    path = Path(model_dir) / REFOCUS_CONFIG_NAME
    if not path.is_file():
        return RefocusModelConfig()
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot parse ({exc}); fix or delete the file", path) from None
    known = {f.name for f in fields(RefocusModelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ModelLoadError(f"unknown keys {unknown}; known keys are {sorted(known)}", path)
    tuples = {"added_time_ids", "decode_chunk_sizes", "fixed_size", "sigmas"}
    kwargs = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in raw.items()}
    try:
        return RefocusModelConfig(**kwargs).validate(path)
    except TypeError as exc:
        raise ModelLoadError(f"bad value ({exc})", path) from None


def save_model_config(cfg: RefocusModelConfig, model_dir: Path) -> Path:
    path = Path(model_dir) / REFOCUS_CONFIG_NAME
    path.write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    return path


__all__ = ["RefocusModelConfig", "load_model_config", "save_model_config"]
