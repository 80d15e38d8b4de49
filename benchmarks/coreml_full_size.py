"""Full-size Core ML check: the default-config SVD UNet (diffusers'
UNetSpatioTemporalConditionModel(), ~1.5 B parameters, random weights, the
released refocuser's architecture) as conversion-ready chunks, each converted to
an fp16 mlprogram and its saved spec checked, on this machine (no Mac).

Records per chunk: stages, parameters, package size, conversion time, op count,
max rank; plus the peak resident memory of the whole run. Each chunk is traced,
converted, saved and dropped before the next, so peak memory is about the fp32
model plus one chunk's conversion.

    python -m benchmarks.coreml_full_size --out benchmarks/results/coreml-full-size \
        [--width 512 --height 320 --batch 2 --max-package-mb 1024]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def run(out: Path, width: int, height: int, batch: int, max_mb: float, keep: bool) -> dict:
    from diffusers import UNetSpatioTemporalConditionModel

    from refocus_edge.bench.timing import peak_rss_mib
    from refocus_edge.export.coreml.convert import TensorIO, convert
    from refocus_edge.export.coreml.package_check import check_package
    from refocus_edge.export.coreml.rewrites.unet import ConvertibleUNet, UNetChunk, plan_chunks

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with torch.device("meta"):  # only its config: no 6 GB of weights for diffusers' copy
        config = dict(UNetSpatioTemporalConditionModel().config)
    torch.manual_seed(0)
    unet = ConvertibleUNet(config).eval()  # random weights; same state-dict layout as diffusers'
    params = sum(p.numel() for p in unet.parameters())
    build_s = time.perf_counter() - t0
    plan = plan_chunks(unet, int(max_mb * 2 ** 20), 2.0)
    h, w = height // 8, width // 8
    c_in, emb = int(config["in_channels"]), int(config["cross_attention_dim"])
    pool = {"sample": torch.randn(batch, 9, c_in, h, w), "timestep": torch.full((batch,), 0.25 * 2.0),
            "encoder_hidden_states": torch.randn(batch, 1, emb),
            "added_time_ids": torch.tensor([[6.0, 0.0, 0.0]] * batch)}
    rows = []
    for i, (start, stop) in enumerate(plan):
        chunk = UNetChunk(unet, start, stop).eval()
        t1 = time.perf_counter()
        with torch.no_grad():
            result = chunk(*(pool[n] for n in chunk.input_names))
        result = result if isinstance(result, tuple) else (result,)
        pool.update(zip(chunk.output_names, result))
        forward_s = time.perf_counter() - t1
        ins = [TensorIO(n, tuple(pool[n].shape)) for n in chunk.input_names]
        outs = [TensorIO(n, tuple(pool[n].shape)) for n in chunk.output_names]
        t1 = time.perf_counter()
        model = convert(chunk, ins, outs, "fp16", {"refocus.benchmark": "full-size random weights"},
                        f"SVD UNet chunk {i + 1}/{len(plan)}")
        path = out / f"unet_chunk_{i + 1}.mlpackage"
        model.save(str(path))
        del model
        convert_s = time.perf_counter() - t1
        report = check_package(path, {t.name: t.shape for t in ins}, {t.name: t.shape for t in outs}, "FLOAT16")
        rows.append({"chunk": i + 1, "stages": [unet.stage_names()[start], unet.stage_names()[stop - 1]],
                     "parameters": sum(unet.stage_parameter_count(s) for s in range(start, stop)),
                     "package_mib": round(report.weight_bytes / 2 ** 20, 1), "convert_s": round(convert_s, 1),
                     "torch_forward_s": round(forward_s, 1), "ops": sum(report.ops.values()),
                     "max_rank": report.max_rank, "inputs": len(ins), "outputs": len(outs),
                     "peak_rss_mib_so_far": round(peak_rss_mib())})
        print(json.dumps(rows[-1]), flush=True)
        if not keep:
            import shutil

            shutil.rmtree(path)
    return {"parameters": params, "build_s": round(build_s, 1), "resolution": [width, height], "batch": batch,
            "max_package_mb": max_mb, "chunks": rows, "peak_rss_mib": round(peak_rss_mib()),
            "total_convert_s": round(sum(r["convert_s"] for r in rows), 1)}


def write_markdown(result: dict, out: Path, command: str) -> None:
    lines = ["# Core ML, full-size SVD UNet (random weights), fp16 mlprogram chunks", "",
             f"`{command}`", "",
             f"{result['parameters'] / 1e9:.3f} B parameters, {result['resolution'][0]}x{result['resolution'][1]}, "
             f"batch {result['batch']}, package limit {result['max_package_mb']:.0f} MB; "
             f"peak RSS {result['peak_rss_mib'] / 1024:.1f} GiB; conversion {result['total_convert_s']:.0f} s in all.",
             "", "| chunk | stages | parameters | package | convert | ops | max rank |", "|---|---|---|---|---|---|---|"]
    for r in result["chunks"]:
        lines.append(f"| {r['chunk']} | {r['stages'][0]} .. {r['stages'][1]} | {r['parameters'] / 1e6:.0f} M | "
                     f"{r['package_mib']:.0f} MiB | {r['convert_s']:.0f} s | {r['ops']} | {r['max_rank']} |")
    (out / "coreml_full_size.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/coreml-full-size"))
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--batch", type=int, default=2, help="2: both guidance branches, as the teacher runs")
    p.add_argument("--max-package-mb", type=float, default=1024.0)
    p.add_argument("--keep", action="store_true", help="keep the packages (several GB)")
    args = p.parse_args(argv)
    result = run(args.out, args.width, args.height, args.batch, args.max_package_mb, args.keep)
    (args.out / "coreml_full_size.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, args.out, "python -m benchmarks.coreml_full_size " + " ".join(sys.argv[1:]))
    print(json.dumps({k: v for k, v in result.items() if k != "chunks"}))


if __name__ == "__main__":
    main()
