"""`refocus export onnx`: a model folder (or shipped name) -> a verified ONNX bundle.

For every precision asked for, each component (runtime/components.py) is traced
to ONNX (export/onnx_graphs.py), run in ONNX Runtime on fresh random inputs at the
min/opt/max corners of its profile and compared with the PyTorch component (gate 1).
Then a whole focal stack is sampled through the staged bundle, loaded like any
other, and through PyTorch with the same seed and compared frame by frame with
LPIPS (gate 2). The skeleton is the driver's (export/driver.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from refocus_edge.export.targets.base import Artifact, Exporter, ExportSettings, Option, Variant
from refocus_edge.runtime.artifacts import ONNX, PRECISIONS
from refocus_edge.runtime.errors import InvalidArgumentError


@dataclass(frozen=True, kw_only=True)
class OnnxExportConfig(ExportSettings):
    precisions: tuple[str, ...] = ("fp32",)
    resolutions: tuple[tuple[int, int], ...] = ()  # (W, H); empty: the model's working size
    progress: bool = True


class OnnxExporter(Exporter):
    name = ONNX
    extension = ".onnx"
    help = "one ONNX graph per component, parity-gated, as a bundle"
    options = (
        Option("--precision", "one or more graph precisions (default fp32)", default=["fp32"],
               choices=PRECISIONS, many=True),
        Option("--resolution", "working sizes the graphs must accept; the first is the optimisation "
                               "target, min/max span them (default: the model's working size)",
               many=True, kind="size", metavar="WxH"),
    )

    def config(self, settings: ExportSettings, options: dict) -> OnnxExportConfig:
        return OnnxExportConfig(**vars(settings), precisions=tuple(options["precision"]),
                                resolutions=tuple(options["resolution"] or ()))

    def require(self, cfg: OnnxExportConfig) -> None:
        from refocus_edge.runtime.backends.backend_onnxruntime import BACKEND as ORT

        bad = [p for p in cfg.precisions if p not in PRECISIONS]
        if bad or not cfg.precisions:
            raise InvalidArgumentError(f"--precision must be among {', '.join(PRECISIONS)}, got {list(cfg.precisions)}")
        ORT.require()

    def resolutions(self, cfg: OnnxExportConfig) -> tuple:
        return cfg.resolutions

    def variants(self, cfg: OnnxExportConfig) -> list[Variant]:
        return [Variant(p, p) for p in cfg.precisions]

    def tool_versions(self) -> dict:
        import platform

        import diffusers
        import onnx
        import onnxruntime
        import torch
        import transformers

        from refocus_edge.export.onnx_graphs import OPSET

        return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "python": platform.python_version(), "opset": OPSET}

    def convert(self, job, variant: Variant, spec, module) -> Artifact:
        import torch

        from refocus_edge.export import onnx_graphs
        from refocus_edge.runtime.disk_usage import disk_mib

        rel = self.artifact_path(spec.name, variant)
        dtype = torch.float32 if variant.precision == "fp32" else torch.float16
        path = onnx_graphs.export_component(module, spec, job.stage / rel, dtype)
        return Artifact(rel, info={"mib": disk_mib(*onnx_graphs.graph_files(path))})

    def gate(self, job, variant: Variant, spec, artifact: Artifact):
        from refocus_edge.export.parity import component_gate
        from refocus_edge.runtime.backends.backend_onnxruntime import session_runner

        runner = session_runner(job.stage / artifact.path, spec, variant.name, provider="CPUExecutionProvider")
        try:
            return component_gate(spec, self.name, variant.name, job.reference[spec.name], runner)
        finally:
            runner.close()

    def gate_refocuser(self, job, variant: Variant, artifacts: dict):
        """The staged bundle itself, loaded like any other (the manifest so far written first)."""
        from refocus_edge.runtime.bundle_loading import load_bundle_refocuser

        job.manifest.write(job.stage)
        return load_bundle_refocuser(job.stage, backend="onnxruntime", precision=variant.name)

    def describe_component(self, variant: Variant, spec, artifact: Artifact, gate, seconds: float) -> str:
        return (f"{variant.name:5s} {spec.name:14s} {artifact.info['mib']:8.1f} MiB  {gate.metric} {gate.value:.2e} "
                f"<= {gate.threshold:.0e}  ({seconds:.1f} s)")

    def describe_end_to_end(self, variant: Variant, gate, steps: int, seconds: float) -> str:
        return (f"{variant.name:5s} {'end to end':14s} {'':13s} {gate.metric} {gate.value:.2e} "
                f"<= {gate.threshold:.0e}  ({steps} steps, {seconds:.1f} s)")


EXPORTER = OnnxExporter()
export_onnx = EXPORTER.export  # export_onnx(OnnxExportConfig(...), log) -> ExportReport
