"""What a sampler is asked and what it returns, without torch: the PyTorch sampler
(runtime/sampler.py) and the thin runtime's (runtime/array_sampler.py) share these."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from refocus_edge.runtime.errors import InvalidArgumentError

Mode = Literal["reference", "fast"]


@dataclass(frozen=True)
class SamplerConfig:
    """Per-run sampling choices; None means "the model's own value"."""

    position: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    mode: Mode = "fast"
    progress: bool = True


@dataclass
class SampleResult:
    frames: object  # [F, 3, H, W] float32 in [0, 1]: a torch tensor (runtime.sampler), a numpy array (thin)
    position: int
    num_inference_steps: int
    guidance_scale: float
    unet_calls: int
    sigmas: list[float]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    noise: str = ""  # where the initial noise came from (the generator and the seed), for run.json
    latents: object = None  # [1, F, C, h, w] scaled final latents, kept only by sample_focal_stack(decode=False)
    notes: list[str] = field(default_factory=list)  # how the run differed from the plain loop (for the log, run.json)


@dataclass(frozen=True)
class Settings:
    position: int
    steps: int
    guidance: float


def resolve_settings(refocuser, cfg: SamplerConfig, image_shape) -> Settings:
    """The run's position, steps and guidance (the model's own where `cfg` says None), checked
    together with the image shape ([1, 3, H, W], sides multiples of the VAE's factor)."""
    mcfg = refocuser.config
    frames_n = mcfg.num_frames
    position = mcfg.default_position if cfg.position is None else int(cfg.position)
    if not 0 <= position < frames_n:
        raise InvalidArgumentError(f"focal position {position} is outside 0..{frames_n - 1}")
    steps = mcfg.num_inference_steps if cfg.num_inference_steps is None else int(cfg.num_inference_steps)
    if steps < 1:
        raise InvalidArgumentError(f"--steps must be >= 1, got {steps}")
    guidance = mcfg.guidance_scale if cfg.guidance_scale is None else float(cfg.guidance_scale)
    if len(image_shape) != 4 or tuple(image_shape[:2]) != (1, 3):
        raise InvalidArgumentError(f"image must be [1, 3, H, W], got {list(image_shape)}")
    factor = refocuser.vae_scale_factor
    if image_shape[-1] % factor or image_shape[-2] % factor:
        raise InvalidArgumentError(f"image sides {list(image_shape[-2:])} must be multiples of {factor}")
    return Settings(position, steps, guidance)
