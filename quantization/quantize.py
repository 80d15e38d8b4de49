"""`refocus quantize`: a model (or an fp32 ONNX bundle) -> a bundle that also holds a
quantized recipe, calibrated, scanned for sensitive blocks and gated end to end.

Steps, all inside the bundle writer's staging folder (a failed gate leaves nothing):
 1. the fp32 ONNX bundle (exported and gated by export/targets/target_onnx.py, or copied);
 2. calibration: the fp32 bundle samples calibration stacks and every component
    call is recorded (export/calibration.py, shared with the ExecuTorch exporter);
 3. qdq recipes: ranges computed once per component, then the sensitivity scan
    (sensitivity.py) decides which blocks stay float, then the final graphs;
    float recipes: the reduced-precision graphs (fp16) or emulation (bf16);
 4. gates: the stack drift with each component family alone in the recipe, and
    with all of them, against the recipe's budget (drift.py); a miss raises
    ParityError;
 5. the manifest gains the recipe's artifact table, gates, calibration record,
    keep list, sizes, and `default_precision`, so `refocus run --model BUNDLE`
    runs the recipe without further flags.
Core ML recipes (w8, p6, p4) are the Core ML exporter's compression options.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from refocus_edge.export.bundle_writer import staged_bundle
from refocus_edge.export.onnx_graphs import graphs_mib
from refocus_edge.export.parity import GateResult
from refocus_edge.export.calibration import CalibrationConfig, check_calibration_source, collect_calibration
from refocus_edge.quantization.drift import DriftConfig, DriftMeter
from refocus_edge.quantization.report import QuantizeReport
from refocus_edge.quantization.recipes import get_recipe, quantized_components
from refocus_edge.quantization.sensitivity import family, scan_units, tighten, write_table
from refocus_edge.runtime.artifacts import (ONNX, OPENVINO_INT8, TENSORRT_TWIN, onnx_artifact, onnx_external_data,
                                             openvino_int8_artifact, sensitivity_folder, tensorrt_twin_artifact)
from refocus_edge.runtime.errors import InvalidArgumentError, RefocusError



class QuantizationError(RefocusError):
    """A recipe cannot be applied to this model (as opposed to a gate it missed: ParityError)."""


@dataclass(frozen=True)
class QuantizeConfig:
    model: str | Path
    recipe: str
    out: Path
    calibration: CalibrationConfig = CalibrationConfig()
    drift: DriftConfig = DriftConfig()
    scan: bool = True  # False: keep only the known-sensitive units in float, no scan
    unit_budget: float | None = None  # None: the recipe's
    resolutions: tuple[tuple[int, int], ...] = ()
    force: bool = False
    progress: bool = True


def _source_bundle(cfg: QuantizeConfig, recipe, stage: Path, tmp: Path, log) -> None:
    """Fill `stage` with the fp32 ONNX bundle (plus fp16 graphs for the fp16 recipe)."""
    from refocus_edge.export.targets.target_onnx import OnnxExportConfig, export_onnx
    from refocus_edge.runtime.bundle import is_bundle, read_bundle
    from refocus_edge.runtime.zoo import resolve_model

    folder = resolve_model(cfg.model)
    precisions = ("fp32", "fp16") if recipe.name == "fp16" else ("fp32",)
    if is_bundle(folder):
        bundle = read_bundle(folder)
        missing = [p for p in precisions if p not in bundle.precisions(ONNX)]
        if missing:
            raise InvalidArgumentError(f"{folder} has no ONNX {'/'.join(missing)} graphs to quantize from; pass "
                                       "the model folder instead, or export them with `refocus export onnx`")
        source = folder
        log(f"source     bundle {folder}")
    else:
        source = tmp / "fp32"
        export_onnx(OnnxExportConfig(model=cfg.model, out=source, precisions=precisions,
                                     resolutions=cfg.resolutions, progress=cfg.progress), log=log)
    shutil.copytree(source, stage, dirs_exist_ok=True)


def quantize_model(cfg: QuantizeConfig, log: Callable[[str], None] = print) -> QuantizeReport:
    recipe = get_recipe(cfg.recipe)
    if recipe.kind == "coreml":
        from refocus_edge.quantization.coreml_recipes import quantize_coreml

        return quantize_coreml(cfg, recipe, log)
    from refocus_edge.runtime.backends.backend_onnxruntime import BACKEND as ORT
    from refocus_edge.runtime.bundle import read_bundle
    from refocus_edge.runtime.bundle_loading import load_bundle_refocuser

    ORT.require()
    if recipe.kind == "qdq":  # a bad calibration folder fails now, not after the export
        check_calibration_source(cfg.calibration)
    started = time.perf_counter()
    report = QuantizeReport(out=Path(cfg.out), recipe=recipe.name)
    with tempfile.TemporaryDirectory(prefix="refocus-quantize-") as tmp, \
            staged_bundle(Path(cfg.out), cfg.force) as stage:
        tmp = Path(tmp)
        _source_bundle(cfg, recipe, stage, tmp, log)
        bundle = read_bundle(stage)
        manifest = copy.deepcopy(bundle.manifest)  # extended below, written last; `bundle` keeps the source's
        refocuser = load_bundle_refocuser(stage, backend="onnxruntime", precision="fp32")
        log(f"drift      {cfg.drift.photos} held-out stacks, seeds {cfg.drift.seed}.., LPIPS alex vs fp32")
        meter = DriftMeter(refocuser, cfg.drift)
        if recipe.kind == "qdq":
            record = _quantize_qdq(cfg, recipe, bundle, refocuser, meter, stage, tmp, manifest, report, log)
        else:
            record = _quantize_float(cfg, recipe, bundle, refocuser, meter, stage, manifest, report, log)
        for adapter in (refocuser.unet, refocuser.vae, refocuser.image_encoder):
            adapter.close()
        record["seconds"] = round(time.perf_counter() - started, 1)
        manifest.quantization[recipe.name] = record
        manifest.default_precision = recipe.name
        manifest.created_by = f"refocus quantize --recipe {recipe.name}"
        manifest.write(stage)
    report.seconds = time.perf_counter() - started
    log(f"bundle     {cfg.out} (recipe {recipe.name}, {report.seconds:.0f} s)")
    return report


# ------------------------------------------------------------------ gates
def _family_gate(component: str, recipe, precision: str, drift, only: str) -> GateResult:
    return GateResult(component, ONNX, precision, "lpips_alex_median_frame", drift.median,
                      recipe.drift_budget[0], f"worst frame {drift.worst:.4f}; only {only} in {precision}")


def _family_gates(recipe, meter, runners: dict, gates_json: dict) -> list[GateResult]:
    """Per component family (the decoder's chunk sizes together): the drift with only that family
    running `runners`, gated against the recipe's median budget; JSON entries go into `gates_json`."""
    gates = []
    for fam in dict.fromkeys(family(n) for n in runners):
        names = [n for n in runners if family(n) == fam]
        drift = meter.measure({n: runners[n] for n in names})
        for n in names:
            g = _family_gate(n, recipe, recipe.name, drift, fam)
            gates.append(g)
            gates_json[n] = {**g.to_json(), "worst": round(drift.worst, 6)}
    return gates


def _end_to_end_gates(artifact: str, recipe, precision: str, drift) -> list[GateResult]:
    return [GateResult("end_to_end", artifact, precision, "lpips_alex_median_frame", drift.median,
                       recipe.drift_budget[0], "every component in the recipe"),
            GateResult("end_to_end_worst", artifact, precision, "lpips_alex_max_frame", drift.worst,
                       recipe.drift_budget[1], "every component in the recipe")]


def _enforce(report: QuantizeReport, gates: list[GateResult], log) -> None:
    for g in gates:
        report.gates.append(g)
        log(f"gate       {g.component:16s} {g.metric} {g.value:.4f} <= {g.threshold}  "
            f"{'ok' if g.passed else 'FAILED'}  ({g.detail})")
    for g in gates:
        g.enforce()


# ------------------------------------------------------------------ qdq (int8, fp8)
class _QdqWork:
    """Writes partially quantized graphs of one recipe variant (activation type) and measures them."""

    def __init__(self, recipe, specs, comps, fp32, unit_nodes, calibration, meter, work: Path,
                 final: Callable[[str], Path], activation_type: str | None = None, tag: str = "main",
                 uint8_concats: bool = False):
        self.recipe, self.specs, self.comps, self.fp32 = recipe, specs, comps, fp32
        self.unit_nodes, self.calibration, self.meter, self.work = unit_nodes, calibration, meter, work
        # Where a component's whole-model graph goes: its place in the staged bundle. The last
        # keep list measured is the final one (the scan ends on it), so its graphs are the
        # bundle's as written, never quantized a second time.
        self.final = final
        self.act, self.tag, self.uint8_concats = activation_type, tag, uint8_concats

    def ranges(self, c: str) -> Path:
        return self.work / f"{c}.{self.tag}.ranges.json"

    def write(self, c: str, out: Path, nodes=None, exclude=()) -> Path:
        from refocus_edge.quantization.qdq import quantize_graph

        return quantize_graph(self.fp32[c], out, self.recipe, nodes=nodes, exclude=list(exclude),
                              cache=self.ranges(c), feeds=self.calibration.feeds[c],
                              input_names=self.specs[c].input_names, activation_type=self.act,
                              uint8_concats=self.uint8_concats)

    def runner(self, c: str, path: Path):
        from refocus_edge.runtime.backends.backend_onnxruntime import session_runner

        return session_runner(path, self.specs[c], self.recipe.name, provider="CPUExecutionProvider")

    def excluded(self, keep: set, c: str) -> list[str]:
        return [n for key in keep if key[0] == family(c) for n in self.unit_nodes[key].get(c, [])]

    def all_float(self, keep: set, c: str) -> bool:
        return all(key in keep for key in self.unit_nodes if key[0] == family(c))

    def _measure(self, swaps: dict):
        try:
            return self.meter.measure(swaps)
        finally:
            for r in swaps.values():
                r.close()

    def measure_nodes(self, per_component: dict[str, list[str]]):
        return self._measure({c: self.runner(c, self.write(c, self.work / f"{c}.{self.tag}.scan.onnx", nodes=nodes))
                              for c, nodes in per_component.items() if nodes})

    def measure_all(self, keep: set):
        swaps = {}
        for c in self.comps:
            if self.all_float(keep, c):  # the bundle keeps its fp32 graph; drop an earlier attempt's
                path = self.final(c)
                for f in (path, path.with_name(onnx_external_data(path.stem))):
                    f.unlink(missing_ok=True)
            else:
                swaps[c] = self.runner(c, self.write(c, self.final(c), exclude=self.excluded(keep, c)))
        return self._measure(swaps)


def _quantize_qdq(cfg, recipe, bundle, refocuser, meter, stage, tmp, manifest, report, log) -> dict:
    import onnx

    from refocus_edge.quantization.units import graph_units

    specs = bundle.specs
    comps = quantized_components(recipe, specs)
    fp32 = {c: bundle.artifact_path(ONNX, "fp32", c) for c in specs}
    log(f"calibrate  {cfg.calibration.samples} {cfg.calibration.data} stacks at the model's own sigmas")
    calibration = collect_calibration(refocuser, cfg.calibration)

    # Units, per family; decoder chunk sizes share theirs.
    unit_nodes: dict[tuple[str, str], dict[str, list[str]]] = {}
    known: dict[tuple[str, str], bool] = {}
    for c in comps:
        model = onnx.load(str(fp32[c]), load_external_data=False)
        for u in graph_units(c, model, recipe.op_types):
            key = (family(c), u.name)
            unit_nodes.setdefault(key, {})[c] = list(u.nodes)
            known[key] = known.get(key, False) or u.known_sensitive
    main = _QdqWork(recipe, specs, comps, fp32, unit_nodes, calibration, meter, tmp / "work",
                    final=lambda c: stage / onnx_artifact(c, recipe.name))
    t0 = time.perf_counter()
    for c in comps:  # calibrate once per component (the cache serves every later graph)
        main.write(c, tmp / "work" / f"{c}.calibrate.onnx")
    log(f"ranges     {', '.join(comps)} ({time.perf_counter() - t0:.1f} s, {recipe.calibration_method})")

    budget = cfg.unit_budget if cfg.unit_budget is not None else recipe.unit_budget
    if cfg.scan:
        log(f"scan       {len(unit_nodes)} units, one at a time (unit budget {budget})")
        scan = scan_units(unit_nodes, known, main.measure_nodes, budget, log)
        final = tighten(scan, main.measure_all, recipe.scan_target(), log)
    else:
        from refocus_edge.quantization.sensitivity import ScanResult, UnitResult

        scan = ScanResult([UnitResult(f, u, sum(len(n) for n in nodes.values()), known[(f, u)],
                                      keep_float=known[(f, u)],
                                      reason="known sensitive (no scan)" if known[(f, u)] else "")
                           for (f, u), nodes in unit_nodes.items()])
        final = main.measure_all(scan.keep())
    keep = scan.keep()
    if all(main.all_float(keep, c) for c in comps):
        raise QuantizationError(
            f"{recipe.name}: no block could be quantized within the budget (median {recipe.drift_budget[0]}, "
            f"worst {recipe.drift_budget[1]}, unit budget {budget}): every unit stayed in float, so the result "
            "would be the fp32 model under another name; nothing was written. Loosen --unit-budget, or use a "
            "float recipe (fp16, bf16)")
    report.keep_float = sorted(f"{f}:{u}" for f, u in keep)
    sens_dir = sensitivity_folder(recipe.name)
    write_table(scan, stage / sens_dir, recipe.name, budget)

    # Final graphs into the bundle, and their gates.
    table, gates_json, gates, quantized = {}, {}, [], []
    for name in specs:
        if name in comps and not main.all_float(keep, name):
            table[name], _ = onnx_artifact(name, recipe.name), quantized.append(name)  # written by measure_all
        else:
            table[name] = manifest.table(ONNX, "fp32")[name]  # the fp32 graph, shared
            gates_json[name] = {**manifest.gate(ONNX, "fp32", name), "precision": recipe.name,
                                "detail": "kept in fp32 (the fp32 graph)"}
    # The bundle's graphs are the ones `final` measured (same graph, keep list and ranges), so the
    # family gates run them as written rather than quantizing each component again.
    runners = {name: main.runner(name, stage / table[name]) for name in quantized}
    try:
        gates += _family_gates(recipe, meter, runners, gates_json)
    finally:
        for r in runners.values():
            r.close()
    e2e = _end_to_end_gates(ONNX, recipe, recipe.name, final)
    gates_json.update({g.component: g.to_json() for g in e2e})
    _enforce(report, gates + e2e, log)
    manifest.set_table(ONNX, recipe.name, table)
    manifest.set_gates(ONNX, recipe.name, gates_json)

    twin = {}
    if recipe.tensorrt_activation_type and recipe.tensorrt_activation_type != recipe.activation_type:
        twin = _tensorrt_twin(cfg, recipe, main, scan, stage, manifest, report, log)
    openvino = {}
    if recipe.openvino_activation_type:
        openvino = _openvino_form(recipe, main, keep, table, stage, manifest, report, log)

    fp32_mib = graphs_mib(stage, manifest.table(ONNX, "fp32").values())
    recipe_mib = graphs_mib(stage, table.values())
    report.sizes_mib = {"fp32": round(fp32_mib, 2), recipe.name: round(recipe_mib, 2)}
    log(f"size       {recipe.name} {recipe_mib:.1f} MiB vs fp32 {fp32_mib:.1f} MiB "
        f"({fp32_mib / recipe_mib:.2f}x smaller)")
    return {"recipe": recipe.to_json(), "calibration": calibration.to_json(), "drift": cfg.drift.to_json(),
            "drift_result": final.to_json(), "quantized": quantized, "keep_float": report.keep_float,
            "unit_budget": budget, "scan": cfg.scan, "sensitivity": f"{sens_dir}/sensitivity.json",
            "sizes_mib": report.sizes_mib, "tensorrt_twin": twin, "openvino_form": openvino,
            "sample_rel_l2": sample_errors(main, stage, {
                ONNX: {c: table[c] for c in quantized},
                **({OPENVINO_INT8: {c: openvino_int8_artifact(c, recipe.name) for c in openvino["components"]}}
                   if openvino else {})})}


def sample_errors(main: _QdqWork, stage: Path, graphs: dict[str, dict[str, str]]) -> dict[str, dict[str, float]]:
    """{kind: {component: ||int8 - fp32|| / ||fp32||}} of ONNX Runtime's runs of each quantized graph
    (`graphs[kind][component]`, bundle-relative) and the fp32 graph on the spec's sample inputs (the worst
    of its min/opt/max shapes); the fp32 graph runs once per component, whatever the kinds. A backend that
    runs the same graph with other kernels holds itself to this at load (runtime/backends/backend_openvino.py):
    the LPIPS gates above measured ONNX Runtime, and OpenVINO 2026.4 computes some int8 graphs wrongly."""
    from refocus_edge.runtime.backends.backend_onnxruntime import array_session_runner
    from refocus_edge.runtime.sample_error import rel_l2, sample_feeds

    def outputs(path: Path, spec, feeds: list[dict]) -> list:
        runner = array_session_runner(path, spec, "fp32", provider="CPUExecutionProvider")
        try:
            return [runner(f)[spec.output_names[0]] for f in feeds]
        finally:
            runner.close()

    out: dict[str, dict[str, float]] = {kind: {} for kind in graphs}
    for c in dict.fromkeys(c for table in graphs.values() for c in table):
        spec = main.specs[c]
        feeds = sample_feeds(spec)
        reference = outputs(main.fp32[c], spec, feeds)
        for kind, table in graphs.items():
            if c in table:
                got = outputs(stage / table[c], spec, feeds)
                out[kind][c] = round(max(rel_l2(g, r) for g, r in zip(got, reference)), 6)
    return out


def _tensorrt_twin(cfg, recipe, main: _QdqWork, scan, stage, manifest, report, log) -> dict:
    """Symmetric-activation twin graphs (zero point 0), the only int8 QDQ TensorRT builds.
    Symmetric ranges spend half their codes on signs most activations never take, so the twin
    may need more blocks in float: its keep list starts from the main one and grows, most
    sensitive first (the main scan's order), until the twin meets the recipe's budget too."""
    act = recipe.tensorrt_activation_type

    def rel(name: str) -> str:
        return tensorrt_twin_artifact(name, recipe.name)

    twin = _QdqWork(recipe, main.specs, main.comps, main.fp32, main.unit_nodes, main.calibration, main.meter,
                    main.work, final=lambda c: stage / rel(c), activation_type=act, tag="twin")
    log(f"twin       TensorRT graphs ({act} activations, zero point 0)")
    twin_scan = copy.deepcopy(scan)
    twin_scan.steps = []
    drift = tighten(twin_scan, twin.measure_all, recipe.scan_target(), log) if cfg.scan \
        else twin.measure_all(twin_scan.keep())
    keep = twin_scan.keep()
    table = manifest.table(ONNX, "fp32")
    for name in main.comps:
        if not twin.all_float(keep, name):
            table[name] = rel(name)  # written by twin.measure_all with this keep list
    gates = _end_to_end_gates(TENSORRT_TWIN, recipe, recipe.name, drift)
    _enforce(report, gates, log)
    manifest.set_table(TENSORRT_TWIN, recipe.name, table)
    manifest.set_gates(TENSORRT_TWIN, recipe.name, {g.component: g.to_json() for g in gates})
    return {"activation_type": act, "drift": drift.to_json(), "keep_float": sorted(f"{f}:{u}" for f, u in keep),
            "steps": twin_scan.steps}


def _openvino_form(recipe, main: _QdqWork, keep: set, table: dict, stage: Path, manifest, report, log) -> dict:
    """The OpenVINO form of each quantized component with attention (artifacts.OPENVINO_INT8 says
    why): the main graph's keep list, symmetric int8 activations but uint8 around Concats. Its gates
    measure what the openvino backend runs: these graphs for those components, the main int8 graphs
    for the rest."""
    from refocus_edge.quantization.qdq import has_attention

    comps = [c for c in main.comps if not main.all_float(keep, c) and has_attention(main.fp32[c])]
    if not comps:
        return {}
    act = recipe.openvino_activation_type
    form = _QdqWork(recipe, main.specs, comps, main.fp32, main.unit_nodes, main.calibration, main.meter,
                    main.work, final=lambda c: stage / openvino_int8_artifact(c, recipe.name), activation_type=act,
                    tag="openvino", uint8_concats=True)
    log(f"openvino   OpenVINO graphs of {', '.join(comps)} ({act} activations, uint8 around Concats)")
    swaps = {c: form.runner(c, form.write(c, form.final(c), exclude=form.excluded(keep, c))) for c in comps}
    swaps.update({c: main.runner(c, stage / table[c]) for c in main.comps
                  if c not in comps and table[c] == onnx_artifact(c, recipe.name)})
    drift = form._measure(swaps)
    gates = [replace(g, detail=f"the OpenVINO form of {', '.join(comps)}, the {recipe.name} graphs for the rest")
             for g in _end_to_end_gates(OPENVINO_INT8, recipe, recipe.name, drift)]
    _enforce(report, gates, log)
    manifest.set_table(OPENVINO_INT8, recipe.name, {c: openvino_int8_artifact(c, recipe.name) for c in comps})
    manifest.set_gates(OPENVINO_INT8, recipe.name, {g.component: g.to_json() for g in gates})
    return {"activation_type": act, "uint8_concats": True, "components": comps, "drift": drift.to_json()}


# ------------------------------------------------------------------ float (fp16, bf16)
def module_runners(model, specs: dict, dtype: torch.dtype, label: str, transform=None) -> dict:
    """{component: Runner} computing each component with `model`'s PyTorch modules in `dtype`
    (weights and activations rounded as a `dtype` engine rounds them); `transform(name, module)`
    may swap a module first (the Core ML benchmark compresses the UNet's weights that way)."""
    from refocus_edge.export.emulation import ModuleRunner
    from refocus_edge.runtime.backends.base import Runner
    from refocus_edge.runtime.component_modules import component_module

    runners = {}
    for name, spec in specs.items():
        module = component_module(model, spec)
        if transform is not None:
            module = transform(name, module)
        runners[name] = Runner(spec, ModuleRunner(module, spec.input_names, spec.output_names, dtype), label)
    return runners


def torch_precision_runners(bundle, dtype: torch.dtype) -> dict:
    """Runners that compute each component with the bundle's source model in `dtype`: how bf16,
    which no CPU backend runs, is measured here."""
    from refocus_edge.runtime.backends.backend_torch import source_decoder, source_folder
    from refocus_edge.runtime.loading import load_refocuser

    folder = source_folder(bundle)
    if folder is None:
        raise InvalidArgumentError(f"the {dtype} gate runs the source model in PyTorch, and the source model "
                                   f"({bundle.source.get('model')}) is not on this machine")
    # fp32; each ModuleRunner holds its own copy cast to `dtype`
    return module_runners(load_refocuser(folder, decoder=source_decoder(bundle)), bundle.specs, dtype, f"torch cpu {dtype}")


def _quantize_float(cfg, recipe, bundle, refocuser, meter, stage, manifest, report, log) -> dict:
    from refocus_edge.runtime.backends.backend_onnxruntime import session_runner

    specs = bundle.specs
    if recipe.name == "fp16":
        runners = {n: session_runner(bundle.artifact_path(ONNX, "fp16", n), spec, "fp16",
                                     provider="CPUExecutionProvider") for n, spec in specs.items()}
        how = "ONNX Runtime running the fp16 graphs"
    else:  # bf16: no CPU backend runs bf16 graphs; the PyTorch modules in bf16 round the same way
        runners = torch_precision_runners(bundle, torch.bfloat16)
        how = "the source model's PyTorch modules in bf16 (TensorRT builds bf16 engines from the fp32 graphs)"
    log(f"measure    {recipe.name}: {how}")
    gates_json: dict = {}
    try:
        gates = _family_gates(recipe, meter, runners, gates_json)
        final = meter.measure(runners)
    finally:
        for r in runners.values():
            r.close()
    e2e = _end_to_end_gates(ONNX, recipe, recipe.name, final)
    gates += e2e
    gates_json.update({g.component: g.to_json() for g in e2e})
    _enforce(report, gates, log)
    if recipe.name == "bf16":
        manifest.set_table(ONNX, "bf16", manifest.table(ONNX, "fp32"))
    else:
        # The exporter's own fp16 gates (per-component relative error) stay; the drift gates join them.
        gates_json = {**manifest.gate_table(ONNX, "fp16"), **{k: v for k, v in gates_json.items()
                                                               if k.startswith("end_to_end")}}
    manifest.set_gates(ONNX, recipe.name, gates_json)
    table = manifest.table(ONNX, recipe.name)
    fp32_mib = graphs_mib(stage, manifest.table(ONNX, "fp32").values())
    report.sizes_mib = {"fp32": round(fp32_mib, 2)}
    if recipe.name == "fp16":  # a bf16 engine's size is known only once TensorRT builds it on the GPU
        report.sizes_mib["fp16"] = round(graphs_mib(stage, table.values()), 2)
    return {"recipe": recipe.to_json(), "drift": cfg.drift.to_json(), "drift_result": final.to_json(),
            "measured_with": how, "sizes_mib": report.sizes_mib}
