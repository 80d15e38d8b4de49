"""The reference backend: the source model's PyTorch modules, fp32 eager.

For a bundle it loads the model the bundle was exported from (by shipped name
or path, as the manifest records it) and refuses one whose hash changed since.
"""
from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

from refocus_edge.runtime.backends.base import Availability, Backend, BackendUnavailableError, Runner
from refocus_edge.runtime.backends.boundary import numpy_facing
from refocus_edge.runtime.importable import importable


@functools.lru_cache(maxsize=2)
def _source_refocuser(path: str, expected_hash: str | None, decoder: str = "full"):
    """The source model, loaded and hash-checked once for all its components (hashing the
    released model reads 6 GB)."""
    from refocus_edge.runtime.artifacts import model_hash
    from refocus_edge.runtime.loading import load_refocuser

    if expected_hash and model_hash(Path(path)) != expected_hash:
        raise BackendUnavailableError(f"the source model at {path} changed since the bundle was "
                                      "exported (hash differs); re-export the bundle")
    return load_refocuser(path, decoder=decoder)  # the decoder the bundle was exported with


def source_folder(bundle) -> Path | None:
    from refocus_edge.runtime.zoo import resolve_model

    src = bundle.source
    for candidate in (src.get("model"), src.get("path")):
        if not candidate:
            continue
        try:
            folder = resolve_model(candidate)
        except Exception:  # an unknown name: try the next candidate
            continue
        if folder.is_dir():
            return folder
    return None


def source_decoder(bundle) -> str:
    """The decoder a bundle was exported with ("full" for bundles that predate the tiny one)."""
    return bundle.source.get("decoder", "full")


class TorchBackend(Backend):
    name = "torch"
    artifact = "torch"
    priority = 0

    def availability(self) -> Availability:
        # Looked up, not imported: a run on another backend should not pay torch's import.
        if not importable("torch"):
            return Availability(False, "package 'torch' is not installed (the thin runtime runs bundles "
                                       "without it; pip install 'refocus-edge[export]' for the reference)")
        version = importlib.metadata.version("torch")
        return Availability(True, f"PyTorch {version}, CPU, fp32 eager (the reference)", {"torch": version})

    def load_arrays(self, bundle, spec, precision: str) -> Runner:
        return numpy_facing(self.load(bundle, spec, precision))  # torch computes; numpy at the boundary

    def load(self, bundle, spec, precision: str) -> Runner:
        self.require()
        import torch

        from refocus_edge.runtime.component_modules import component_module

        folder = source_folder(bundle)
        if folder is None:
            raise BackendUnavailableError(
                f"the source model of this bundle ({bundle.source.get('model') or bundle.source.get('path')}) "
                "is not on this machine; the torch backend runs the original PyTorch model")
        source = _source_refocuser(str(folder), bundle.source.get("hash"), source_decoder(bundle))
        module = component_module(source, spec)

        def run(feeds):
            with torch.no_grad():
                out = module(*(feeds[name] for name in spec.input_names))
            return {spec.output_names[0]: out.float()}

        return Runner(spec, run, "torch cpu fp32")


BACKEND = TorchBackend()
