"""Core ML recipes of `refocus quantize` (w8, p6, p4): the Core ML exporter's weight
compression, so there is one implementation of compressing, converting, checking
and gating Core ML packages (export/targets/target_coreml.py, export/coreml/). The bundle holds the fp16 packages
and the compressed ones; its end-to-end gate runs the compressed weights in
PyTorch through the same sampler (Core ML itself runs only on macOS)."""
from __future__ import annotations

from pathlib import Path


def quantize_coreml(cfg, recipe, log):
    from refocus_edge.export.targets.target_coreml import CoreMLExportConfig, export_coreml
    from refocus_edge.export.coreml.recipes import CoreMLRecipe
    from refocus_edge.quantization.report import QuantizeReport

    resolution = cfg.resolutions[0] if cfg.resolutions else None
    export = export_coreml(CoreMLExportConfig(
        model=cfg.model, out=Path(cfg.out), resolution=resolution, force=cfg.force,
        recipes=(CoreMLRecipe("fp16"), CoreMLRecipe("fp16", recipe.coreml_compress))), log=log)
    report = QuantizeReport(out=Path(cfg.out), recipe=recipe.name, gates=list(export.gates))
    for row in export.rows:
        report.sizes_mib[f"{row['recipe']}/{row['component']}"] = round(row["weights_mib"], 3)
    return report
