"""Which sampler a run uses (`refocus run`, `refocus bench --against-reference`), and the model it loads.

* A bundle in mode fast runs on the thin runtime (refocus_edge.runtime.array_sampler): numpy
  arrays through the bundle's backends, no torch or diffusers import unless a chosen backend
  needs torch (the torch and TensorRT backends adapt at their boundary). Its noise comes from
  numpy's PCG64 generator.
* A model folder, or mode reference (the literal PyTorch loop), runs on PyTorch
  (refocus_edge.runtime.sampler), with torch's generator's noise, as before the thin runtime.

Either way the caller gets float32 numpy frames [F, 3, H, W] in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refocus_edge.runtime.errors import ModelLoadError
from refocus_edge.runtime.importable import importable

INSTALL_TORCH = "pip install 'refocus-edge[export]' (or pip install torch diffusers transformers)"


@dataclass
class RunModel:
    refocuser: object
    thin: bool  # the thin runtime's numpy sampler, else the PyTorch sampler

    @property
    def runtime(self) -> str:
        return "thin" if self.thin else "torch"

    def sample(self, rgb: np.ndarray, cfg):
        """float32 H x W x 3 in [0, 1] -> SampleResult with float32 numpy frames [F, 3, H, W] in [0, 1]. A model
        with `generate_scale` generates at that share of the photo's size (runtime/learnt_scale.py)."""
        h, w = rgb.shape[:2]
        size = self.refocuser.config.generation_size(w, h)
        if size == (w, h):
            return self._sample(rgb, cfg)
        from refocus_edge.runtime.learnt_scale import sample_at_learnt_scale

        return sample_at_learnt_scale(self._sample, rgb, cfg, size)

    def _sample(self, rgb: np.ndarray, cfg):
        image = np.ascontiguousarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None] * 2 - 1
        if self.thin:
            from refocus_edge.runtime.array_sampler import sample_focal_stack_arrays

            return sample_focal_stack_arrays(self.refocuser, image, cfg)
        import torch

        from refocus_edge.runtime.sampler import sample_focal_stack

        result = sample_focal_stack(self.refocuser, torch.from_numpy(np.ascontiguousarray(image)), cfg)
        result.frames = result.frames.numpy()
        return result


def run_decoder(mode: str) -> str:
    """The decoder a model folder runs with when none is asked for: the reference decodes with the
    model's own VAE decoder (../shared/reference); fast mode with its gated photo-guided decoder
    where it has one, else the full one."""
    from refocus_edge.runtime.component_names import RUN_DEFAULT

    return "full" if mode == "reference" else RUN_DEFAULT


def load_run_model(model, unet, mode: str, backend, precision, low_memory: bool,
                   decoder: str | None = None) -> RunModel:
    """The refocuser for a run, on the thin runtime where it can run (a bundle, mode fast)."""
    from refocus_edge.runtime.bundle import is_bundle
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.zoo import resolve_model

    root = resolve_model(model)
    thin = is_bundle(root) and mode == "fast"
    if is_bundle(root) and not thin and not importable("torch"):
        raise ModelLoadError(f"--mode {mode} is the literal PyTorch loop and needs torch, which is not installed "
                             f"here; run the bundle with --mode fast (the thin runtime) or {INSTALL_TORCH}", root)
    if decoder is None and not is_bundle(root):
        decoder = run_decoder(mode)
    refocuser = load_refocuser(model, unet=unet, backend=backend, precision=precision, low_memory=low_memory,
                               arrays=thin, decoder=decoder)
    return RunModel(refocuser, thin)
