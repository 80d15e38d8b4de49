"""A bundle given as the ExecuTorch export's --model: its other artifacts move into the new bundle.

Its files (ONNX graphs, quantized tables, Core ML packages, sensitivity tables) are copied into the
staging folder after their checksums are verified, and its artifact, gate, quantization and Core ML
tables are merged into the new manifest, so the new bundle runs on every backend the old one did
and dispatch can time ExecuTorch against them. The component specs must be the ones the export
computed (same model, same working sizes); its own executorch tables are not carried (the new
export replaces them)."""
from __future__ import annotations

import shutil
from pathlib import Path

from refocus_edge.runtime.artifacts import EXECUTORCH
from refocus_edge.runtime.bundle import read_bundle, resolve_inside
from refocus_edge.runtime.errors import InvalidArgumentError


def carry_bundle(source: Path, stage: Path, manifest, specs: dict) -> list[str]:
    """Copy `source`'s artifacts into `stage` and merge its tables into `manifest`; returns the kinds carried."""
    bundle = read_bundle(source)
    if {n: s.to_json() for n, s in bundle.specs.items()} != {n: s.to_json() for n, s in specs.items()}:
        raise InvalidArgumentError(f"{source}: its component specs differ from the model's at these working "
                                   "sizes; re-export it, or pass the model folder")
    for rel in bundle.manifest.files:
        if rel.startswith(EXECUTORCH + "/") or (stage / rel).exists():
            continue  # the new export's programs; the scheduler and model config the driver wrote
        bundle.verify(rel)
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(resolve_inside(bundle.root, rel), target)
    old = bundle.manifest
    kinds = [k for k in old.artifacts if k != EXECUTORCH]
    for kind in kinds:
        for precision, table in old.artifacts[kind].items():
            manifest.set_table(kind, precision, table)
    for kind, by_precision in old.gates.items():
        if kind != EXECUTORCH:
            for precision, gates in by_precision.items():
                manifest.set_gates(kind, precision, gates)
    manifest.quantization.update(old.quantization)
    manifest.coreml.update(old.coreml)
    if old.default_precision:
        manifest.default_precision = old.default_precision
    return kinds
