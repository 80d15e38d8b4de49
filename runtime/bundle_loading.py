"""Turn a bundle into a Refocuser whose components are backend adapters.

The result has the same fields as a PyTorch refocuser (runtime/loading.py), so
`sample_focal_stack` runs it unchanged; `choices` says which backend runs each
component and why. Reduced-precision VAE decoders are wrapped so that a chunk
that comes out NaN/inf is re-run in fp32 (runtime/backends/finite_guard.py).

With `arrays=True` (the thin runtime) the components take and return numpy arrays
and the scheduler is its stored config (runtime/sigmas.py): nothing here imports
torch or diffusers then, unless a backend that needs torch is chosen; the thin
sampler (runtime/array_sampler.py) runs the result.
"""
from __future__ import annotations

import json
from pathlib import Path

from refocus_edge.runtime.backends.adapters import AttrConfig, ImageEncoderAdapter, UNetAdapter, VaeAdapter
from refocus_edge.runtime.backends.finite_guard import guard_decoders
from refocus_edge.runtime.bundle import BundleError, read_bundle, resolve_inside
from refocus_edge.runtime.components import VAE_ENCODER, VAE_PREFIX
from refocus_edge.runtime.dispatch import load_runners, requested_backend


ANY_PRECISION = "any"  # every precision that passed its gate, per component, fastest measured


def _default_precision(bundle, requested: str, precision: str | None) -> tuple[str | None, str]:
    """A quantized bundle runs its recipe unless told otherwise (`refocus run --model BUNDLE`
    picks the int8 graphs up): the manifest's default precision applies when no precision is
    given and a backend that can run it is available here. `ANY_PRECISION` lets dispatch time every
    gated precision per component instead (an int8 UNet beside bf16 decoders, where each is fastest)."""
    from refocus_edge.runtime.backends import get_backend, registry

    if precision == ANY_PRECISION:
        return None, "precision any: dispatch timed every precision that passed its gate, per component"
    default = bundle.manifest.default_precision
    if precision is not None or not default:
        return precision, ""
    names = list(registry()) if requested == "auto" else [requested]
    for name in names:
        b = get_backend(name)
        if b.artifact != "torch" and default in bundle.precisions(b.artifact) and b.supports(default) \
                and b.availability().available:
            return default, f"precision {default}: the bundle's default (its quantization recipe)"
    return None, (f"the bundle's default precision {default} has no backend here "
                  f"({'any' if requested == 'auto' else requested}); using any precision that passed its gate")


def _scheduler(folder: Path, arrays: bool):
    if arrays:
        from refocus_edge.runtime.sigmas import StoredScheduler

        return StoredScheduler(json.loads((folder / "scheduler_config.json").read_text()))
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_pretrained(folder)


def served_config(config, specs: dict):
    """(the model config a bundle serves photos with, a note or None). A model that serves photos at
    their own shape (min_short_side) does so from a bundle only when its graphs' size profile takes
    every size that policy makes them run at (with generate_scale, the shrunk sizes the model
    generates at); otherwise photos are fitted to the working size the graphs were exported at, and
    the note says how to export for their own shape."""
    from dataclasses import replace

    from refocus_edge.runtime.resize import target_size

    if config.min_short_side is None:
        return config, None
    policy = config.resolution_policy
    short = policy.min_short_side
    # The graphs see the sizes the model generates at: the smallest from a square photo at the minimum,
    # the longest from the widest aspect served.
    short = min(config.generation_size(short, short))
    longest = max(config.generation_size(*target_size(1_000_000, 1_000, policy)))
    spec = specs.get(VAE_ENCODER)
    profile = spec.profile if spec is not None else {}
    h, w = profile.get("height"), profile.get("width")
    if h and w and max(h[0], w[0]) <= short and min(h[2], w[2]) >= longest:
        return config, None
    fallback = replace(config, min_short_side=None, max_aspect=None, generate_scale=None)
    took = f"{w[0]}..{w[2]} x {h[0]}..{h[2]} px" if h and w else "one size"
    work = fallback.working_size
    return fallback, (f"this bundle's graphs take {took}: photos are fitted to {work[0]}x{work[1]}, not served "
                      f"at their own shape ({policy.describe()}); export with --resolution {work[0]}x{work[1]} "
                      f"{longest}x{short} {short}x{longest} for that")


def load_bundle_refocuser(path: Path, backend: str | None = None, precision: str | None = None,
                          low_memory: bool = False, arrays: bool = False):
    from refocus_edge.runtime.refocuser import CLIP_MEAN, CLIP_STD, Refocuser
    from refocus_edge.runtime.model_config import load_model_config

    bundle = read_bundle(path)
    configs = bundle.manifest.configs
    for part in ("unet", "vae", "image_encoder"):
        if part not in configs:
            raise BundleError(f"manifest has no '{part}' config", bundle.root)
    for rel in ("scheduler/scheduler_config.json", "refocus.json"):
        bundle.verify(rel)
    scheduler = _scheduler(resolve_inside(bundle.root, "scheduler"), arrays)
    requested = requested_backend(backend)
    precision, default_note = _default_precision(bundle, requested, precision)
    groups = {"unet": (UNetAdapter, ["unet"]),
              "vae": (VaeAdapter, [n for n in bundle.specs if n.startswith(VAE_PREFIX)]),
              "image_encoder": (ImageEncoderAdapter, ["image_encoder"])}
    choices: list = []
    if low_memory:
        from refocus_edge.runtime.low_memory import LazyComponent, ResidentSlot, load_on_demand

        slot = ResidentSlot()  # one program resident across every group, for runners that load on demand

        def loader(part):
            cls, names = groups[part]
            runners, picked = load_runners(bundle, requested, precision, components=names, arrays=arrays)
            runners = load_on_demand(runners, slot)
            runners = guard_decoders(bundle, runners, picked, arrays)
            known = {c.component for c in choices}
            choices.extend(c for c in picked if c.component not in known)
            return cls(configs[part], runners)

        # Adapters take and return fp32 whatever their graphs' precision (torch asks; the thin sampler does not).
        dtype = None if arrays else _torch_float32()
        parts = {part: LazyComponent(part, AttrConfig(configs[part]), (lambda p=part: loader(p)), dtype)
                 for part in groups}
    else:
        runners, choices = load_runners(bundle, requested, precision, arrays=arrays)
        runners = guard_decoders(bundle, runners, choices, arrays)
        parts = {part: cls(configs[part], {n: runners[n] for n in names}) for part, (cls, names) in groups.items()}
    clip = bundle.manifest.clip
    config, size_note = served_config(load_model_config(bundle.root), bundle.specs)
    refocuser = Refocuser(
        unet=parts["unet"],
        vae=parts["vae"],
        image_encoder=parts["image_encoder"],
        scheduler=scheduler,
        config=config,
        source=bundle.root,
        clip_mean=tuple(clip.get("mean", CLIP_MEAN)),
        clip_std=tuple(clip.get("std", CLIP_STD)),
        clip_size=tuple(clip.get("size", (224, 224))),
    )
    refocuser.choices = choices  # filled as components load in low-memory mode
    if default_note:
        refocuser.notes.append(default_note)
    if size_note:
        refocuser.notes.append(size_note)
    refocuser.notes.extend(c.note for c in choices)
    if low_memory:
        refocuser.notes.append("low-memory mode: one component resident at a time")
    return refocuser


def _torch_float32():
    import torch

    return torch.float32
