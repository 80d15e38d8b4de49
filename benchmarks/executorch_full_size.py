"""Full-size ExecuTorch check: does the released refocuser's UNet (diffusers'
UNetSpatioTemporalConditionModel() default config, ~1.5 B parameters, random weights) export at
9x320x512 and lower to XNNPACK, how large is its .pte, how much memory do the export and one call
take, and how long is the call?

Each attempt runs in a child process watched from here: its resident memory (VmRSS) is sampled
every 0.2 s and the child is killed when it passes --limit-gib, so the machine (24 GB, shared) never
goes into OOM; the stage it reached, its peak and the time are recorded either way. Stages of the
export child: build (random weights), torch.export (one item of the batch: the program runs once
per guidance branch), lowering (graph rewrites + XNNPACK), writing the .pte. Then a second child
loads the program with executorch.runtime and makes one call.

    OMP_NUM_THREADS=1 python -m benchmarks.executorch_full_size --precision fp32 fp16 \\
        --out benchmarks/results/executorch-tiny --work /tmp/et-full
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.watched_child import stage as _stage, uptime, watch

MODULE = "benchmarks.executorch_full_size"

LATENT = 8  # the VAE's spatial factor


def _unet_module(dtype):
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from refocus_edge.runtime.component_modules import UNetComponent

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel().to(dtype).eval()  # the released architecture, random weights
    return UNetComponent(unet).eval(), unet.config


def _inputs(config, width: int, height: int, dtype):
    import torch

    c, emb = int(config["in_channels"]), int(config["cross_attention_dim"])
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 9, c, height // LATENT, width // LATENT, generator=g).to(dtype),
            torch.full((1,), 0.25 * 2.0).to(dtype), torch.randn(1, 1, emb, generator=g).to(dtype),
            torch.tensor([[6.0, 0.0, 0.0]]).to(dtype))


def child_export(pte: Path, width: int, height: int, precision: str) -> None:
    import torch

    from refocus_edge.export.executorch.lower import export_graph, lower

    dtype = torch.float16 if precision == "fp16" else torch.float32
    t0 = time.perf_counter()
    module, config = _unet_module(dtype)
    params = sum(p.numel() for p in module.parameters())
    _stage("built", parameters=params, seconds=round(time.perf_counter() - t0, 1))
    args = _inputs(config, width, height, dtype)
    t0 = time.perf_counter()
    exported = export_graph(module, args, "unet")
    _stage("exported", seconds=round(time.perf_counter() - t0, 1))
    del module
    t0 = time.perf_counter()
    data, counts = lower(exported, "unet")
    _stage("lowered", seconds=round(time.perf_counter() - t0, 1), **counts.to_json())
    del exported
    pte.write_bytes(data)
    _stage("written", pte_bytes=len(data))


def child_call(pte: Path, width: int, height: int, precision: str) -> None:
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from refocus_edge.runtime.backends.backend_executorch import _runtime

    dtype = torch.float16 if precision == "fp16" else torch.float32
    with torch.device("meta"):
        config = UNetSpatioTemporalConditionModel().config
    t0 = time.perf_counter()
    method = _runtime().load_program(str(pte)).load_method("forward")
    _stage("loaded", seconds=round(time.perf_counter() - t0, 1))
    args = list(_inputs(config, width, height, dtype))
    t0 = time.perf_counter()
    out = method.execute(args)[0]
    _stage("called", seconds=round(time.perf_counter() - t0, 1), finite=bool(torch.isfinite(out).all()),
           output_shape=list(out.shape))


def attempt(precision: str, work: Path, width: int, height: int, limit_mib: float, timeout_s: float) -> dict:
    pte = work / f"unet_full_{precision}.pte"
    common = ["--width", str(width), "--height", str(height), "--pte", str(pte), "--precision", precision]
    res = {"precision": precision,
           "export": watch(MODULE, ["--child", "export", *common], limit_mib, timeout_s, work / f"export_{precision}.err")}
    if pte.exists() and res["export"]["returncode"] == 0:
        res["pte_mib"] = round(pte.stat().st_size / 2 ** 20, 1)
        res["call"] = watch(MODULE, ["--child", "call", *common], limit_mib, timeout_s, work / f"call_{precision}.err")
        pte.unlink()
    return res


def report(res: dict) -> str:
    lines = ["# ExecuTorch, full-size SVD UNet (random weights, released architecture)", "",
             f"Command: `{res['command']}`", "",
             f"{res['width']}x{res['height']}, 9 frames, one item per program call (batch 1); memory limit "
             f"{res['limit_gib']} GiB per child (RSS sampled every 0.2 s); load: start `{res['uptime_start']}`; "
             f"end `{res['uptime_end']}`", "",
             "| precision | last stage done | export peak | export time | .pte | XNNPACK share | call peak | call time | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for a in res["attempts"]:
        ex = a["export"]
        reached = ex["stages"][-1]["stage"] if ex["stages"] else "nothing"
        secs = sum(s.get("seconds", 0) for s in ex["stages"] if s["stage"] in ("exported", "lowered"))
        lowered = next((s for s in ex["stages"] if s["stage"] == "lowered"), {})
        call = a.get("call", {})
        called = next((s for s in call.get("stages", []) if s["stage"] == "called"), {})
        note = ex["killed"] or ex["error"] or call.get("killed", "") or call.get("error", "")
        lines.append(
            f"| {a['precision']} | {reached} | {ex['peak_rss_mib_sampled'] / 1024:.1f} GiB | {secs:.0f} s | "
            f"{a.get('pte_mib', '-')} MiB | {lowered.get('xnnpack_share', '-')} | "
            f"{call.get('peak_rss_mib_sampled', 0) / 1024:.1f} GiB | {called.get('seconds', '-')} s | {note} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=("export", "call"), help=argparse.SUPPRESS)
    p.add_argument("--pte", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "fp16"))
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--limit-gib", type=float, default=12.0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument("--work", type=Path, default=Path("/tmp/et-full"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.child == "export":
        return child_export(args.pte, args.width, args.height, args.precision[0])
    if args.child == "call":
        return child_call(args.pte, args.width, args.height, args.precision[0])

    from benchmarks.recording import command_line, write_results

    args.work.mkdir(parents=True, exist_ok=True)
    res = {"command": command_line("executorch_full_size", argv), "width": args.width, "height": args.height,
           "limit_gib": args.limit_gib, "uptime_start": uptime(), "attempts": []}
    for precision in args.precision:
        res["attempts"].append(attempt(precision, args.work, args.width, args.height, args.limit_gib * 1024,
                                       args.timeout))
    res["uptime_end"] = uptime()
    write_results(args.out, "full_size", res, report(res))


if __name__ == "__main__":
    main()
