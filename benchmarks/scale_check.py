"""Scale check: the full-size SVD UNet (diffusers' default UNetSpatioTemporalConditionModel
config, ~1.5 B parameters, random weights, the released refocuser's shape) through
the same spec-driven ONNX export, with external data, and one call in ONNX Runtime.

It proves the export path handles a graph over the 2 GB protobuf limit and records
what one UNet call costs on this machine. The ONNX Runtime call runs in a fresh
subprocess so its peak memory is its own, not the exporter's.

    python -m benchmarks.scale_check --out benchmarks/results/scale-check [--width 512 --height 320]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _specs(width: int, height: int):
    from refocus_edge.runtime.components import ModelDims, component_specs

    # SVD img2vid: 4 latent channels (UNet in_channels 8 = noisy ++ conditioning), CLIP ViT-H/14
    # projection 1024, 8x VAE; one working size, batch 1..2.
    dims = ModelDims(latent_channels=4, embed_dim=1024, clip_size=(224, 224), vae_scale_factor=8,
                     num_frames=9, decode_chunk_sizes=(8, 1), resolutions=((width, height),))
    return component_specs(dims)["unet"]


def export_step(out: Path, width: int, height: int) -> dict:
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from refocus_edge.bench.timing import peak_rss_mib
    from refocus_edge.export.onnx_graphs import export_component, graph_files
    from refocus_edge.runtime.component_modules import UNetComponent

    spec = _specs(width, height)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel().eval()  # default config = the SVD UNet
    params = sum(p.numel() for p in unet.parameters())
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    path = export_component(UNetComponent(unet), spec, out / "unet.onnx")
    export_s = time.perf_counter() - t0
    sizes = {f.name: f.stat().st_size for f in graph_files(path)}
    return {"parameters": params, "build_s": build_s, "export_s": export_s, "files": sizes,
            "export_peak_rss_mib": peak_rss_mib()}


def run_step(graph: Path, width: int, height: int, batch: int) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    from refocus_edge.bench.timing import peak_rss_mib

    spec = _specs(width, height)
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "min" if batch == 1 else "opt")
    arrays = {k: v.numpy().astype(np.float32) for k, v in feeds.items()}
    t0 = time.perf_counter()
    out = session.run(None, arrays)[0]
    call_s = time.perf_counter() - t0
    return {"provider": session.get_providers()[0], "load_s": load_s, "call_s": call_s, "batch": batch,
            "input_shape": list(arrays["sample"].shape), "output_shape": list(out.shape),
            "output_finite": bool(np.isfinite(out).all()), "run_peak_rss_mib": peak_rss_mib()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/scale-check"))
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--batch", type=int, default=1, help="UNet batch of the timed call (1 = one guidance branch)")
    p.add_argument("--step", choices=["all", "run"], default="all", help=argparse.SUPPRESS)
    p.add_argument("--graph-dir", type=Path, default=None,
                   help="where the 6 GB graph goes (default: <out>/graph; deleted afterwards unless --keep)")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    graph_dir = args.graph_dir or args.out / "graph"
    if args.step == "run":
        print(json.dumps(run_step(graph_dir / "unet.onnx", args.width, args.height, args.batch)))
        return
    import platform
    import shutil

    import onnxruntime
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "scale_check", "size": [args.width, args.height],
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}}
    result["export"] = export_step(graph_dir, args.width, args.height)
    print(json.dumps(result["export"]), file=sys.stderr)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale_check", "--step", "run", "--graph-dir",
                           str(graph_dir), "--width", str(args.width), "--height", str(args.height),
                           "--batch", str(args.batch)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"onnxruntime run failed:\n{proc.stderr[-2000:]}")
    result["run"] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["command"] = f"python -m benchmarks.scale_check --out {args.out} --width {args.width} --height {args.height} --batch {args.batch}"
    (args.out / "scale_check.json").write_text(json.dumps(result, indent=2) + "\n")
    ex, run = result["export"], result["run"]
    md = [f"# Scale check: full-size SVD UNet ({ex['parameters'] / 1e9:.2f} B parameters, random weights)", "",
          f"`{result['command']}`", "",
          "| step | value |", "|---|---|",
          f"| export to ONNX (opset 18, external data) | {ex['export_s']:.0f} s |",
          f"| graph + external data | {sum(ex['files'].values()) / 2**30:.2f} GiB in {len(ex['files'])} files |",
          f"| peak RSS, export process | {ex['export_peak_rss_mib'] / 1024:.1f} GiB |",
          f"| ONNX Runtime session load | {run['load_s']:.1f} s |",
          f"| one UNet call, batch {run['batch']}, sample {run['input_shape']} | {run['call_s']:.1f} s |",
          f"| peak RSS, ONNX Runtime process | {run['run_peak_rss_mib'] / 1024:.1f} GiB |",
          f"| provider | {run['provider']} |", ""]
    (args.out / "scale_check.md").write_text("\n".join(md))
    print("\n".join(md))
    if not args.keep:
        shutil.rmtree(graph_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
