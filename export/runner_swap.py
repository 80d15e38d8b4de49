"""Temporarily replace component runners inside a bundle refocuser.

Calibration (recording wrappers) and drift measurement (quantized graphs) both
put other runners in place of a bundle's own for the length of a sampling run;
this is the one place that does the swap and always puts the originals back,
even when sampling raises.
"""
from __future__ import annotations

from contextlib import contextmanager


def component_adapters(refocuser) -> dict:
    """{component name: the adapter (UNet, VAE or image-encoder wrapper) that holds its runner}."""
    return {name: adapter for adapter in (refocuser.unet, refocuser.vae, refocuser.image_encoder)
            for name in adapter.runners}


def component_runners(refocuser) -> dict:
    """{component name: its current runner}, over all components."""
    return {name: adapter.runners[name] for name, adapter in component_adapters(refocuser).items()}


@contextmanager
def swapped_runners(refocuser, replace):
    """Run the body with runners replaced. `replace` is {component: runner}, or a callable
    (component, runner) -> runner applied to every component."""
    adapters = component_adapters(refocuser)
    saved = component_runners(refocuser)
    swaps = ({name: replace(name, runner) for name, runner in saved.items()} if callable(replace)
             else dict(replace or {}))
    unknown = sorted(set(swaps) - set(adapters))
    if unknown:
        raise KeyError(f"no component {unknown} in this refocuser (it has {sorted(adapters)})")
    try:
        for name, runner in swaps.items():
            adapters[name].runners[name] = runner
        yield refocuser
    finally:
        for name, runner in saved.items():
            adapters[name].runners[name] = runner
