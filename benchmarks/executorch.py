"""ExecuTorch on the shipped default model (issue 22 item 4): per-component latency of its fp32 and
int8 programs interleaved beside torch, ONNX Runtime and OpenVINO; whole-stack LPIPS drift of each
against PyTorch fp32; program sizes; and, when `full_size.json` (benchmarks/executorch_full_size.py)
is in the output folder, the full-size UNet's export in the same README.

The bundle is one that holds the ONNX graphs and the ExecuTorch programs together, so every backend
runs from it:

    refocus export onnx --model refocus-tiny-1step --out /tmp/et/onnx-1step
    refocus export executorch --model /tmp/et/onnx-1step --quantize int8 --out /tmp/et/bundle-1step
    OMP_NUM_THREADS=1 python -m benchmarks.executorch --model /tmp/et/bundle-1step --rounds 9 --photos 8 \\
        --out benchmarks/results/executorch-tiny

Latency: benchmarks/cpu_backends.py's interleaved rounds (every candidate one call per round, in a
rotated order; median over the rounds after warm-up), numpy-facing runners, opt shapes. Drift: the
held-out synthetic photos from --first on (photos the int8 calibration never saw), sampled through the
bundle on torch (the reference) and with every component swapped for a backend's (quantization/drift.py),
LPIPS alex per frame.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.cpu_backends import _uptime, measure
from benchmarks.recording import command_line, write_results

BACKENDS = ["torch", "onnxruntime", "openvino", "executorch"]
DRIFT = [("executorch", "fp32"), ("executorch", "int8"), ("onnxruntime", "fp32"), ("openvino", "fp32")]


def drift(bundle, photos: int, first: int) -> dict:
    from refocus_edge.quantization.drift import DriftConfig, DriftMeter
    from refocus_edge.runtime.backends import get_backend
    from refocus_edge.runtime.bundle_loading import load_bundle_refocuser

    reference = load_bundle_refocuser(bundle.root, backend="torch")
    meter = DriftMeter(reference, DriftConfig(photos=photos, first=first))
    out = {}
    for name, precision in DRIFT:
        backend = get_backend(name)
        key = f"{name}/{precision}"
        state = backend.availability()
        if not state.available:
            out[key] = {"skipped": state.reason}
            continue
        if precision not in backend.precisions(bundle):
            out[key] = {"skipped": f"the bundle has no {backend.artifact} {precision} artifacts"}
            continue
        swaps = {c: backend.load(bundle, spec, precision) for c, spec in bundle.specs.items()}
        measured = meter.measure(swaps)
        # Unrounded: Drift.to_json keeps 6 decimals, and fp32 drifts are ~1e-9.
        out[key] = {**measured.to_json(), "median": measured.median, "worst": measured.worst}
        for runner in swaps.values():
            runner.close()
    return out


def sizes(bundle) -> dict:
    """MiB per artifact table (kind/precision) and component, from the files themselves."""
    out = {}
    for kind, by_precision in bundle.manifest.artifacts.items():
        for precision, table in by_precision.items():
            files = {c: sum(p.stat().st_size for p in [bundle.root / rel, bundle.root / (rel + ".data")]
                            if p.is_file()) / 2 ** 20 for c, rel in table.items()}
            out[f"{kind}/{precision}"] = {"components": files, "total": sum(files.values())}
    return out


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(res: dict, full_size_md: str | None) -> str:
    keys = list(dict.fromkeys(k for comp in res["components"].values() for k in comp["ms_median"]))
    lines = ["# ExecuTorch on the shipped default model (refocus-tiny-1step, 128x128)", "",
             f"Command: `{res['command']}`", "", f"Bundle: `{res['bundle']}` ({res['created_by']})", "",
             f"Machine: {res['cpu']}, {res['threads']} thread(s); versions {res['versions']}",
             f"Load: start `{res['uptime_start']}`; end `{res['uptime_end']}` (2 shared cores: other jobs ran)",
             "", f"## Latency per component (median ms of {res['rounds']} interleaved rounds, opt shapes)", "",
             _row(["component", *keys]), _row(["---"] * (len(keys) + 1))]
    for name, comp in res["components"].items():
        lines.append(_row([name, *(f"{comp['ms_median'][k]:.2f}" if k in comp["ms_median"] else "-"
                                   for k in keys)]))
    lines += ["", f"## Whole-stack drift against PyTorch fp32 ({res['photos']} held-out photos from #{res['first']}, "
                  "LPIPS alex per frame)", "", _row(["backend", "median frame", "worst frame", "target"]),
              _row(["---"] * 4)]
    targets = {"executorch/fp32": "worst <= 1e-3", "executorch/int8": "median <= 0.02, worst <= 0.05"}
    for key, d in res["drift"].items():
        if "skipped" in d:
            lines.append(_row([key, "-", "-", d["skipped"]]))
        else:
            lines.append(_row([key, f"{d['median']:.2e}", f"{d['worst']:.2e}", targets.get(key, "")]))
    lines += ["", "## Sizes (MiB)", "", _row(["artifacts", *res["component_names"], "total"]),
              _row(["---"] * (len(res["component_names"]) + 2))]
    for key, s in res["sizes"].items():
        lines.append(_row([key, *(f"{s['components'].get(c, 0):.2f}" for c in res["component_names"]),
                           f"{s['total']:.2f}"]))
    if res.get("int8_smaller"):
        lines += ["", f"ExecuTorch int8 programs are {res['int8_smaller']:.2f}x smaller than the fp32 programs."]
    share = {c: r["xnnpack_share"] for c, r in res["delegation"].items()}
    lines += ["", f"XNNPACK share of each fp32 graph's ops: {share}"]
    if full_size_md:
        lines += ["", full_size_md.replace("# ", "## ", 1)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a bundle with ONNX graphs and ExecuTorch fp32 + int8 programs")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--first", type=int, default=100, help="first held-out photo of the drift set")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from refocus_edge.runtime.artifacts import EXECUTORCH, hardware_facts
    from refocus_edge.runtime.backends import get_backend
    from refocus_edge.runtime.bundle import open_bundle

    bundle = open_bundle(args.model)
    res = {"command": command_line("executorch", argv), "bundle": str(bundle.root),
           "created_by": bundle.manifest.created_by, "cpu": hardware_facts().get("cpu_model", ""),
           "threads": torch.get_num_threads(),
           "versions": {n: v for b in BACKENDS for n, v in get_backend(b).availability().versions.items()},
           "rounds": args.rounds, "warmup": args.warmup, "photos": args.photos, "first": args.first,
           "component_names": list(bundle.specs), "uptime_start": _uptime()}
    res["components"] = measure(bundle, BACKENDS, args.rounds, args.warmup)
    res["drift"] = drift(bundle, args.photos, args.first)
    res["sizes"] = sizes(bundle)
    fp32, int8 = res["sizes"].get(f"{EXECUTORCH}/fp32"), res["sizes"].get(f"{EXECUTORCH}/int8")
    res["int8_smaller"] = fp32["total"] / int8["total"] if fp32 and int8 else None
    res["delegation"] = bundle.manifest.executorch.get("fp32", {}).get("components", {})
    res["delegation_int8"] = bundle.manifest.executorch.get("int8", {}).get("components", {})
    res["uptime_end"] = _uptime()
    full = args.out / "full_size.md" if args.out else None
    markdown = report(res, full.read_text() if full and full.is_file() else None)
    write_results(args.out, "executorch", res, markdown)
    if args.out:
        (args.out / "README.md").write_text(markdown)


if __name__ == "__main__":
    main()
