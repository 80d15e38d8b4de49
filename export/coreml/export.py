"""`refocus export coreml`: a refocuser -> a bundle of Core ML packages, verified without a Mac.

Per component (image encoder, VAE encoder, UNet, VAE decoder per chunk size):
  1. the conversion-ready rewrite (export/coreml/rewrites) is loaded with the
     original module's state dict and must match it in PyTorch (gate
     `rewrite_max_rel_error`, fp32, on the spec's sample inputs);
  2. per recipe (fp16 / fp32, optionally a compressed UNet) the module is
     compressed in PyTorch, split into chunks at block boundaries if its weights
     would exceed the package size limit, converted, and its saved spec checked
     (interface, rank <= 5, op set; export/coreml/package_check.py); compressed
     packages must hold exactly the PyTorch module's compressed weights;
  3. the same modules, in the package precision, sample a whole stack through the
     runtime's adapters, compared with the PyTorch pipeline for the same seed
     (gate `lpips_alex_max_frame`).
Any failed gate or check raises and nothing is written (export/bundle_writer.py).
Shapes are static: each package is built at its spec's "opt" shapes.
"""
from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from refocus_edge.export.bundle_writer import staged_bundle
from refocus_edge.export.coreml.convert import TensorIO, convert, require_coremltools
from refocus_edge.export.coreml.emulate import FP16_SAFE_MAX, ModuleRunner, activation_max, emulated_refocuser
from refocus_edge.export.coreml.package_check import check_package
from refocus_edge.export.coreml.recipes import CoreMLRecipe, compress_module
from refocus_edge.export.coreml.weights_check import check_compressed_weights
from refocus_edge.export.manifest import base_manifest
from refocus_edge.export.parity import GateResult, component_gate, end_to_end_gate, gate_image, gate_sample
from refocus_edge.runtime.artifacts import (COREML, COREML_REWRITE, coreml_artifact, coreml_chunk_artifact,
                                             coreml_chunk_folder, model_hash)
from refocus_edge.runtime.backends.chain import ChainRunner
from refocus_edge.runtime.components import IMAGE_ENCODER, UNET, VAE_ENCODER, ModelDims, component_specs
from refocus_edge.runtime.disk_usage import disk_mib

# Worst-frame LPIPS of a compressed UNet's stack against PyTorch fp32, same seed. The
# teacher's own seed-to-seed spread on held-out stacks is 0.185 (benchmarks/results/
# distillation): a compression may move a sample, but by less than changing its seed.
COMPRESSED_LPIPS = {"w8": 0.05, "p6": 0.10, "p4": 0.185}
REWRITE_TOLERANCE = 1e-4
IOS_PACKAGE_LIMIT_MB = 1024.0  # iOS loads packages up to about 1 GB comfortably, unless <= 6-bit


@dataclass(frozen=True)
class CoreMLExportConfig:
    model: str | Path
    out: Path
    recipes: tuple[CoreMLRecipe, ...] = (CoreMLRecipe("fp16"),)
    resolution: tuple[int, int] | None = None  # (W, H); None: the model's working size
    max_package_mb: float = IOS_PACKAGE_LIMIT_MB
    force: bool = False
    gate_steps: int | None = None
    gate_seed: int = 0


@dataclass
class CoreMLExportReport:
    out: Path
    gates: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # one per package: component, recipe, MiB, seconds


def _tool_versions() -> dict:
    import coremltools
    import diffusers
    import transformers

    return {"torch": torch.__version__, "coremltools": coremltools.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "refocus-edge": importlib.metadata.version("refocus-edge"),
            "python": platform.python_version(), "target": "iOS17/macOS14 mlprogram"}


def rewrite_modules(refocuser, specs) -> dict[str, torch.nn.Module]:
    """The conversion-ready module of each component, sharing the refocuser's weights' values."""
    from refocus_edge.export.coreml.rewrites.unet import ConvertibleUNet
    from refocus_edge.export.coreml.rewrites.vae import ConvertibleVAE
    from refocus_edge.runtime.component_modules import ImageEncoderComponent

    vae = ConvertibleVAE.from_diffusers(refocuser.vae).eval()
    modules = {IMAGE_ENCODER: ImageEncoderComponent(refocuser.image_encoder).eval(),  # CLIP converts as is
               VAE_ENCODER: vae.encoder_module(),
               UNET: ConvertibleUNet.from_diffusers(refocuser.unet).eval()}
    for name, spec in specs.items():
        if spec.num_frames is not None:
            modules[name] = vae.decoder_module(spec.num_frames)
    return modules


def _unet_pieces(unet, recipe: CoreMLRecipe, max_mb: float, input_shapes: dict) -> list[dict]:
    """The UNet as one piece, or as chunks when its weights exceed the package limit.

    `input_shapes`: the UNet spec's static input shapes, from which every chunk boundary's
    shapes follow. Each piece: module, input/output names and static shapes (None: the
    component's own)."""
    from refocus_edge.export.coreml.rewrites.unet import UNetChunk, plan_chunks

    bits = recipe.weight_bits(UNET)
    params = sum(p.numel() for p in unet.parameters())
    if params * bits / 8 <= max_mb * 2 ** 20 or bits <= 6:
        plan = [(0, len(unet.stage_names()))]
    else:
        plan = plan_chunks(unet, int(max_mb * 2 ** 20), bits / 8)
    if len(plan) == 1:
        return [{"module": unet, "inputs": None, "outputs": None, "stages": plan[0]}]
    pieces = []
    for start, stop in plan:
        chunk = UNetChunk(unet, start, stop).eval()
        # Boundary shapes follow from the config and the spec's input shapes alone: no run needed.
        pieces.append({"module": chunk, "stages": (start, stop),
                       "inputs": list(zip(chunk.input_names, chunk.input_shapes(input_shapes))),
                       "outputs": list(zip(chunk.output_names, chunk.output_shapes(input_shapes)))})
    return pieces


def export_coreml(cfg: CoreMLExportConfig, log: Callable[[str], None] = print) -> CoreMLExportReport:
    from refocus_edge.runtime.component_modules import component_module
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.metrics.lpips import LPIPS
    from refocus_edge.runtime.model_config import save_model_config

    require_coremltools()
    started = time.perf_counter()
    refocuser = load_refocuser(cfg.model)
    dims = ModelDims.of(refocuser, [cfg.resolution] if cfg.resolution else None)
    specs = component_specs(dims)
    source_hash = model_hash(refocuser.source)
    log(f"model      {refocuser.source} (hash {source_hash[:12]})")
    w, h = dims.resolutions[0]
    log(f"shapes     static, {w}x{h}, UNet batch {specs[UNET].sizes()['batch']}")
    report = CoreMLExportReport(out=Path(cfg.out))
    originals = {name: component_module(refocuser, spec) for name, spec in specs.items()}
    rewrites = rewrite_modules(refocuser, specs)

    # Gate 1: each rewrite equals the diffusers module it replaces (fp32, min/opt/max shapes).
    rewrite_gates = {}
    for name, spec in specs.items():
        runner = ModuleRunner(rewrites[name], spec.input_names, spec.output_names)
        gate = component_gate(spec, COREML_REWRITE, "fp32", originals[name], runner)
        gate = GateResult(name, COREML_REWRITE, "fp32", "rewrite_max_rel_error", gate.value,
                          REWRITE_TOLERANCE, gate.detail).enforce()
        rewrite_gates[name] = gate.to_json()
        report.gates.append(gate)
        log(f"rewrite    {name:14s} max_rel_error {gate.value:.1e} <= {REWRITE_TOLERANCE:.0e}")

    steps = cfg.gate_steps or refocuser.config.num_inference_steps
    position = refocuser.config.default_position
    image = gate_image(dims, position)
    lpips = LPIPS("alex")
    with torch.no_grad():
        ref_frames = gate_sample(refocuser, image, steps, cfg.gate_seed)

    with staged_bundle(Path(cfg.out), cfg.force) as stage:
        refocuser.scheduler.save_config(stage / "scheduler")
        save_model_config(refocuser.config, stage)
        manifest = base_manifest(refocuser, cfg.model, dims, specs, "refocus export coreml", _tool_versions(),
                                 source_hash)
        manifest.set_gates(COREML_REWRITE, "fp32", rewrite_gates)
        for recipe in cfg.recipes:
            table, gates, details = {}, {}, {}
            runners = {}
            for name, spec in specs.items():
                shapes = spec.input_shapes("opt")
                example = tuple(spec.sample_inputs(torch.Generator().manual_seed(0), "opt")[n]
                                for n in spec.input_names)
                module = compress_module(rewrites[name], recipe) if recipe.compresses(name) else rewrites[name]
                peak, outputs = activation_max(module, example)
                out_shapes = {n: tuple(o.shape) for n, o in zip(spec.output_names, outputs)}
                precision = recipe.precision
                if precision == "fp16" and peak > FP16_SAFE_MAX:
                    precision = "fp32"  # its activations leave fp16's safe range: keep this one in fp32
                    log(f"{recipe.name:8s} {name:14s} activations reach {peak:.3g} > {FP16_SAFE_MAX:g}: fp32 compute")
                dtype = torch.float16 if precision == "fp16" else torch.float32
                pieces = (_unet_pieces(module, recipe, cfg.max_package_mb, shapes) if name == UNET
                          else [{"module": module, "inputs": None, "outputs": None}])
                entry = {"compute_precision": precision, "weight_bits": recipe.weight_bits(name),
                         "activation_max": peak,
                         "inputs": {n: list(s) for n, s in shapes.items()},
                         "outputs": {n: list(s) for n, s in out_shapes.items()}, "packages": []}
                piece_runners = []
                for i, piece in enumerate(pieces):
                    t0 = time.perf_counter()
                    chunked = len(pieces) > 1
                    ins = piece["inputs"] or [(n, shapes[n]) for n in spec.input_names]
                    outs = piece["outputs"] or [(n, out_shapes[n]) for n in spec.output_names]
                    rel = coreml_chunk_artifact(name, recipe.name, i) if chunked else coreml_artifact(name, recipe.name)
                    model = convert(piece["module"], [TensorIO(n, s, _describe(spec, n)) for n, s in ins],
                                    [TensorIO(n, s, _describe(spec, n)) for n, s in outs], precision,
                                    metadata={"refocus.source_hash": source_hash, "refocus.component": name,
                                              "refocus.recipe": recipe.name,
                                              "refocus.chunk": f"{i + 1}/{len(pieces)}" if chunked else "1/1"},
                                    description=f"Refocus Edge {name}"
                                                f"{f' chunk {i + 1} of {len(pieces)}' if chunked else ''}, "
                                                f"{recipe.name}, {w}x{h}")
                    if recipe.compresses(name):
                        check_compressed_weights(model, piece["module"], precision, f"{name} ({recipe.name})")
                    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                    model.save(str(stage / rel))
                    del model
                    pkg = check_package(stage / rel, dict(ins), dict(outs),
                                        "FLOAT16" if precision == "fp16" else "FLOAT32")
                    seconds = time.perf_counter() - t0
                    entry["packages"].append({"path": rel, "stages": list(piece.get("stages") or ()),
                                              "inputs": {n: list(s) for n, s in ins},
                                              "outputs": {n: list(s) for n, s in outs},
                                              "seconds": round(seconds, 2), **pkg.to_json()})
                    mib = pkg.weight_bytes / 2 ** 20
                    report.rows.append({"component": name + (f" chunk {i + 1}/{len(pieces)}" if chunked else ""),
                                        "recipe": recipe.name, "compute": precision, "weights_mib": mib,
                                        "seconds": seconds, "ops": sum(pkg.ops.values()), "max_rank": pkg.max_rank})
                    log(f"{recipe.name:8s} {name + (f' {i + 1}/{len(pieces)}' if chunked else ''):14s} "
                        f"{mib:8.2f} MiB  {sum(pkg.ops.values()):5d} ops, rank <= {pkg.max_rank}  ({seconds:.1f} s)")
                    piece_runners.append(ModuleRunner(piece["module"], [n for n, _ in ins], [n for n, _ in outs], dtype))
                table[name] = (coreml_chunk_folder(name, recipe.name) if len(pieces) > 1
                               else entry["packages"][0]["path"])
                details[name] = entry
                chain = piece_runners[0] if len(piece_runners) == 1 else ChainRunner(piece_runners, spec.output_names)
                runners[name] = chain
            # Gate 3: the whole stack through the same modules in the packages' precision.
            frames = gate_sample(emulated_refocuser(refocuser, specs, runners, recipe.name), image, steps, cfg.gate_seed)
            gate = end_to_end_gate("coreml", recipe.precision, frames, ref_frames, lpips)
            if recipe.compress is not None:
                gate.threshold = COMPRESSED_LPIPS[recipe.compress]
            gate.precision = recipe.name
            gate.enforce()
            for name in specs:
                gates[name] = {"component": name, "artifact": "coreml", "precision": recipe.name,
                               "metric": "rewrite_max_rel_error + package_check", "passed": True}
            gates["end_to_end"] = {**gate.to_json(), "steps": steps, "seed": cfg.gate_seed, "position": position,
                                   "emulated": "same modules in PyTorch, package precision"}
            report.gates.append(gate)
            log(f"{recipe.name:8s} {'end to end':14s} {gate.metric} {gate.value:.2e} <= {gate.threshold:.3g} "
                f"(PyTorch emulation, {steps} steps)")
            manifest.set_table(COREML, recipe.name, table)
            manifest.set_gates(COREML, recipe.name, gates)
            manifest.coreml[recipe.name] = details
        manifest.export_seconds = round(time.perf_counter() - started, 1)
        manifest.write(stage)
    size = disk_mib(cfg.out)
    log(f"bundle     {cfg.out} ({size:.1f} MiB)")
    return report


def _describe(spec, name: str) -> str:
    """A package input/output description from the spec: its dims, symbolic where the spec is."""
    for t in (*spec.inputs, *spec.outputs):
        if t.name == name:
            return f"{spec.name} {name} {list(t.dims)}; {spec.notes}"
    return f"{spec.name} chunk interface tensor '{name}'"
