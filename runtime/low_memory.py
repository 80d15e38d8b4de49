"""Low-memory mode: one component resident at a time.

`LazyComponent` stands in for a component: its config is known up front (read
from JSON, so shapes can be planned without weights), the weights load on first
use and `release()` drops them. The sampler releases each component when its
stage ends (image encoder, VAE encode, UNet loop, VAE decode), so peak memory is
the largest single component plus activations instead of all four together. The
price is loading the VAE twice (encode, then decode) and no reuse across runs.
"""
from __future__ import annotations

import gc
from typing import Callable


class LazyComponent:
    def __init__(self, name: str, config, loader: Callable[[], object], dtype=None):
        self._name, self._config, self._loader, self._dtype = name, config, loader, dtype
        self._module = None
        self.loads = 0  # how many times the weights were loaded (reported by benchmarks)

    @property
    def config(self):
        return self._config

    @property
    def dtype(self):
        return self._dtype if self._dtype is not None else self._get().dtype

    @property
    def resident(self) -> bool:
        return self._module is not None

    def _get(self):
        if self._module is None:
            self._module = self._loader()
            self.loads += 1
        return self._module

    def release(self) -> None:
        if self._module is not None:
            close = getattr(self._module, "close", None)
            if callable(close):
                close()
            self._module = None
            gc.collect()

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):  # encode/decode/parameters/... of the real component
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def release(component) -> None:
    """Free a component if it supports it (a LazyComponent); a no-op otherwise."""
    fn = getattr(type(component), "release", None)
    if fn is not None:
        component.release()


class ResidentSlot:
    """The one artifact kept loaded among runners that load on demand: loading another drops it."""

    def __init__(self):
        self.holder = None

    def take(self, holder) -> None:
        if self.holder is not None and self.holder is not holder:
            self.holder.unload()
        self.holder = holder


def load_on_demand(runners: dict, slot: ResidentSlot) -> dict:
    """Runners that can load their artifact on their first call (ExecuTorch programs: an `on_demand`
    method) are told to, sharing `slot`, so that inside a component group (the VAE's encoder and
    decoders) only the program being called is resident. Other runners are left as they are."""
    for runner in runners.values():
        while not hasattr(runner, "on_demand") and hasattr(runner, "inner"):
            runner = runner.inner  # behind a numpy/torch boundary
        if hasattr(runner, "on_demand"):
            runner.on_demand(slot)
    return runners


def low_memory_mode(refocuser) -> bool:
    return any(isinstance(c, LazyComponent) for c in (refocuser.unet, refocuser.vae, refocuser.image_encoder))
