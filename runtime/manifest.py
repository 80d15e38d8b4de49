"""A bundle's manifest.json as one typed object: read, validated, extended and written here only.

Every exporter (ONNX, Core ML), `refocus quantize`, the TensorRT engine builder and the
runtime go through `Manifest`, so a table is spelled once and a malformed manifest is
refused with one message naming the file and the field. Paths inside the bundle come
from runtime/artifacts.py; this module only records them.

Tables (all JSON objects):
  source, dims, components (ComponentSpec.to_json per name), configs, clip, sampler, tools
  artifacts[kind][precision][component] = bundle-relative path      kind: onnx, coreml, onnx-tensorrt, onnx-openvino
  gates[kind][precision][component]     = GateResult.to_json()      plus "end_to_end" per precision
  files[path]                            = sha256, every file but the manifest
  quantization[recipe], coreml[recipe][component]: what quantize and the Core ML exporter record
  executorch[variant][component]: the program's static input shapes, whether it runs one item of a
    batch per call, the share of its graph delegated to XNNPACK and its size (the ExecuTorch exporter)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from refocus_edge.runtime.artifacts import BUNDLE_FORMAT, MANIFEST_NAME, file_sha256
from refocus_edge.runtime.errors import RefocusError


class BundleError(RefocusError):
    """A bundle is malformed, tampered with or refers outside itself."""


class ManifestError(BundleError):
    """A manifest that cannot be read: unknown format, a missing or mistyped field."""


# field -> JSON type every manifest must have; the order is the order written.
REQUIRED = {"format": int, "created_by": str, "source": dict, "dims": dict, "components": dict,
            "configs": dict, "clip": dict, "sampler": dict, "tools": dict, "artifacts": dict, "gates": dict}
OPTIONAL = {"default_precision": str, "quantization": dict, "coreml": dict, "executorch": dict,
            "export_seconds": (int, float)}


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` except the manifest itself, by bundle-relative path."""
    return {p.relative_to(root).as_posix(): file_sha256(p)
            for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}


@dataclass
class Manifest:
    created_by: str
    source: dict
    dims: dict
    components: dict
    configs: dict
    clip: dict
    sampler: dict
    tools: dict
    artifacts: dict = field(default_factory=dict)
    gates: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    default_precision: str | None = None
    quantization: dict = field(default_factory=dict)
    coreml: dict = field(default_factory=dict)
    executorch: dict = field(default_factory=dict)  # [variant][component]: static shapes, XNNPACK share, size
    export_seconds: float | None = None
    format: int = BUNDLE_FORMAT

    # ------------------------------------------------------------ reading
    @classmethod
    def from_json(cls, data, where: Path | str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError("the manifest is not a JSON object; re-export the bundle", where)
        if isinstance(data.get("format"), bool) or data.get("format") != BUNDLE_FORMAT:
            raise ManifestError(f"unsupported bundle format {data.get('format')!r} (this runtime reads format "
                                f"{BUNDLE_FORMAT}); re-export the bundle with this version", where)
        for key, kind in REQUIRED.items():
            if key not in data:
                raise ManifestError(f"the manifest has no '{key}' field; re-export the bundle", where)
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise ManifestError(f"the manifest's '{key}' is {type(data[key]).__name__}, expected "
                                    f"{kind.__name__}; re-export the bundle", where)
        for key, kind in OPTIONAL.items():
            if data.get(key) is not None and not isinstance(data[key], kind):
                raise ManifestError(f"the manifest's '{key}' has the wrong type "
                                    f"({type(data[key]).__name__}); re-export the bundle", where)
        files = data.get("files", {})
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ManifestError("the manifest's 'files' is not a table of checksums; re-export the bundle", where)
        for kind, by_precision in data["artifacts"].items():
            if not isinstance(by_precision, dict) or not all(
                    isinstance(t, dict) and all(isinstance(r, str) for r in t.values()) for t in by_precision.values()):
                raise ManifestError(f"the manifest's artifacts['{kind}'] is not a table of precisions -> "
                                    "component -> path; re-export the bundle", where)
        unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL) - {"files"})
        if unknown:
            # Rewriting the manifest (refocus quantize does) would silently drop it.
            raise ManifestError(f"unknown field '{unknown[0]}' in the manifest: written by a newer version? "
                                "Upgrade refocus-edge or re-export the bundle", where)
        known = {k: data[k] for k in (*REQUIRED, *OPTIONAL, "files") if k in data}
        return cls(**known)

    @classmethod
    def read(cls, root: Path) -> "Manifest":
        path = Path(root) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read the manifest ({exc})", path) from None
        return cls.from_json(data, path)

    def to_json(self) -> dict:
        out = {key: getattr(self, key) for key in REQUIRED}
        for key in OPTIONAL:
            value = getattr(self, key)
            if value not in (None, {}):
                out[key] = value
        out["files"] = self.files
        return out

    # ------------------------------------------------------------ writing
    def write(self, root: Path) -> "Manifest":
        """Checksum every file under `root`, then write manifest.json last and atomically."""
        self.files = checksums(Path(root))
        tmp = Path(root) / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(Path(root) / MANIFEST_NAME)
        return self

    # ------------------------------------------------------------ artifacts and gates
    def precisions(self, kind: str) -> list[str]:
        return list(self.artifacts.get(kind, {}))

    def table(self, kind: str, precision: str) -> dict[str, str]:
        """component -> bundle-relative path of `kind` artifacts at `precision` ({} if none)."""
        return dict(self.artifacts.get(kind, {}).get(precision, {}))

    def set_table(self, kind: str, precision: str, table: dict[str, str]) -> None:
        self.artifacts.setdefault(kind, {})[precision] = dict(table)

    def gate_table(self, kind: str, precision: str) -> dict[str, dict]:
        return dict(self.gates.get(kind, {}).get(precision, {}))

    def set_gates(self, kind: str, precision: str, gates: dict[str, dict]) -> None:
        self.gates.setdefault(kind, {})[precision] = dict(gates)

    def gate(self, kind: str, precision: str, component: str) -> dict | None:
        return self.gates.get(kind, {}).get(precision, {}).get(component)

    def gate_passed(self, kind: str, precision: str, component: str) -> bool:
        gate = self.gate(kind, precision, component)
        return bool(gate and gate.get("passed"))

    def paths(self):
        """Every bundle-relative path the manifest names (artifacts and checksummed files)."""
        yield from self.files
        for by_precision in self.artifacts.values():
            for table in by_precision.values():
                yield from table.values()
