"""The exporter driver: one skeleton for every export target (export/targets/).

    resolve and load the model -> component specs -> stage the bundle (scheduler, model
    config, base manifest) -> PyTorch reference modules and reference stack -> per
    variant: per component build the module, convert it, gate it against PyTorch, record
    artifact and gate in the manifest; then sample a whole stack through the variant's
    artifacts and gate it end to end -> write the manifest last -> publish.

A failed gate raises ParityError (export/parity.py) and nothing is written: the
bundle is staged beside its destination and appears all at once only when every
gate passed (export/bundle_writer.py). What differs per target (conversion, its
gate, what its end-to-end gate samples, its manifest records and log lines) is a
hook of the target's `Exporter` (export/targets/base.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class ExportReport:
    out: Path
    gates: list = field(default_factory=list)  # GateResult, every measured gate in order
    seconds: dict = field(default_factory=dict)  # "<variant>/<component>" -> seconds
    rows: list = field(default_factory=list)  # a target's own table rows (Core ML: one per package)


@dataclass
class ExportJob:
    """One export in progress, as the target's hooks see it."""

    cfg: object  # the target's config (an ExportSettings)
    refocuser: object  # the source model, loaded in PyTorch fp32
    dims: object  # runtime.components.ModelDims: the working sizes, the first the one optimised for
    specs: dict  # component name -> ComponentSpec
    stage: Path  # the staging folder: artifacts are written here, bundle-relative
    manifest: object  # runtime.manifest.Manifest, written last
    report: ExportReport
    log: Callable[[str], None]
    reference: dict = field(default_factory=dict)  # component name -> flat PyTorch module (fp32)
    state: dict = field(default_factory=dict)  # what a target keeps between its hooks for this export


@dataclass(frozen=True)
class _EndToEnd:
    """How the end-to-end gate samples, and its reference stack."""

    image: object
    steps: int
    seed: int
    position: int
    frames: object
    lpips: object


def export_bundle(target, cfg, log: Callable[[str], None] = print) -> ExportReport:
    """Export `cfg.model` through `target` (an Exporter) into the bundle `cfg.out`."""
    import torch

    from refocus_edge.export.bundle_writer import staged_bundle
    from refocus_edge.export.manifest import base_manifest
    from refocus_edge.export.parity import gate_image, gate_sample
    from refocus_edge.runtime.artifacts import model_hash
    from refocus_edge.runtime.component_modules import component_module
    from refocus_edge.runtime.components import ModelDims, component_specs
    from refocus_edge.runtime.disk_usage import disk_mib
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.metrics.lpips import LPIPS
    from refocus_edge.runtime.model_config import save_model_config

    target.require(cfg)
    started = time.perf_counter()
    refocuser = load_refocuser(cfg.model, decoder=cfg.decoder)
    dims = ModelDims.of(refocuser, target.resolutions(cfg))
    specs = component_specs(dims)
    source_hash = model_hash(refocuser.source)
    log(f"model      {refocuser.source} (hash {source_hash[:12]})")
    log(target.shapes_line(dims, specs))
    report = ExportReport(out=Path(cfg.out))
    position = refocuser.config.default_position
    image = gate_image(dims, position)
    lpips = LPIPS("alex")

    with staged_bundle(Path(cfg.out), cfg.force) as stage:
        refocuser.scheduler.save_config(stage / "scheduler")
        save_model_config(refocuser.config, stage)
        manifest = base_manifest(refocuser, cfg.model, dims, specs, f"refocus export {target.name}",
                                 target.tool_versions(), source_hash)
        job = ExportJob(cfg, refocuser, dims, specs, stage, manifest, report, log,
                        reference={name: component_module(refocuser, spec) for name, spec in specs.items()})
        target.prepare(job)
        steps = cfg.gate_steps or refocuser.config.num_inference_steps
        with torch.no_grad():
            frames = gate_sample(refocuser, image, steps, cfg.gate_seed)
        e2e = _EndToEnd(image, steps, cfg.gate_seed, position, frames, lpips)
        for variant in target.variants(cfg):
            _export_variant(target, job, variant, e2e)
        manifest.export_seconds = round(time.perf_counter() - started, 1)
        manifest.write(stage)
    log(f"bundle     {cfg.out} ({disk_mib(cfg.out):.1f} MiB)")
    return report


def _export_variant(target, job: ExportJob, variant, e2e: _EndToEnd) -> None:
    """Every component of one variant, each gated, then the variant's end-to-end gate."""
    import torch

    from refocus_edge.export.parity import GateResult, end_to_end_gate, gate_sample

    kind = target.name
    table, gates, artifacts = {}, {}, {}
    modules = target.modules(job, variant)
    for name, spec in job.specs.items():
        t0 = time.perf_counter()
        artifact = target.convert(job, variant, spec, modules[name])
        gate = target.gate(job, variant, spec, artifact).enforce()
        seconds = time.perf_counter() - t0
        table[name], gates[name], artifacts[name] = artifact.path, gate.to_json(), artifact
        if isinstance(gate, GateResult):  # a measured gate (not one recorded by reference)
            job.report.gates.append(gate)
        job.report.seconds[f"{variant.name}/{name}"] = seconds
        line = target.describe_component(variant, spec, artifact, gate, seconds)
        if line:
            job.log(line)
    job.manifest.set_table(kind, variant.name, table)
    job.manifest.set_gates(kind, variant.name, gates)
    target.record(job, variant, artifacts)

    t0 = time.perf_counter()
    sampler = target.gate_refocuser(job, variant, artifacts)
    with torch.no_grad():
        frames = gate_sample(sampler, e2e.image, e2e.steps, e2e.seed)
    gate = end_to_end_gate(kind, variant.precision, frames, e2e.frames, e2e.lpips)
    gate.precision = variant.name
    if variant.lpips_threshold is not None:
        gate.threshold = variant.lpips_threshold
    gate.enforce()
    gates["end_to_end"] = {**gate.to_json(), "steps": e2e.steps, "seed": e2e.seed, "position": e2e.position,
                           **target.end_to_end_record}
    job.manifest.set_gates(kind, variant.name, gates)
    job.report.gates.append(gate)
    job.log(target.describe_end_to_end(variant, gate, e2e.steps, time.perf_counter() - t0))
