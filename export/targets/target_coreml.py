"""`refocus export coreml`: a refocuser -> a bundle of Core ML packages, verified without a Mac.

Per component (image encoder, VAE encoder, UNet, VAE decoder per chunk size):
  1. the conversion-ready rewrite (export/coreml/rewrites) is loaded with the
     original module's state dict and must match it in PyTorch (gate
     `rewrite_max_rel_error`, fp32, on the spec's sample inputs);
  2. per recipe (fp16 / fp32, optionally a compressed UNet) the module is
     compressed in PyTorch, split into chunks at block boundaries if its weights
     would exceed the package size limit, converted, and its saved spec checked
     (interface, rank <= 5, op set; export/coreml/package_check.py); compressed
     packages must hold exactly the PyTorch module's compressed weights
     (export/coreml/packages.py);
  3. the same modules, in the package precision, sample a whole stack through the
     runtime's adapters, compared with the PyTorch pipeline for the same seed
     (gate `lpips_alex_max_frame`).
Any failed gate or check raises and nothing is written; the skeleton is the driver's
(export/driver.py). Shapes are static: each package is built at its spec's "opt" shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

from refocus_edge.export.coreml.recipes import COMPRESSIONS, PRECISIONS, CoreMLRecipe
from refocus_edge.export.targets.base import Artifact, Exporter, ExportSettings, Option, Variant
from refocus_edge.runtime.artifacts import COREML, COREML_REWRITE
from refocus_edge.runtime.component_names import UNET

# Worst-frame LPIPS of a compressed UNet's stack against PyTorch fp32, same seed. The
# teacher's own seed-to-seed spread on held-out stacks is 0.185 (benchmarks/results/
# distillation): a compression may move a sample, but by less than changing its seed.
COMPRESSED_LPIPS = {"w8": 0.05, "p6": 0.10, "p4": 0.185}
REWRITE_TOLERANCE = 1e-4
IOS_PACKAGE_LIMIT_MB = 1024.0  # iOS loads packages up to about 1 GB comfortably, unless <= 6-bit


@dataclass(frozen=True, kw_only=True)
class CoreMLExportConfig(ExportSettings):
    recipes: tuple[CoreMLRecipe, ...] = (CoreMLRecipe("fp16"),)
    resolution: tuple[int, int] | None = None  # (W, H); None: the model's working size
    max_package_mb: float = IOS_PACKAGE_LIMIT_MB


class CoreMLExporter(Exporter):
    name = COREML
    extension = ".mlpackage"
    help = "Core ML packages for iPhone/Mac (fp16 mlprograms, chunked UNet, compressed variants), verified without a Mac"
    description = ("One .mlpackage per component (iOS 17 / macOS 14 mlprogram), built from conversion-ready "
                   "rewrites that must match the PyTorch modules; each package's spec is checked and the whole "
                   "stack is sampled through the same modules in PyTorch before the bundle is written.")
    options = (
        Option("--precision", "compute precision (default fp16; a component whose activations leave fp16's "
                              "safe range is kept in fp32 and the export says so)", default="fp16", choices=PRECISIONS),
        Option("--compress", "compress the UNet's weights: w8 (8-bit linear), p6 / p4 (6- / 4-bit palettes), "
                             "none; one package set per value (default none)",
               default=["none"], choices=("none", *COMPRESSIONS), many=True),
        Option("--resolution", "the packages' static working size (default: the model's working size)",
               kind="size", metavar="WxH"),
        Option("--max-package-mb", "split the UNet at block boundaries when its weights exceed this "
                                   "(default 1024, what iOS loads comfortably; ignored at <= 6 bits)",
               default=IOS_PACKAGE_LIMIT_MB, kind="float", metavar="MB"),
    )
    end_to_end_record = {"emulated": "same modules in PyTorch, package precision"}

    def config(self, settings: ExportSettings, options: dict) -> CoreMLExportConfig:
        recipes = tuple(CoreMLRecipe(options["precision"], None if c == "none" else c)
                        for c in dict.fromkeys(options["compress"]))
        return CoreMLExportConfig(**vars(settings), recipes=recipes, resolution=options["resolution"],
                                  max_package_mb=options["max_package_mb"])

    def require(self, cfg: CoreMLExportConfig) -> None:
        from refocus_edge.export.coreml.convert import require_coremltools

        require_coremltools()

    def resolutions(self, cfg: CoreMLExportConfig) -> tuple:
        return (cfg.resolution,) if cfg.resolution else ()

    def variants(self, cfg: CoreMLExportConfig) -> list[Variant]:
        return [Variant(r.name, r.precision, COMPRESSED_LPIPS[r.compress] if r.compress else None, r)
                for r in cfg.recipes]

    def tool_versions(self) -> dict:
        import importlib.metadata
        import platform

        import coremltools
        import diffusers
        import torch
        import transformers

        return {"torch": torch.__version__, "coremltools": coremltools.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "refocus-edge": importlib.metadata.version("refocus-edge"),
                "python": platform.python_version(), "target": "iOS17/macOS14 mlprogram"}

    def shapes_line(self, dims, specs) -> str:
        w, h = dims.resolutions[0]
        return f"shapes     static, {w}x{h}, UNet batch {specs[UNET].sizes()['batch']}"

    def prepare(self, job) -> None:
        """Gate 1: each rewrite equals the diffusers module it replaces (fp32, min/opt/max shapes)."""
        from refocus_edge.export.coreml import packages
        from refocus_edge.export.emulation import ModuleRunner
        from refocus_edge.export.parity import GateResult, component_gate

        rewrites = job.state["rewrites"] = packages.rewrite_modules(job.refocuser, job.specs)
        gates = {}
        for name, spec in job.specs.items():
            runner = ModuleRunner(rewrites[name], spec.input_names, spec.output_names)
            gate = component_gate(spec, COREML_REWRITE, "fp32", job.reference[name], runner)
            gate = GateResult(name, COREML_REWRITE, "fp32", "rewrite_max_rel_error", gate.value,
                              REWRITE_TOLERANCE, gate.detail).enforce()
            gates[name] = gate.to_json()
            job.report.gates.append(gate)
            job.log(f"rewrite    {name:14s} max_rel_error {gate.value:.1e} <= {REWRITE_TOLERANCE:.0e}")
        job.manifest.set_gates(COREML_REWRITE, "fp32", gates)

    def modules(self, job, variant: Variant) -> dict:
        from refocus_edge.export.coreml.recipes import compress_module

        recipe, rewrites = variant.recipe, job.state["rewrites"]
        return {name: compress_module(module, recipe) if recipe.compresses(name) else module
                for name, module in rewrites.items()}

    def convert(self, job, variant: Variant, spec, module) -> Artifact:
        from refocus_edge.export.coreml.packages import write_packages

        packages = write_packages(job, spec, module, variant.recipe)
        return Artifact(packages.path, runner=packages.runner, record=packages.entry)

    def gate(self, job, variant: Variant, spec, artifact: Artifact):
        """Recorded by reference: the rewrite gate (prepare) and the package checks (convert) raise
        when they fail; the package precision's drift is the end-to-end gate's."""
        from refocus_edge.export.parity import CheckedGate

        return CheckedGate(spec.name, self.name, variant.name, "rewrite_max_rel_error + package_check")

    def record(self, job, variant: Variant, artifacts: dict) -> None:
        job.manifest.coreml[variant.name] = {name: a.record for name, a in artifacts.items()}

    def describe_component(self, variant: Variant, spec, artifact: Artifact, gate, seconds: float) -> None:
        return None  # write_packages logs a line per package

    def describe_end_to_end(self, variant: Variant, gate, steps: int, seconds: float) -> str:
        return (f"{variant.name:8s} {'end to end':14s} {gate.metric} {gate.value:.2e} <= {gate.threshold:.3g} "
                f"(PyTorch emulation, {steps} steps)")


EXPORTER = CoreMLExporter()
export_coreml = EXPORTER.export  # export_coreml(CoreMLExportConfig(...), log) -> ExportReport
