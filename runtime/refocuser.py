"""The loaded refocuser: its four components and the conventions needed to sample with them.

Its own module so that every loader (diffusers folders in loading.py, exported bundles in
bundle_loading.py and, without torch, thin_loading.py) builds the same object without
importing the others."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from refocus_edge.runtime.model_config import RefocusModelConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Refocuser:
    """The four components plus the conventions needed to sample with them."""

    # torch modules, or anything with their call signatures (backend adapters: runtime/backends/adapters.py)
    unet: object
    vae: object
    image_encoder: object
    scheduler: object  # a diffusers scheduler, or (thin runtime) runtime.sigmas.StoredScheduler
    config: RefocusModelConfig
    source: Path
    clip_mean: tuple[float, float, float] = CLIP_MEAN
    clip_std: tuple[float, float, float] = CLIP_STD
    clip_size: tuple[int, int] = (224, 224)
    notes: list[str] = field(default_factory=list)
    choices: list = field(default_factory=list)  # per component: backend, device, reason (bundles)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)
