"""What every export target provides: the plug-in interface of the exporter driver.

The driver (export/driver.py) owns the skeleton every target shares: load the model,
build the component specs, stage the bundle, write the scheduler, model config and
base manifest, build the PyTorch reference modules and sample the reference stack,
then per variant (a precision or a recipe) and per component: build the module,
convert it (`convert`), gate the artifact against PyTorch (`gate`), record the
artifact and its gate in the manifest; then sample a whole stack through the
variant's artifacts and gate it end to end; publish the bundle only if every gate
passed. A target fills in the steps that differ, by overriding the hooks below.

A target module `export/targets/target_<name>.py` registers itself by defining
`EXPORTER`, an instance of an `Exporter` subclass; nothing else lists them, and
`refocus export <name>` is built from it. Target modules are imported when the CLI
builds its parser, so they import nothing heavy at module level (torch, onnx,
coremltools are imported inside the hooks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from refocus_edge.runtime.artifacts import artifact_path


@dataclass(frozen=True, kw_only=True)
class ExportSettings:
    """What every export is told: the source model, the bundle folder, and how the end-to-end
    gate samples. Each target's config extends it with its own options."""

    model: str | Path
    out: Path
    force: bool = False
    gate_steps: int | None = None  # sampler steps of the end-to-end gate (None: the model's own)
    gate_seed: int = 0
    decoder: str = "full"  # "full" (the VAE's temporal decoder), "tiny" or "guided" (the model's gated small decoders)


@dataclass(frozen=True)
class Option:
    """One command-line option of a target, as data: the CLI (cli/cmd_export.py) turns it into an
    argparse argument and hands the parsed value to `Exporter.config` under `dest`."""

    flag: str
    help: str
    default: object = None
    choices: tuple | None = None
    many: bool = False  # one or more values (a list)
    kind: str = "str"  # str, int, float, size (WxH -> (W, H))
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Variant:
    """One artifact table of the bundle: a precision (ONNX) or a recipe (Core ML)."""

    name: str  # the manifest's precision key: fp32, fp16, fp16-p6, ...
    precision: str  # fp32 or fp16: the modules' dtype and the end-to-end gate's default threshold
    lpips_threshold: float | None = None  # the end-to-end threshold when not END_TO_END_LPIPS[precision]
    recipe: object = None  # the target's own description of the variant (Core ML: a CoreMLRecipe)


@dataclass
class Artifact:
    """One component's converted artifact, written inside the staging folder."""

    path: str  # bundle-relative: the manifest's artifacts table entry
    runner: object = None  # feeds -> outputs by name: what the default gate and end-to-end gate run
    record: dict | None = None  # the target's own manifest record of it (Core ML: packages, shapes)
    info: dict = field(default_factory=dict)  # anything the target's log line needs


class Exporter:
    name: str = ""  # `refocus export <name>`, the module target_<name>.py, the manifest's artifact kind
    extension: str = ""  # artifact file suffix: artifacts are <kind>/<variant>/<component><extension>
    help: str = ""  # one line for `refocus export --help`
    description: str = ""  # the subcommand's --help text
    options: tuple[Option, ...] = ()  # besides --model, --out, --gate-steps and --force
    end_to_end_record: dict = {}  # extra facts recorded with every end-to-end gate (read only)

    def export(self, cfg: ExportSettings, log: Callable[[str], None] = print):
        """Export `cfg.model` through this target into the bundle `cfg.out` (export/driver.py);
        returns the driver's ExportReport. Raises ParityError, writing nothing, if a gate fails."""
        from refocus_edge.export.driver import export_bundle

        return export_bundle(self, cfg, log)

    # ------------------------------------------------------------ configuration
    def config(self, settings: ExportSettings, options: dict) -> ExportSettings:
        """The target's typed config from the shared settings and its own option values (by dest)."""
        return settings

    def require(self, cfg) -> None:
        """Raise before any work when `cfg` or this machine cannot export (a package missing)."""

    def resolutions(self, cfg) -> tuple:
        """Working sizes (W, H) the artifacts must accept, the first the one to optimise for;
        empty: the model's own."""
        return ()

    def variants(self, cfg) -> list[Variant]:
        """The artifact sets to write, in order; each is gated on its own."""
        return [Variant("fp32", "fp32")]

    def tool_versions(self) -> dict:
        import platform

        import diffusers
        import torch
        import transformers

        return {"torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__, "python": platform.python_version()}

    def shapes_line(self, dims, specs) -> str:
        return f"profiles   {', '.join(f'{w}x{h}' for w, h in dims.resolutions)} (first = opt)"

    # ------------------------------------------------------------ per export
    def prepare(self, job) -> None:
        """Once, inside the staging folder, before any variant (Core ML: its rewrites and their gate)."""

    def modules(self, job, variant: Variant) -> dict:
        """The PyTorch module each component is converted from: the flat component modules of the
        refocuser, loaded in the variant's precision."""
        import torch

        from refocus_edge.runtime.component_modules import component_module
        from refocus_edge.runtime.loading import load_refocuser

        if variant.precision == "fp32":
            return dict(job.reference)
        source = load_refocuser(job.cfg.model, dtype=torch.float16, decoder=job.cfg.decoder)
        return {name: component_module(source, spec) for name, spec in job.specs.items()}

    def artifact_path(self, component: str, variant: Variant) -> str:
        return artifact_path(self.name, component, variant.name, self.extension)

    def convert(self, job, variant: Variant, spec, module) -> Artifact:
        """Write `module` (the flat interface of `spec`) as an artifact inside `job.stage`."""
        raise NotImplementedError

    def gate(self, job, variant: Variant, spec, artifact: Artifact):
        """The artifact against the PyTorch component on random inputs at the min/opt/max shapes
        (export/parity.py). Returns the gate; the driver enforces it."""
        from refocus_edge.export.parity import component_gate

        gate = component_gate(spec, self.name, variant.precision, job.reference[spec.name], artifact.runner)
        gate.precision = variant.name
        return gate

    def record(self, job, variant: Variant, artifacts: dict) -> None:
        """Record what the manifest's artifact and gate tables do not hold (Core ML: its packages)."""

    def gate_refocuser(self, job, variant: Variant, artifacts: dict):
        """What the end-to-end gate samples: the artifacts' runners behind the runtime's adapters."""
        from refocus_edge.export.emulation import emulated_refocuser

        runners = {name: a.runner for name, a in artifacts.items()}
        return emulated_refocuser(job.refocuser, job.specs, runners, f"{self.name}-emulated {variant.name}")

    # ------------------------------------------------------------ log lines
    def describe_component(self, variant: Variant, spec, artifact: Artifact, gate, seconds: float) -> str | None:
        return (f"{variant.name:5s} {spec.name:14s} {gate.metric} {gate.value:.2e} <= {gate.threshold:.0e}  "
                f"({seconds:.1f} s)")

    def describe_end_to_end(self, variant: Variant, gate, steps: int, seconds: float) -> str:
        return (f"{variant.name:5s} {'end to end':14s} {gate.metric} {gate.value:.2e} <= {gate.threshold:.0e}  "
                f"({steps} steps, {seconds:.1f} s)")
