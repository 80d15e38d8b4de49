"""Bundles: a folder written by `refocus export`/`refocus quantize`, loadable wherever a model is.

Layout: manifest.json, refocus.json, scheduler/, and the artifacts the manifest
lists (onnx/<precision>/<component>.onnx, ...). The manifest records the
component specs, the sampler config, the source model and its hash, tool
versions, parity gate results and a sha256 for every file. Before anything is
loaded the runtime checks that every path stays inside the bundle and that each
file it is about to load matches its checksum.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from refocus_edge.runtime.artifacts import MANIFEST_NAME, file_sha256
from refocus_edge.runtime.components import ComponentSpec
from refocus_edge.runtime.manifest import BundleError, Manifest  # noqa: F401 (BundleError: bundle's public name)


def is_bundle(path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST_NAME).is_file()


def resolve_inside(root: Path, rel: str) -> Path:
    """`root/rel`, refusing absolute paths, `..` and links that lead out of the bundle."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"manifest has an empty or non-string path {rel!r}", root / MANIFEST_NAME)
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise BundleError(f"manifest path {rel!r} is absolute; bundle paths must be relative",
                          root / MANIFEST_NAME)
    if ".." in Path(rel).parts:
        raise BundleError(f"manifest path {rel!r} climbs out of the bundle with '..'", root / MANIFEST_NAME)
    real_root = root.resolve()
    target = (root / rel).resolve()
    if target != real_root and real_root not in target.parents:
        raise BundleError(f"manifest path {rel!r} is a link that leads outside the bundle ({target})",
                          root / MANIFEST_NAME)
    return root / rel


@dataclass
class Bundle:
    root: Path
    manifest: Manifest

    @property
    def specs(self) -> dict[str, ComponentSpec]:
        return {name: ComponentSpec.from_json(d) for name, d in self.manifest.components.items()}

    @property
    def source(self) -> dict:
        return self.manifest.source

    @property
    def content_hash(self) -> str:
        """Hash of the bundle's contents (its checksum table), for cache keys."""
        import hashlib

        table = json.dumps(self.manifest.files, sort_keys=True)
        return hashlib.sha256(table.encode()).hexdigest()

    def precisions(self, artifact: str) -> list[str]:
        return self.manifest.precisions(artifact)

    def artifact_path(self, artifact: str, precision: str, component: str, verify: bool = True) -> Path:
        table = self.manifest.table(artifact, precision)
        if component not in table:
            raise BundleError(f"no {artifact} {precision} artifact for component '{component}' "
                              f"(has: {sorted(table) or 'none'})", self.root)
        path = resolve_inside(self.root, table[component])
        if verify:
            self.verify(table[component])
        return path

    def gate_passed(self, artifact: str, precision: str, component: str) -> bool:
        return self.manifest.gate_passed(artifact, precision, component)

    def verify(self, rel: str) -> None:
        """Check every file at or under `rel` against the manifest's checksums."""
        files = self.manifest.files
        prefix = rel.rstrip("/") + "/"
        # The graph, a package folder's files, and an ONNX graph's external weights file.
        wanted = [f for f in files if f in (rel, rel + ".data") or f.startswith(prefix)]
        if not wanted:
            raise BundleError(f"'{rel}' has no checksum in the manifest; refusing to load it", self.root)
        # An ONNX graph over 2 GB reads its weights from "<graph>.data" beside it, listed or not:
        # an unlisted one would be loaded unchecked, so it is refused.
        if rel + ".data" not in files and (self.root / (rel + ".data")).exists():
            raise BundleError(f"'{rel}.data' has no checksum in the manifest; refusing to load it", self.root)
        for name in wanted:
            path = resolve_inside(self.root, name)
            if not path.is_file():
                raise BundleError(f"'{name}' listed in the manifest is missing; re-export the bundle", self.root)
            if file_sha256(path) != files[name]:
                raise BundleError(f"checksum mismatch for '{name}': the file changed after export "
                                  "(corrupted or edited); re-export the bundle", self.root)


def open_bundle(name_or_path) -> Bundle:
    """A bundle given by path (or a name in the models folder), or a one-line error saying what to do."""
    from refocus_edge.runtime.zoo import resolve_model

    folder = resolve_model(name_or_path)
    if not is_bundle(folder):
        raise BundleError("not a bundle (no manifest.json); run `refocus export onnx` first", folder)
    return read_bundle(folder)


def read_bundle(path) -> Bundle:
    """The bundle at `path` with its manifest validated (runtime/manifest.py) and every path it
    names checked to stay inside the bundle, used or not."""
    root = Path(path)
    manifest = Manifest.read(root)
    for rel in manifest.paths():
        resolve_inside(root, rel)
    return Bundle(root=root, manifest=manifest)
