"""`refocus export executorch`: a refocuser -> one ExecuTorch program (.pte) per component, lowered
to XNNPACK, each gated against PyTorch, as a bundle.

Per component (every spec: image encoder, VAE encoder, UNet, each decoder):
  1. torch.export at the program's static shapes (runtime/program_shapes.py: the working size,
     one item on the batch/frames axis; a call with n items runs the program n times, so one
     UNet program serves the guided fast mode's batch-2 calls and reference mode's batch-1 calls);
     int8 programs go through XNNPACK's PT2E quantizer first, calibrated on the calls the model's
     own sampler makes on calibration photos (export/calibration.py, shared with `refocus quantize`);
  2. lowered with the XNNPACK partitioner (export/executorch/lower.py), the share of the graph it
     took recorded; a graph that fails says which op and which model line;
  3. gated: the program, run by `executorch.runtime` exactly as the backend runs it, against the
     PyTorch component at the profile's min/opt/max item counts (max_rel_error <= the precision's
     tolerance); int8: the stack with only this component in int8, LPIPS median frame <= 0.02.
Then a whole stack is sampled through the staged bundle on the executorch backend and compared
with PyTorch (worst-frame LPIPS <= 1e-3 fp32, 5e-2 fp16, 0.05 int8). Nothing is written unless
every gate passes; the skeleton is the driver's (export/driver.py).

A bundle as --model: the programs are exported from the source model it records (hash-checked)
at its working size, and its other artifacts (ONNX graphs, quantized tables, Core ML packages)
are carried into the new bundle with their gates, so one bundle serves every backend and dispatch
measures them against each other. Its executorch tables are replaced by the new export's.
"""
from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from pathlib import Path

from refocus_edge.export.targets.base import Artifact, Exporter, ExportSettings, Option, Variant
from refocus_edge.runtime.artifacts import EXECUTORCH, executorch_artifact
from refocus_edge.runtime.component_names import DECODER_FAMILY, IMAGE_ENCODER, UNET, VAE_ENCODER
from refocus_edge.runtime.errors import InvalidArgumentError

FLOAT_PRECISIONS = ("fp32", "fp16")
QUANTIZE = ("none", "int8")
DELEGATES = ("xnnpack", "coreml")
INT8 = "int8"
KEEPABLE = (IMAGE_ENCODER, VAE_ENCODER, UNET, DECODER_FAMILY)  # component families (every decoder chunk is one)


@dataclass(frozen=True, kw_only=True)
class ExecuTorchExportConfig(ExportSettings):
    precision: str = "fp32"  # the float programs: fp32 or fp16
    quantize: str = "none"  # "int8": int8 programs too (the bundle's default precision then)
    delegate: str = "xnnpack"  # "coreml": Core ML first, XNNPACK for the rest (macOS only)
    resolution: tuple[int, int] | None = None  # (W, H); None: the model's (or source bundle's) working size
    calibration_samples: int = 16  # int8: calibration photos (one stack each)
    # int8: component families whose programs stay at the float precision inside the int8 programs
    # (a VAE decoder's activations span a range per-tensor int8 cannot hold: its int8 program fails its gate)
    int8_keep_float: tuple[str, ...] = ()
    source_bundle: Path | None = None  # set by resolve_source when --model is a bundle


def _variant_name(precision: str, delegate: str) -> str:
    return precision if delegate == "xnnpack" else f"{precision}-{delegate}"


def resolve_source(cfg: ExecuTorchExportConfig) -> ExecuTorchExportConfig:
    """A bundle as --model -> its source model folder (hash-checked), the bundle kept to carry over."""
    from refocus_edge.runtime.artifacts import model_hash
    from refocus_edge.runtime.backends.backend_torch import source_folder
    from refocus_edge.runtime.bundle import is_bundle, read_bundle
    from refocus_edge.runtime.zoo import resolve_model

    folder = resolve_model(cfg.model)
    if not is_bundle(folder):
        return cfg
    bundle = read_bundle(folder)
    source = source_folder(bundle)
    if source is None:
        raise InvalidArgumentError(f"{folder} is a bundle whose source model ({bundle.source.get('path')}) is not "
                                   "on this machine; ExecuTorch programs are exported from the PyTorch model: "
                                   "pass the model folder")
    if bundle.source.get("hash") and model_hash(source) != bundle.source["hash"]:
        raise InvalidArgumentError(f"{folder}: its source model {source} changed since the bundle was exported "
                                   "(hash differs); re-export the bundle or pass the model folder")
    if cfg.resolution:
        raise InvalidArgumentError("--resolution with a bundle as --model: the programs are exported at the "
                                   "bundle's working size; pass the model folder to export another size")
    return dataclasses.replace(cfg, model=source, source_bundle=folder)


class ExecuTorchExporter(Exporter):
    name = EXECUTORCH
    extension = ".pte"
    help = "ExecuTorch programs (.pte, XNNPACK; int8 via PT2E) for iOS/Android apps, parity-gated, as a bundle"
    description = ("One static-shape ExecuTorch program per component, lowered to XNNPACK (optionally int8 "
                   "through XNNPACK's PT2E quantizer, calibrated on the model's own sampler calls), each run "
                   "by executorch.runtime and gated against PyTorch, then a whole stack gated end to end. "
                   "--model may be a bundle: the programs come from its source model and its other "
                   "artifacts are kept (docs/executorch.md).")
    options = (
        Option("--precision", "float program precision (default fp32)", default="fp32", choices=FLOAT_PRECISIONS),
        Option("--quantize", "also write int8 programs (PT2E, XNNPACK quantizer) and make them the bundle's "
                             "default (default none)", default="none", choices=QUANTIZE),
        Option("--delegate", "xnnpack (default; runs everywhere) or coreml (Core ML first, XNNPACK for the "
                             "rest; macOS only)", default="xnnpack", choices=DELEGATES),
        Option("--resolution", "the programs' static working size (default: the model's working size)",
               kind="size", metavar="WxH"),
        Option("--calibration-samples", "int8: calibration photos, one stack each (default 16)", default=16,
               kind="int", metavar="N"),
        Option("--int8-keep-float", "int8: components whose programs stay float among the int8 ones (e.g. "
                                    "vae_decoder, whose int8 program fails its gate on the shipped models)",
               default=(), choices=KEEPABLE, many=True, metavar="COMPONENT"),
    )
    end_to_end_record = {"runtime": "executorch.runtime (the staged bundle on the executorch backend)"}

    def config(self, settings: ExportSettings, options: dict) -> ExecuTorchExportConfig:
        return ExecuTorchExportConfig(**vars(settings), precision=options["precision"],
                                      quantize=options["quantize"], delegate=options["delegate"],
                                      resolution=options["resolution"],
                                      calibration_samples=options["calibration_samples"],
                                      int8_keep_float=tuple(options["int8_keep_float"] or ()))

    def export(self, cfg: ExecuTorchExportConfig, log=print):
        from refocus_edge.export.driver import export_bundle

        return export_bundle(self, resolve_source(cfg), log)

    def require(self, cfg: ExecuTorchExportConfig) -> None:
        from refocus_edge.runtime.backends.backend_executorch import BACKEND

        if cfg.precision not in FLOAT_PRECISIONS or cfg.quantize not in QUANTIZE or cfg.delegate not in DELEGATES:
            raise InvalidArgumentError(f"--precision {cfg.precision} / --quantize {cfg.quantize} / --delegate "
                                       f"{cfg.delegate}: choose from {FLOAT_PRECISIONS}, {QUANTIZE}, {DELEGATES}")
        if cfg.delegate == "coreml" and platform.system() != "Darwin":
            raise InvalidArgumentError(f"--delegate coreml needs macOS (this is {platform.system()}): the Core ML "
                                       "delegate compiles and runs its partitions with Core ML, which only macOS "
                                       "and iOS have; the XNNPACK programs (the default) run on iOS, Android and here")
        if cfg.int8_keep_float and cfg.quantize != INT8:
            raise InvalidArgumentError("--int8-keep-float belongs to --quantize int8")
        if set(cfg.int8_keep_float) - set(KEEPABLE):
            raise InvalidArgumentError(f"--int8-keep-float {list(cfg.int8_keep_float)}: choose from {list(KEEPABLE)}")
        BACKEND.require()  # one line naming the extra when executorch is missing
        if cfg.quantize == INT8:
            from refocus_edge.export.calibration import check_calibration_source

            check_calibration_source(self._calibration(cfg))

    def _calibration(self, cfg):
        from refocus_edge.export.calibration import CalibrationConfig

        return CalibrationConfig(samples=cfg.calibration_samples, progress=False)

    def resolutions(self, cfg: ExecuTorchExportConfig) -> tuple:
        if cfg.source_bundle is not None:  # the bundle's own sizes: its specs (and ONNX graphs) stay valid
            from refocus_edge.runtime.bundle import read_bundle

            return tuple(tuple(r) for r in read_bundle(cfg.source_bundle).manifest.dims["resolutions"])
        return (cfg.resolution,) if cfg.resolution else ()

    def variants(self, cfg: ExecuTorchExportConfig) -> list[Variant]:
        out = [Variant(_variant_name(cfg.precision, cfg.delegate), cfg.precision)]
        if cfg.quantize == INT8:
            from refocus_edge.export.executorch.int8_gate import int8_budget

            # Worst frame within the project's int8 budget (median checked per component, and by the benchmark).
            out.append(Variant(_variant_name(INT8, cfg.delegate), "fp32", int8_budget()[1], INT8))
        return out

    def tool_versions(self) -> dict:
        import importlib.metadata

        return {**super().tool_versions(), "executorch": importlib.metadata.version("executorch"),
                "torchao": importlib.metadata.version("torchao")}

    def shapes_line(self, dims, specs) -> str:
        w, h = dims.resolutions[0]
        return (f"shapes     static, {w}x{h}; one item per call on batch/frames axes "
                f"(UNet batch {specs['unet'].sizes()['batch']} = that many program calls)")

    # ------------------------------------------------------------ per export
    def prepare(self, job) -> None:
        from refocus_edge.export.executorch.carry import carry_bundle

        if job.cfg.source_bundle is not None:
            carried = carry_bundle(job.cfg.source_bundle, job.stage, job.manifest, job.specs)
            job.log(f"carried    {', '.join(carried) or 'nothing'} from {job.cfg.source_bundle}")
        if job.cfg.quantize == INT8:
            from refocus_edge.export.executorch.int8_gate import prepare_int8

            prepare_int8(job, self._calibration(job.cfg))

    def convert(self, job, variant: Variant, spec, module) -> Artifact:
        from refocus_edge.export.executorch.programs import write_program

        rel = executorch_artifact(spec.name, variant.name)
        record = write_program(job, variant, spec, module, job.stage / rel)
        return Artifact(rel, record={"path": rel, **record})

    def gate(self, job, variant: Variant, spec, artifact: Artifact):
        from refocus_edge.export.executorch.gates import program_gate

        return program_gate(job, variant, spec, job.stage / artifact.path)

    def record(self, job, variant: Variant, artifacts: dict) -> None:
        entry = {"delegate": job.cfg.delegate, "components": {n: a.record for n, a in artifacts.items()}}
        if variant.recipe == INT8:
            from refocus_edge.export.executorch.quantize import Int8Config

            entry["quantization"] = {**Int8Config().to_json(), "calibration": job.state["calibration_record"],
                                     "kept_float": list(job.cfg.int8_keep_float)}
            job.manifest.default_precision = variant.name
        job.manifest.executorch[variant.name] = entry

    def gate_refocuser(self, job, variant: Variant, artifacts: dict):
        """The staged bundle itself on the executorch backend (the manifest so far written first)."""
        from refocus_edge.runtime.bundle_loading import load_bundle_refocuser

        job.manifest.write(job.stage)
        return load_bundle_refocuser(job.stage, backend=EXECUTORCH, precision=variant.name)

    def describe_component(self, variant: Variant, spec, artifact: Artifact, gate, seconds: float) -> str:
        r = artifact.record
        kept = "  (kept float)" if r.get("kept_float") else ""
        return (f"{variant.name:5s} {spec.name:14s} {r['mib']:8.2f} MiB  XNNPACK {r['xnnpack_share']:6.1%}  "
                f"{gate.metric} {gate.value:.2e} <= {gate.threshold:.0e}  ({seconds:.1f} s){kept}")


EXPORTER = ExecuTorchExporter()
export_executorch = EXPORTER.export  # export_executorch(ExecuTorchExportConfig(...), log) -> ExportReport
