"""`refocus export onnx`: a model folder (or shipped name) -> a verified ONNX bundle.

For every precision asked for, each component (runtime/components.py) is traced
to ONNX, run in ONNX Runtime on fresh random inputs at the min/opt/max corners of
its profile and compared with the PyTorch component (gate 1). Then a whole focal
stack is sampled through the bundle and through PyTorch with the same seed and
compared frame by frame with LPIPS (gate 2). A failed gate raises ParityError and
nothing is written; on success the bundle appears at once (export/bundle_writer.py).
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from refocus_edge.export.bundle_writer import staged_bundle
from refocus_edge.export.manifest import base_manifest
from refocus_edge.export.onnx_graphs import OPSET, export_component, graph_files
from refocus_edge.export.parity import component_gate, end_to_end_gate, gate_image, gate_sample
from refocus_edge.runtime.artifacts import ONNX, PRECISIONS, model_hash, onnx_artifact
from refocus_edge.runtime.disk_usage import disk_mib
from refocus_edge.runtime.components import ModelDims, component_specs
from refocus_edge.runtime.errors import InvalidArgumentError

@dataclass(frozen=True)
class OnnxExportConfig:
    model: str | Path
    out: Path
    precisions: tuple[str, ...] = ("fp32",)
    resolutions: tuple[tuple[int, int], ...] = ()  # (W, H); empty: the model's working size
    force: bool = False
    gate_steps: int | None = None  # sampler steps of the end-to-end gate (None: the model's own)
    gate_seed: int = 0
    progress: bool = True

@dataclass
class ExportReport:
    out: Path
    gates: list = field(default_factory=list)  # GateResult
    seconds: dict = field(default_factory=dict)

def _tool_versions() -> dict:
    import diffusers
    import onnx
    import onnxruntime
    import transformers

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "opset": OPSET}

def export_onnx(cfg: OnnxExportConfig, log: Callable[[str], None] = print) -> ExportReport:
    from refocus_edge.runtime.backends.backend_onnxruntime import BACKEND as ORT, session_runner
    from refocus_edge.runtime.bundle_loading import load_bundle_refocuser
    from refocus_edge.runtime.component_modules import component_module
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.metrics.lpips import LPIPS
    from refocus_edge.runtime.model_config import save_model_config

    bad = [p for p in cfg.precisions if p not in PRECISIONS]
    if bad or not cfg.precisions:
        raise InvalidArgumentError(f"--precision must be among {', '.join(PRECISIONS)}, got {list(cfg.precisions)}")
    ORT.require()
    started = time.perf_counter()
    refocuser = load_refocuser(cfg.model)
    dims = ModelDims.of(refocuser, cfg.resolutions)
    specs = component_specs(dims)
    source_hash = model_hash(refocuser.source)
    log(f"model      {refocuser.source} (hash {source_hash[:12]})")
    log(f"profiles   {', '.join(f'{w}x{h}' for w, h in dims.resolutions)} (first = opt)")
    report = ExportReport(out=Path(cfg.out))
    steps = cfg.gate_steps or refocuser.config.num_inference_steps
    position = refocuser.config.default_position
    image = gate_image(dims, position)
    lpips = LPIPS("alex")

    with staged_bundle(Path(cfg.out), cfg.force) as stage:
        refocuser.scheduler.save_config(stage / "scheduler")
        save_model_config(refocuser.config, stage)
        manifest = base_manifest(refocuser, cfg.model, dims, specs, "refocus export onnx", _tool_versions(),
                                 source_hash)
        reference = {name: component_module(refocuser, spec) for name, spec in specs.items()}
        with torch.no_grad():
            ref_frames = gate_sample(refocuser, image, steps, cfg.gate_seed)
        for precision in cfg.precisions:
            dtype = torch.float32 if precision == "fp32" else torch.float16
            source = refocuser if precision == "fp32" else load_refocuser(cfg.model, dtype=dtype)
            table, gates = {}, {}
            for name, spec in specs.items():
                t0 = time.perf_counter()
                rel = onnx_artifact(name, precision)
                module = reference[name] if source is refocuser else component_module(source, spec)
                export_component(module, spec, stage / rel, dtype)
                runner = session_runner(stage / rel, spec, precision, provider="CPUExecutionProvider")
                gate = component_gate(spec, "onnx", precision, reference[name], runner).enforce()
                runner.close()
                table[name], gates[name] = rel, gate.to_json()
                report.gates.append(gate)
                report.seconds[f"{precision}/{name}"] = time.perf_counter() - t0
                size = disk_mib(*graph_files(stage / rel))
                log(f"{precision:5s} {name:14s} {size:8.1f} MiB  {gate.metric} {gate.value:.2e} "
                    f"<= {gate.threshold:.0e}  ({report.seconds[f'{precision}/{name}']:.1f} s)")
            manifest.set_table(ONNX, precision, table)
            manifest.set_gates(ONNX, precision, gates)
            manifest.write(stage)  # the end-to-end gate loads the staged bundle like any other
            t0 = time.perf_counter()
            staged = load_bundle_refocuser(stage, backend="onnxruntime", precision=precision)
            with torch.no_grad():
                frames = gate_sample(staged, image, steps, cfg.gate_seed)
            gate = end_to_end_gate("onnx", precision, frames, ref_frames, lpips).enforce()
            gates["end_to_end"] = {**gate.to_json(), "steps": steps, "seed": cfg.gate_seed,
                                   "position": position}
            manifest.set_gates(ONNX, precision, gates)
            report.gates.append(gate)
            log(f"{precision:5s} {'end to end':14s} {'':13s} {gate.metric} {gate.value:.2e} "
                f"<= {gate.threshold:.0e}  ({steps} steps, {time.perf_counter() - t0:.1f} s)")
        manifest.export_seconds = round(time.perf_counter() - started, 1)
        manifest.write(stage)
    log(f"bundle     {cfg.out} ({disk_mib(cfg.out):.1f} MiB)")
    return report
