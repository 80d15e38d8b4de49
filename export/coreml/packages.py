"""One component -> its Core ML packages, checked: the conversion-ready module (a rewrite,
possibly compressed) is kept in fp32 where its activations leave fp16's safe range, split
into chunks at block boundaries when its weights exceed the package limit (the UNet),
converted (convert.py), saved, and read back and checked (package_check.py; compressed
packages also weights_check.py). Package inputs and outputs are named, shaped and
described from the component spec."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from refocus_edge.export.coreml.activation_range import FP16_SAFE_MAX, activation_max
from refocus_edge.export.coreml.convert import TensorIO, convert
from refocus_edge.export.coreml.package_check import check_package
from refocus_edge.export.coreml.recipes import CoreMLRecipe
from refocus_edge.export.coreml.weights_check import check_compressed_weights
from refocus_edge.export.emulation import ModuleRunner
from refocus_edge.runtime.artifacts import coreml_artifact, coreml_chunk_artifact, coreml_chunk_folder
from refocus_edge.runtime.backends.chain import ChainRunner
from refocus_edge.runtime.components import IMAGE_ENCODER, UNET, VAE_ENCODER


@dataclass
class Packages:
    path: str  # the manifest's table entry: the package, or the folder of its chunks
    entry: dict  # the manifest's coreml[recipe][component] record
    runner: object  # feeds -> outputs through the same modules in the packages' precision


def rewrite_modules(refocuser, specs) -> dict[str, torch.nn.Module]:
    """The conversion-ready module of each component, sharing the refocuser's weights' values."""
    from refocus_edge.export.coreml.rewrites.unet import ConvertibleUNet
    from refocus_edge.export.coreml.rewrites.vae import ConvertibleVAE
    from refocus_edge.runtime.component_modules import ImageEncoderComponent, VaeDecoderComponent

    small = getattr(refocuser.vae, "tiny", None)  # the tiny or photo-guided decoder (runtime/tiny_decoder.py)
    vae = ConvertibleVAE.from_diffusers(refocuser.vae.vae if small is not None else refocuser.vae).eval()
    modules = {IMAGE_ENCODER: ImageEncoderComponent(refocuser.image_encoder).eval(),  # CLIP converts as is
               VAE_ENCODER: vae.encoder_module(),
               UNET: ConvertibleUNet.from_diffusers(refocuser.unet).eval()}
    for name, spec in specs.items():
        if spec.num_frames is not None:
            # the small decoders are plain convolutions and concatenations: they convert as they are
            modules[name] = (VaeDecoderComponent(refocuser.vae, spec.num_frames).eval() if small is not None
                             else vae.decoder_module(spec.num_frames))
    return modules


def unet_pieces(unet, recipe: CoreMLRecipe, max_mb: float, input_shapes: dict) -> list[dict]:
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


def write_packages(job, spec, module: torch.nn.Module, recipe: CoreMLRecipe) -> Packages:
    """Convert `module` (component `spec`, recipe `recipe`) into packages inside `job.stage`, each
    checked once saved; one row per package goes to `job.report.rows` and one line to the log."""
    shapes = spec.input_shapes("opt")
    example = tuple(spec.sample_inputs(torch.Generator().manual_seed(0), "opt")[n] for n in spec.input_names)
    peak, outputs = activation_max(module, example)
    out_shapes = {n: tuple(o.shape) for n, o in zip(spec.output_names, outputs)}
    precision = recipe.precision
    if precision == "fp16" and peak > FP16_SAFE_MAX:
        precision = "fp32"  # its activations leave fp16's safe range: keep this one in fp32
        job.log(f"{recipe.name:8s} {spec.name:14s} activations reach {peak:.3g} > {FP16_SAFE_MAX:g}: fp32 compute")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    pieces = (unet_pieces(module, recipe, job.cfg.max_package_mb, shapes) if spec.name == UNET
              else [{"module": module, "inputs": None, "outputs": None}])
    entry = {"compute_precision": precision, "weight_bits": recipe.weight_bits(spec.name), "activation_max": peak,
             "inputs": {n: list(s) for n, s in shapes.items()},
             "outputs": {n: list(s) for n, s in out_shapes.items()}, "packages": []}
    source_hash = job.manifest.source["hash"]
    w, h = job.dims.resolutions[0]
    chunked = len(pieces) > 1
    runners = []
    for i, piece in enumerate(pieces):
        t0 = time.perf_counter()
        ins = piece["inputs"] or [(n, shapes[n]) for n in spec.input_names]
        outs = piece["outputs"] or [(n, out_shapes[n]) for n in spec.output_names]
        rel = coreml_chunk_artifact(spec.name, recipe.name, i) if chunked else coreml_artifact(spec.name, recipe.name)
        part = f" chunk {i + 1} of {len(pieces)}" if chunked else ""
        model = convert(piece["module"], [TensorIO(n, s, describe(spec, n)) for n, s in ins],
                        [TensorIO(n, s, describe(spec, n)) for n, s in outs], precision,
                        metadata={"refocus.source_hash": source_hash, "refocus.component": spec.name,
                                  "refocus.recipe": recipe.name,
                                  "refocus.chunk": f"{i + 1}/{len(pieces)}" if chunked else "1/1"},
                        description=f"Refocus Edge {spec.name}{part}, {recipe.name}, {w}x{h}")
        if recipe.compresses(spec.name):
            check_compressed_weights(model, piece["module"], precision, f"{spec.name} ({recipe.name})")
        (job.stage / rel).parent.mkdir(parents=True, exist_ok=True)
        model.save(str(job.stage / rel))
        del model
        pkg = check_package(job.stage / rel, dict(ins), dict(outs), "FLOAT16" if precision == "fp16" else "FLOAT32")
        seconds = time.perf_counter() - t0
        entry["packages"].append({"path": rel, "stages": list(piece.get("stages") or ()),
                                  "inputs": {n: list(s) for n, s in ins},
                                  "outputs": {n: list(s) for n, s in outs},
                                  "seconds": round(seconds, 2), **pkg.to_json()})
        mib = pkg.weight_bytes / 2 ** 20
        job.report.rows.append({"component": spec.name + (f" chunk {i + 1}/{len(pieces)}" if chunked else ""),
                                "recipe": recipe.name, "compute": precision, "weights_mib": mib,
                                "seconds": seconds, "ops": sum(pkg.ops.values()), "max_rank": pkg.max_rank})
        job.log(f"{recipe.name:8s} {spec.name + (f' {i + 1}/{len(pieces)}' if chunked else ''):14s} "
                f"{mib:8.2f} MiB  {sum(pkg.ops.values()):5d} ops, rank <= {pkg.max_rank}  ({seconds:.1f} s)")
        runners.append(ModuleRunner(piece["module"], [n for n, _ in ins], [n for n, _ in outs], dtype))
    path = coreml_chunk_folder(spec.name, recipe.name) if chunked else entry["packages"][0]["path"]
    runner = ChainRunner(runners, spec.output_names) if chunked else runners[0]
    return Packages(path, entry, runner)


def describe(spec, name: str) -> str:
    """A package input/output description from the spec: its dims, symbolic where the spec is."""
    for t in (*spec.inputs, *spec.outputs):
        if t.name == name:
            return f"{spec.name} {name} {list(t.dims)}; {spec.notes}"
    return f"{spec.name} chunk interface tensor '{name}'"
