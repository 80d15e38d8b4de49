"""Full-size per-call numbers: one UNet call of the released refocuser's architecture (diffusers'
UNetSpatioTemporalConditionModel() default config, 1.52 B parameters, random weights; 9 frames at
512x320, batch 1 = one guidance branch) on every CPU route the project has, and the decoders (the
SVD temporal VAE decoder and the tiny temporal decoder at the same size, one whole stack), each
with its time, peak memory and achieved GFLOP/s against this CPU's matrix-multiply peak for the
precision, measured in the same run.

Routes: torch fp32, torch bf16 eager (weights and activations cast to bf16), torch.compile bf16
(inductor; it compiles in the warm-up call, whose time the table notes), ONNX Runtime fp32
(CPU provider), OpenVINO fp32 / bf16 (the same ONNX graph, INFERENCE_PRECISION_HINT) and int8 (the
graph quantized by the project's int8 recipe, as `refocus quantize` writes it, except for the
calibration method, below) and int8-sym (the same with symmetric int8 activations, the form of the
TensorRT twin `refocus quantize` also writes: OpenVINO's CPU plugin runs the attention's
activation-by-activation MatMuls in int8 only then; with uint8 activations they ran in fp32) and
int8-ov (the OpenVINO form the backend runs: symmetric int8 but uint8 around Concats, which
OpenVINO 2026.4.1 computes wrongly in signed int8; each int8 route's rel. L2 to OpenVINO fp32 on
the same feeds shows it). OpenVINO compiles each graph as the backend does (compile_config: int8
graphs with the bf16 hint for their float parts where the CPU has BF16). Every stage runs in its
own child process watched by benchmarks/watched_child.py, so each peak is that stage's own and a
stage that runs out of memory is recorded, not fatal.

The duel: separate processes minutes apart see a shared machine's load drift (torch bf16 took
9.2-14.2 s per call within one minute here), so the ratio the issue's bar asks for is measured once
more in one process: torch bf16 eager and the fastest graph route that computes the UNet, called in
turn for --duel-rounds rounds; the report gives the median of the per-round ratios.

Peaks: a 4096^3 matrix product timed in torch (fp32, bf16) and in OpenVINO (fp32, bf16, and int8
as a QDQ MatMul graph), in the run's first child. FLOPs per call come from the cost model
(benchmarks/cost_model.py: FlopCounterMode at these shapes, matmuls and convolutions).

The int8 graph is written by the project's quantizer (quantization/qdq.py, the int8 recipe's
op types and per-channel int8 weights) from a fixed-range calibration cache ([-8, 8] for every
tensor) instead of the recipe's Percentile calibration: with random weights measured ranges mean
nothing for quality, the kernels' speed does not depend on them, and ONNX Runtime's calibration
of the full-size UNet (even MinMax on one feed, `--calibrate`) passed 20 GiB here and was killed.

    python -m benchmarks.full_size_calls --out benchmarks/results/full-size-calls --work /tmp/full-size
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.watched_child import stage, uptime, watch

MODULE = "benchmarks.full_size_calls"
CHUNKS = (8, 1)  # the released sampler decodes 9 frames as 8 + 1


def _specs(width: int, height: int) -> dict:
    from refocus_edge.runtime.components import ModelDims, component_specs

    dims = ModelDims(latent_channels=4, embed_dim=1024, clip_size=(224, 224), vae_scale_factor=8,
                     num_frames=9, decode_chunk_sizes=CHUNKS, resolutions=((width, height),))
    return component_specs(dims)


def _unet_feeds(width: int, height: int) -> dict:
    import torch

    return _specs(width, height)["unet"].sample_inputs(torch.Generator().manual_seed(0), "min")


def _latents(width: int, height: int):
    import torch

    return torch.randn(9, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(1))


def _timed_calls(call, repeats: int, keep: Path | None = None) -> dict:
    """One untimed warm-up call (first-call set-up: kernels, primitive caches), then `repeats`; the last
    output is saved to `keep` (.npy) when given."""
    t0 = time.perf_counter()
    out = call()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    import numpy as np

    arr = np.asarray(out.float().numpy() if hasattr(out, "float") else out, dtype=np.float32)
    if keep is not None:
        np.save(keep, arr)
    return {"warmup_s": round(warm, 2), "times_s": [round(t, 3) for t in times], "best_s": round(min(times), 6),
            "finite": bool(np.isfinite(arr).all()), "output_shape": list(arr.shape)}


# ---- children -------------------------------------------------------------------------------

def child_peaks(n: int) -> None:
    import numpy as np
    import torch

    flops = 2.0 * n ** 3
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        res = _timed_calls(lambda: a @ b, 5)
        stage("peak", library="torch", precision=name, gflops=round(flops / res["best_s"] / 1e9, 1))
    import openvino as ov

    core = ov.Core()
    for name, path in _matmul_graphs(n).items():
        hint = "bf16" if name == "bf16" else "f32"
        request = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()}).create_infer_request()
        x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        res = _timed_calls(lambda: request.infer({"x": x})["y"], 5)
        stage("peak", library="openvino", precision=name, gflops=round(flops / res["best_s"] / 1e9, 1))


def _matmul_graphs(n: int) -> dict[str, Path]:
    """x [n, n] @ W [n, n] as ONNX: float (fp32 and bf16 use it) and QDQ int8 (uint8 activations,
    per-column int8 weights: the int8 recipe's layout), which OpenVINO runs as an int8 product."""
    import tempfile

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, n), dtype=np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    folder = Path(tempfile.mkdtemp(prefix="matmul-peak-"))
    float_graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm", [x], [y],
                                    [numpy_helper.from_array(w, "w")])
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    qdq_graph = helper.make_graph([
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["y"])], "mm8", [x], [y], [
        numpy_helper.from_array(np.float32(8.0 / 255), "xs"), numpy_helper.from_array(np.uint8(128), "xz"),
        numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale, "ws"),
        numpy_helper.from_array(np.zeros(n, np.int8), "wz")])
    out = {}
    for name, graph in (("fp32", float_graph), ("bf16", float_graph), ("int8", qdq_graph)):
        path = folder / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
        out[name] = path
    return out


def _torch_unet(width: int, height: int, dtype):
    """The released UNet, seeded and built in `dtype` (an fp32 build cast to bf16 peaks at fp32's size),
    and its sample feeds cast to it."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from refocus_edge.runtime.component_modules import UNetComponent

    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    module = UNetComponent(UNetSpatioTemporalConditionModel().eval()).eval()
    torch.set_default_dtype(torch.float32)
    feeds = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _unet_feeds(width, height).items()}
    return module, feeds


def _graph_call(width: int, height: int, graph: Path, runtime: str, precision: str):
    """A no-argument call of the UNet graph on its sample feeds: ONNX Runtime's CPU provider, or
    OpenVINO compiled as the backend compiles it."""
    import numpy as np

    spec = _specs(width, height)["unet"]
    feeds = {k: np.ascontiguousarray(v.numpy()) for k, v in _unet_feeds(width, height).items()}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        return lambda: session.run(None, feeds)[0]
    request = _openvino_request(graph, spec, {k: v.shape for k, v in feeds.items()}, precision)
    return lambda: request.infer(feeds)[spec.output_names[0]]


def child_torch_unet(width: int, height: int, precision: str, repeats: int, compiled: bool = False) -> None:
    import torch

    t0 = time.perf_counter()
    module, feeds = _torch_unet(width, height, torch.bfloat16 if precision == "bf16" else torch.float32)
    stage("built", seconds=round(time.perf_counter() - t0, 1))
    if compiled:
        module = torch.compile(module)  # compiles on its first call: the warm-up call
    with torch.inference_mode():
        res = _timed_calls(lambda: module(**feeds), repeats)
    stage("called", **res)


def child_duel(width: int, height: int, graph: Path, runtime: str, precision: str, rounds: int) -> None:
    """torch bf16 eager and one graph route in the same process, called in turn for `rounds` rounds
    (the order alternating per round) after a warm-up call each: the bar's ratio from one
    interleaved run, which a shared machine's drift between separate processes cannot bias."""
    import torch

    module, tfeeds = _torch_unet(width, height, torch.bfloat16)

    def reference():
        with torch.inference_mode():
            return module(**tfeeds)

    calls = {"torch": reference, "route": _graph_call(width, height, graph, runtime, precision)}
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {"torch": [], "route": []}
    for r in range(rounds):
        for name in (("torch", "route") if r % 2 == 0 else ("route", "torch")):
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(round(time.perf_counter() - t0, 3))
    stage("duel", torch_s=times["torch"], route_s=times["route"],
          ratios=[round(a / b, 4) for a, b in zip(times["route"], times["torch"])])


def child_export(width: int, height: int, graph: Path) -> None:
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from refocus_edge.export.onnx_graphs import export_component
    from refocus_edge.runtime.component_modules import UNetComponent

    torch.manual_seed(0)
    module = UNetComponent(UNetSpatioTemporalConditionModel().eval()).eval()
    t0 = time.perf_counter()
    export_component(module, _specs(width, height)["unet"], graph)
    stage("exported", seconds=round(time.perf_counter() - t0, 1))


def child_quantize(width: int, height: int, graph: Path, out: Path, calibrate: bool,
                   activation_type: str | None = None, uint8_concats: bool = False) -> None:
    from dataclasses import replace

    from refocus_edge.quantization.qdq import quantize_graph
    from refocus_edge.quantization.recipes import get_recipe

    recipe = replace(get_recipe("int8"), calibration_method="MinMax")  # see the module's docstring
    spec = _specs(width, height)["unet"]
    cache = out.with_suffix(".ranges.json")
    cache.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if not calibrate:
        _fixed_ranges(graph, cache)
    quantize_graph(graph, out, recipe, cache=cache, feeds=[_unet_feeds(width, height)] if calibrate else None,
                   input_names=list(spec.input_names), activation_type=activation_type, uint8_concats=uint8_concats)
    stage("quantized", seconds=round(time.perf_counter() - t0, 1), calibrated=calibrate)


def _fixed_ranges(graph: Path, cache: Path, bound: float = 8.0) -> None:
    """A calibration cache giving every float tensor of the graph the range [-bound, bound]: the
    quantizer then only rewrites the graph (ONNX Runtime's calibration of the full-size UNet holds
    the model three times over and passed 20 GiB here). With random weights a measured range means
    nothing for quality either, and the int8 kernels' speed does not depend on it."""
    import numpy as np
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    model = onnx.load(str(graph), load_external_data=False)
    names = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    ranges = {n: TensorData(lowest=np.float32(-bound), highest=np.float32(bound)) for n in sorted(names) if n}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)


def child_onnx_call(width: int, height: int, graph: Path, runtime: str, precision: str, repeats: int) -> None:
    import numpy as np

    from refocus_edge.runtime.sample_error import rel_l2

    t0 = time.perf_counter()
    call = _graph_call(width, height, graph, runtime, precision)
    stage("loaded", seconds=round(time.perf_counter() - t0, 1))
    if runtime == "onnxruntime":
        res = _timed_calls(call, repeats)
    else:
        res = _timed_calls(call, repeats, keep=_output(graph, runtime, precision))
        reference = _output(graph, "openvino", "fp32")
        if precision != "fp32" and reference.is_file():
            res["rel_l2_to_fp32"] = round(rel_l2(np.load(_output(graph, runtime, precision)), np.load(reference)), 4)
    stage("called", **res)


def _output(graph: Path, runtime: str, precision: str) -> Path:
    """Where a route's last UNet output is kept (beside the graphs), so the later routes of the same run
    can say how far they are from OpenVINO's fp32 call on the same feeds."""
    return graph.parent / f"out_{runtime}_{precision}.npy"


def _openvino_request(graph: Path, spec, shapes: dict, precision: str):
    """The backend's compile (runtime/backends/backend_openvino.py: static shapes, its precision
    hints and threads) without its on-disk blob cache, which would keep 3-6 GiB per graph."""
    import openvino as ov

    from refocus_edge.runtime.backends.backend_openvino import compile_config

    core = ov.Core()
    model = core.read_model(str(graph))
    config = {k: v for k, v in compile_config(precision.split("-")[0]).items() if k != "CACHE_DIR"}
    static = model.clone()
    static.reshape({n: ov.PartialShape(list(shapes[n])) for n in spec.input_names})
    try:
        return core.compile_model(static, "CPU", config).create_infer_request()
    except RuntimeError as exc:
        # as the backend does: OpenVINO 2026.4's CPU plugin fails some static int8 compiles (an empty
        # edge after fusing a dequantize) but compiles the dynamic graph
        stage("static compile failed, dynamic graph", error=str(exc).strip().splitlines()[-1][:300])
        return core.compile_model(model, "CPU", config).create_infer_request()


def child_decoder(width: int, height: int, kind: str, route: str, work: Path, repeats: int) -> None:
    """One 9-frame stack through the full decoder (chunks 8 + 1) or the tiny one (one chunk)."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder

    from benchmarks.full_size_speedup import SVD_VAE
    from refocus_edge.runtime.component_modules import VaeDecoderComponent
    from refocus_edge.runtime.tiny_decoder import TinyTemporalDecoder

    torch.manual_seed(0)
    z = _latents(width, height)
    if kind == "full":
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE).eval()
        parts = [(VaeDecoderComponent(vae, c).eval(), c) for c in CHUNKS]
        parameters = sum(p.numel() for p in vae.decoder.parameters())
    else:
        parts = [(TinyTemporalDecoder(latent_channels=4, num_frames=9, shuffle=2).eval(), 9)]
        parameters = sum(p.numel() for p in parts[0][0].parameters())
    slices, start = [], 0
    for module, c in parts:
        slices.append((module, slice(start, start + c)))
        start += c
    if route.startswith("torch"):
        dtype = torch.bfloat16 if route == "torch-bf16" else torch.float32
        mods = [(m.to(dtype), s) for m, s in slices]
        zz = z.to(dtype)
        with torch.inference_mode():
            res = _timed_calls(lambda: torch.cat([m(zz[s]) for m, s in mods]), repeats)
    else:  # openvino-<precision>: the ONNX export of each chunk's module, compiled like the backend
        import numpy as np

        from refocus_edge.export.onnx_graphs import export_component
        from refocus_edge.runtime.component_names import decoder_name

        precision = route.split("-", 1)[1]
        specs = _specs(width, height)
        runs = []
        for module, s in slices:
            c = s.stop - s.start
            spec = specs[decoder_name(c)] if kind == "full" else _tiny_spec(specs[decoder_name(8)], c)
            graph = export_component(module, spec, work / f"{kind}_decoder_{c}.onnx")
            runs.append((_openvino_request(graph, spec, {"latent": (c, 4, height // 8, width // 8)}, precision),
                         s, spec.output_names[0]))
        zn = z.numpy()
        res = _timed_calls(lambda: np.concatenate([r.infer({"latent": zn[s]})[o] for r, s, o in runs]), repeats)
    stage("called", parameters=parameters, **res)


def _tiny_spec(like, frames: int):
    """The decoder spec with the tiny decoder's chunk (all frames at once)."""
    from dataclasses import replace

    from refocus_edge.runtime.components import TensorSpec

    return replace(like, name="tiny_decoder", num_frames=frames,
                   inputs=(TensorSpec("latent", (frames, *like.inputs[0].dims[1:]), "model"),),
                   outputs=(TensorSpec("image", (frames, *like.outputs[0].dims[1:]), "model"),))


# ---- parent ---------------------------------------------------------------------------------

def _flops(width: int, height: int) -> dict:
    from benchmarks.cost_model import component_flops, meta_full_size_refocuser, tiny_decoder_flops
    from refocus_edge.runtime.zoo import resolve_model

    refocuser = meta_full_size_refocuser(Path(resolve_model("refocus-tiny")) / "scheduler")
    per_call = component_flops(refocuser, (width, height))
    return {"unet": per_call["unet"], "full": per_call["vae_decoder_8"] + per_call["vae_decoder_1"],
            "tiny": tiny_decoder_flops(refocuser, (width, height))}


UNET_ROUTES = (("torch", "fp32"), ("torch", "bf16"), ("torch.compile", "bf16"), ("onnxruntime", "fp32"),
               ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
               ("openvino", "int8-sym"), ("openvino", "int8-ov"))
# The int8 graphs per precision: file, the activation type each is quantized with (None: the recipe's)
# and whether the tensors around Concats get uint8 (quantization/qdq.py concat_overrides).
#   int8: ONNX Runtime's form (uint8 activations); int8-sym: the TensorRT twin (symmetric int8);
#   int8-ov: the OpenVINO form (symmetric int8 but uint8 around Concats: OpenVINO 2026.4 computes
#   the twin wrongly there, which the rel. L2 column shows).
INT8_GRAPHS = {"int8": ("unet_int8.onnx", None, False), "int8-sym": ("unet_int8sym.onnx", "QInt8", False),
               "int8-ov": ("unet_int8ov.onnx", "QInt8", True)}
DECODER_ROUTES = ("torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16")


def run_all(args) -> dict:
    import torch

    w, h, work = args.width, args.height, args.work
    work.mkdir(parents=True, exist_ok=True)
    common = ["--width", str(w), "--height", str(h), "--work", str(work), "--repeats", str(args.repeats)]

    def child(name: str, *extra: str) -> dict:
        print(f"== {name}", flush=True)
        return watch(MODULE, ["--child", *extra, *common], args.limit_gib * 1024, args.timeout,
                     work / f"{name}.err")

    res = {"width": w, "height": h, "threads": torch.get_num_threads(), "uptime_start": uptime(),
           "flops": _flops(w, h), "limit_gib": args.limit_gib}
    for old in work.glob("out_*.npy"):  # an earlier run's outputs must not stand in for this run's
        old.unlink()
    res["peaks"] = child("peaks", "peaks")
    res["unet"] = {}
    for route, precision in UNET_ROUTES:
        if args.routes and f"{route} {precision}" not in args.routes:
            continue
        if route in ("torch", "torch.compile"):
            compiled = ["--compiled"] if route == "torch.compile" else []
            res["unet"][f"{route} {precision}"] = child(f"{route}-{precision}", "torch", "--precision", precision,
                                                       *compiled)
            continue
        graph = work / INT8_GRAPHS.get(precision, ("unet.onnx",))[0]
        if not (work / "unet.onnx").is_file():
            res["unet_export"] = child("export", "export")
        if precision in INT8_GRAPHS and not graph.is_file():
            res[f"unet_quantize_{precision}"] = child(f"quantize-{precision}", "quantize", "--precision", precision,
                                                      *(["--calibrate"] if args.calibrate else []))
        if graph.is_file():
            res["unet"][f"{route} {precision}"] = child(f"{route}-{precision}", "onnx-call", "--runtime", route,
                                                       "--precision", precision)
    best = best_graph_route(res["unet"])
    if args.duel_rounds and best and "torch bf16" in res["unet"]:
        runtime, precision = best.split(" ", 1)
        res["duel"] = {"route": best, **child(f"duel-{runtime}-{precision}", "duel", "--runtime", runtime,
                                              "--precision", precision, "--duel-rounds", str(args.duel_rounds))}
    res["decoders"] = {}
    for kind in ("full", "tiny"):
        for route in DECODER_ROUTES:
            if args.routes and f"{kind} {route}" not in args.routes:
                continue
            res["decoders"][f"{kind} {route}"] = child(f"decoder-{kind}-{route}", "decoder", "--kind", kind,
                                                       "--route", route)
    res["uptime_end"] = uptime()
    return res


def _called(run: dict) -> dict:
    return next((s for s in run.get("stages", []) if s["stage"] == "called"), {})


def wrong_routes(unet: dict) -> set[str]:
    """The int8 routes that compute something else, however fast: further from fp32 than 1.5x the
    closest int8 route (the twin on OpenVINO 2026.4). Only int8 routes are compared with each other: a
    bf16 route's error is 20x smaller by nature."""
    errors = {n: _called(r)["rel_l2_to_fp32"] for n, r in unet.items()
              if "rel_l2_to_fp32" in _called(r) and n.split(" ", 1)[1].startswith("int8")}
    return {n for n, e in errors.items() if e > 1.5 * min(errors.values())}


def best_route(unet: dict, graphs_only: bool = False) -> tuple[str, float] | None:
    """(name, seconds) of the fastest UNet route that computes the UNet; `graphs_only`: among the
    ONNX graph routes (ONNX Runtime, OpenVINO), which the interleaved duel can load."""
    wrong = wrong_routes(unet)
    return min(((n, _called(r)["best_s"]) for n, r in unet.items() if _called(r).get("best_s") and n not in wrong
                and (not graphs_only or n.split(" ", 1)[0] in ("onnxruntime", "openvino"))),
               key=lambda x: x[1], default=None)


def best_graph_route(unet: dict) -> str | None:
    best = best_route(unet, graphs_only=True)
    return best[0] if best else None


def _note(run: dict) -> str:
    return run.get("killed") or run.get("error") or ""


def report(res: dict) -> str:
    peaks: dict[str, float] = {}
    for s in res["peaks"]["stages"]:
        peaks[s["precision"]] = max(peaks.get(s["precision"], 0.0), s["gflops"])
    peak_rows = " ; ".join(f"{s['library']} {s['precision']} {s['gflops']:.0f}" for s in res["peaks"]["stages"])
    flops = res["flops"]
    torch_bf16 = _called(res["unet"].get("torch bf16", {})).get("best_s")
    lines = ["# Full-size per-call numbers (released architecture, random weights)", "",
             f"Command: `{res['command']}`", "",
             f"- UNet: 1.52 B parameters, one call = batch 1 (one guidance branch), sample "
             f"[1, 9, 8, {res['height'] // 8}, {res['width'] // 8}] ({res['width']}x{res['height']}, 9 frames); "
             f"{flops['unet'] / 1e12:.2f} TFLOP per call (cost model)",
             f"- decoders: one 9-frame stack; full (SVD temporal VAE decoder, chunks 8 + 1) "
             f"{flops['full'] / 1e12:.2f} TFLOP, tiny (runtime/tiny_decoder.py at 4 latent channels, one chunk) "
             f"{flops['tiny'] / 1e9:.1f} GFLOP",
             f"- threads: {res['threads']}; each route in its own process; time = best of "
             f"{res['repeats']} calls after one warm-up call; peak = that process's sampled RSS high-water mark",
             f"- matrix-product peak of this CPU (4096^3, GFLOP/s, same run): {peak_rows}",
             f"- load: start `{res['uptime_start']}`; end `{res['uptime_end']}`", "",
             "## UNet, one call", "",
             "| route | call | vs torch bf16 eager | GFLOP/s | % of the precision's peak | peak memory | load/compile "
             "| rel. L2 to openvino fp32 | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, run in res["unet"].items():
        c = _called(run)
        loaded = next((s.get("seconds") for s in run.get("stages", []) if s["stage"] in ("loaded", "built")), None)
        if any(s["stage"].startswith("static compile failed") for s in run.get("stages", [])):
            run = {**run, "error": (run.get("error") or "") + "dynamic-shape graph (the static compile failed)"}
        if name.startswith("torch.compile") and c.get("warmup_s"):
            run = {**run, "error": (run.get("error") or "") + f"first call (compiles) {c['warmup_s']:.0f} s"}
        if c.get("best_s"):
            gf = flops["unet"] / c["best_s"] / 1e9
            peak = peaks.get(name.split()[-1].split("-")[0], 0)  # int8-sym: the int8 peak
            ratio = f"{c['best_s'] / torch_bf16:.2f}x" if torch_bf16 else "-"
            lines.append(f"| {name} | {c['best_s']:.2f} s | {ratio} | {gf:.0f} | "
                         f"{100 * gf / peak:.0f} % | {run['peak_rss_mib_sampled'] / 1024:.1f} GiB | "
                         f"{loaded if loaded is not None else '-'} s | {c.get('rel_l2_to_fp32', '-')} | "
                         f"{'' if c.get('finite') else 'NON-FINITE '}"
                         f"{_note(run)} |")
        else:
            lines.append(f"| {name} | - | - | - | - | {run['peak_rss_mib_sampled'] / 1024:.1f} GiB | - | - | "
                         f"{_note(run) or 'no call'} |")
    quantized = [k for k in res if k.startswith("unet_quantize")]  # "unet_quantize" in runs before session 24
    calibrated = any(s.get("calibrated") for k in quantized for s in res[k].get("stages", []))
    how = "MinMax, one feed" if calibrated else "fixed ranges, no calibration"
    for key, label in (("unet_export", "ONNX export (opset 18, external data)"),
                       *((k, f"{k.removeprefix('unet_quantize').strip('_') or 'int8'} QDQ quantization ({how})")
                         for k in quantized)):
        if key in res:
            run = res[key]
            secs = next((s.get("seconds") for s in run["stages"]), None)
            lines.append(f"\n{label}: {secs if secs is not None else '-'} s, peak "
                         f"{run['peak_rss_mib_sampled'] / 1024:.1f} GiB {_note(run)}")
    if res["decoders"]:
        lines += ["", "## Decoders, one 9-frame stack", "",
                  "| decoder | route | stack | GFLOP/s | % of the precision's peak | peak memory | note |",
                  "|---|---|---|---|---|---|---|"]
    for name, run in res["decoders"].items():
        kind, route = name.split(" ", 1)
        c = _called(run)
        if c.get("best_s"):
            gf = flops[kind] / c["best_s"] / 1e9
            peak = peaks.get(route.split("-")[-1], 0)
            lines.append(f"| {kind} | {route} | {c['best_s']:.2f} s | {gf:.0f} | {100 * gf / peak:.0f} % | "
                         f"{run['peak_rss_mib_sampled'] / 1024:.1f} GiB | {_note(run)} |")
        else:
            lines.append(f"| {kind} | {route} | - | - | - | {run['peak_rss_mib_sampled'] / 1024:.1f} GiB | "
                         f"{_note(run) or 'no call'} |")
    # A route counts only if it computes the UNet (wrong_routes).
    wrong, best = wrong_routes(res["unet"]), best_route(res["unet"])
    if wrong:
        lines += ["", "Left out of the best route (rel. L2 to openvino fp32 over 1.5x the closest int8 route's: "
                      f"wrong results): {', '.join(sorted(wrong))}."]
    if best and torch_bf16:
        lines += ["", f"Best UNet route: **{best[0]}, {best[1]:.2f} s = {best[1] / torch_bf16:.2f}x torch bf16 "
                      f"eager** (separate processes; issue 21's bar: at most 0.5x)."]
    duel = next((s for s in res.get("duel", {}).get("stages", []) if s["stage"] == "duel"), None)
    if duel:
        import statistics

        r = duel["ratios"]
        lines += ["", f"Interleaved in one process, {len(r)} rounds (torch bf16 eager and {res['duel']['route']} "
                      f"called in turn, order alternating): {res['duel']['route']} / torch bf16 per round "
                      f"**median {statistics.median(r):.2f}x** (min {min(r):.2f}, max {max(r):.2f}); median call "
                      f"{statistics.median(duel['route_s']):.2f} s against {statistics.median(duel['torch_s']):.2f} s."]
    elif res.get("duel"):
        lines += ["", f"Interleaved duel with {res['duel']['route']}: {_note(res['duel']) or 'no result'}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=("peaks", "torch", "export", "quantize", "onnx-call", "duel", "decoder"),
                   help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--runtime", default="onnxruntime", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="full", help=argparse.SUPPRESS)
    p.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--route", default="torch-fp32", help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--repeats", type=int, default=2, help="timed calls after the warm-up (best is reported)")
    p.add_argument("--matmul", type=int, default=4096, help="side of the peak-measuring matrix product")
    p.add_argument("--calibrate", action="store_true",
                   help="calibrate the int8 graph (MinMax, one feed; needs more than 20 GiB at full size) "
                        "instead of fixed ranges")
    p.add_argument("--limit-gib", type=float, default=20.0, help="resident memory at which a child is killed")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument("--work", type=Path, default=Path("/tmp/full-size"), help="graphs (about 11 GiB) go here")
    p.add_argument("--routes", nargs="+", default=None, metavar="ROUTE",
                   help="only these, e.g. 'openvino int8' 'torch bf16' 'torch.compile bf16' 'full openvino-bf16' "
                        "(default: all)")
    p.add_argument("--duel-rounds", type=int, default=5,
                   help="rounds of the interleaved duel of torch bf16 eager and the best graph route (0: none)")
    p.add_argument("--stem", default="full_size_calls", help="result file names under --out")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    w, h, work = args.width, args.height, args.work
    if args.child == "peaks":
        return child_peaks(args.matmul)
    if args.child == "torch":
        return child_torch_unet(w, h, args.precision, args.repeats, args.compiled)
    if args.child == "export":
        return child_export(w, h, work / "unet.onnx")
    if args.child == "quantize":
        name, activation, concats = INT8_GRAPHS[args.precision]  # run_all always names the int8 precision
        return child_quantize(w, h, work / "unet.onnx", work / name, args.calibrate, activation, concats)
    if args.child == "onnx-call":
        graph = work / INT8_GRAPHS.get(args.precision, ("unet.onnx",))[0]
        return child_onnx_call(w, h, graph, args.runtime, args.precision, args.repeats)
    if args.child == "duel":
        graph = work / INT8_GRAPHS.get(args.precision, ("unet.onnx",))[0]
        return child_duel(w, h, graph, args.runtime, args.precision, args.duel_rounds)
    if args.child == "decoder":
        return child_decoder(w, h, args.kind, args.route, work, args.repeats)

    from benchmarks.recording import command_line, write_results

    res = run_all(args)
    res["command"], res["repeats"] = command_line("full_size_calls", argv), args.repeats
    (args.work / f"{args.stem}.json").write_text(json.dumps(res, indent=2) + "\n")  # kept if the report fails
    write_results(args.out, args.stem, res, report(res))


if __name__ == "__main__":
    main()
