"""The tiny temporal decoder against the model's own decoder (issue 21 item 1).

On the model's own fast-mode samples of held-out synthetic stacks (never trained on): decode time
per 9-frame stack of both decoders, alternating in one run (PyTorch fp32, the thread count given),
parameters and FLOPs per stack (torch's FLOP counter), and LPIPS (alex) of the tiny decoder's frames
against the full decoder's frames (the gate's metric: median, mean, worst) and of both against the
true frames at large focal jumps (|j - k| >= 4). A picture puts both decoders' stacks side by side.

    OMP_NUM_THREADS=1 python -m benchmarks.tiny_decoder --model refocus-tiny-1step --count 8 --rounds 7 \\
        --out benchmarks/results/tiny-decoder
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.recording import command_line, write_results


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure(model: str, count: int, rounds: int, seed: int = 100_000) -> tuple[dict, dict]:
    from refocus_edge.export.tiny_decoder.data import held_out_latents
    from refocus_edge.export.tiny_decoder.gate import per_frame_lpips
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.metrics.lpips import LPIPS
    from refocus_edge.runtime.sampler import decode_latents

    full = load_refocuser(model)
    tiny = load_refocuser(model, decoder="tiny")
    w, h = full.config.working_size
    latents, full_frames = held_out_latents(full, count, (w, h), seed)  # unscaled; frames in [-1, 1]
    sf = full.vae.config.scaling_factor
    decoders = {"full": lambda z: decode_latents(full.vae, z[None] * sf, full.config.decode_chunk_sizes),
                "tiny": lambda z: decode_latents(tiny.vae, z[None] * sf, tiny.config.decode_chunk_sizes)}
    times = {k: [] for k in decoders}
    with torch.no_grad():
        for r in range(rounds + 1):  # round 0 warms up
            for name, fn in decoders.items():
                t0 = time.perf_counter()
                fn(latents[r % count])
                if r:
                    times[name].append(time.perf_counter() - t0)
        tiny_frames = torch.stack([decoders["tiny"](z) * 2 - 1 for z in latents])
    gate = per_frame_lpips(tiny.vae.tiny, latents, full_frames)

    # against the truth: the same held-out stacks and inputs the latents were sampled from
    lpips = LPIPS("alex")
    stacks = SyntheticFocalStacks("heldout", size=(h, w), length=count)
    truth_large = {"full": [], "tiny": []}
    for i in range(count):
        truth = stacks[i]["frames"] * 2 - 1
        k = (0, 4, 8)[i % 3]
        for name, frames in (("full", full_frames[i]), ("tiny", tiny_frames[i])):
            d = lpips(frames.clamp(-1, 1), truth).flatten().tolist()
            truth_large[name] += [v for j, v in enumerate(d) if abs(j - k) >= 4]
    z = latents[0]
    res = {
        "model": str(full.source), "size": [w, h], "count": count, "rounds": rounds,
        "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "decode_s": {k: statistics.median(v) for k, v in times.items()},
        "decode_s_all": times,
        "parameters": {"full": sum(p.numel() for p in full.vae.decoder.parameters()),
                       "tiny": sum(p.numel() for p in tiny.vae.tiny.parameters())},
        "gflop_per_stack": {k: _flops(lambda fn=fn: fn(z)) / 1e9 for k, fn in decoders.items()},
        "lpips_tiny_vs_full": {"median": float(gate.median()), "mean": float(gate.mean()),
                               "worst": float(gate.max()), "frames": int(gate.numel())},
        "lpips_truth_large_jumps": {k: float(np.mean(v)) for k, v in truth_large.items()},
    }
    res["speedup"] = res["decode_s"]["full"] / res["decode_s"]["tiny"]
    return res, {"full": full_frames[0], "tiny": tiny_frames[0]}


def picture(frames: dict, path: Path) -> None:
    """Two rows (full, tiny decoder) of one held-out stack's 9 frames."""
    from PIL import Image, ImageDraw

    rows = []
    for name in ("full", "tiny"):
        f = ((frames[name].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        rows.append(np.concatenate(list(f), axis=1))
    grid = np.concatenate(rows, axis=0)
    im = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for r, name in enumerate(("full decoder", "tiny decoder")):
        draw.text((4, 4 + r * im.height // 2), name, fill=(255, 255, 0))
    im.save(path)


def markdown(res: dict, command: str) -> str:
    d, lp, t = res["decode_s"], res["lpips_tiny_vs_full"], res["lpips_truth_large_jumps"]
    return "\n".join([
        "# Tiny temporal decoder vs the model's decoder", "",
        f"- command: `{command}`",
        f"- model `{res['model']}` at {res['size'][0]}x{res['size'][1]}; the model's own samples of {res['count']} "
        f"held-out synthetic stacks; PyTorch fp32, {res['threads']} thread(s), {res['rounds']} rounds alternating "
        f"after one warm-up, medians; load average {res['load_average']} at the end (shared 2-core machine)", "",
        "| decoder | parameters | GFLOP / stack | decode / stack | LPIPS to truth, \\|j-k\\| >= 4 |",
        "|---|---|---|---|---|",
        f"| full (temporal VAE decoder, chunks 8 + 1) | {res['parameters']['full'] / 1e6:.3f} M | "
        f"{res['gflop_per_stack']['full']:.2f} | {d['full'] * 1e3:.0f} ms | {t['full']:.3f} |",
        f"| tiny (one chunk of 9) | {res['parameters']['tiny'] / 1e6:.3f} M | {res['gflop_per_stack']['tiny']:.2f} | "
        f"{d['tiny'] * 1e3:.0f} ms | {t['tiny']:.3f} |", "",
        f"**{res['speedup']:.1f}x faster per stack** (bar: at least 10x: {'met' if res['speedup'] >= 10 else 'not met'}). "
        f"LPIPS of the tiny decoder's frames to the full decoder's: median **{lp['median']:.4f}** (bar: at most 0.03: "
        f"{'met' if lp['median'] <= 0.03 else 'not met'}), mean {lp['mean']:.4f}, worst {lp['worst']:.4f} over "
        f"{lp['frames']} frames.", "",
        "Picture: `full_vs_tiny.png` (one held-out stack, near to far; top: full decoder, bottom: tiny).", ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiny_decoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="refocus-tiny-1step")
    parser.add_argument("--count", type=int, default=8, help="held-out stacks (default 8)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--out", type=Path, default=Path("out/tiny-decoder"))
    args = parser.parse_args(argv)
    res, frames = measure(args.model, args.count, args.rounds)
    command = command_line("tiny_decoder", argv)
    res["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    picture(frames, args.out / "full_vs_tiny.png")
    write_results(args.out, "tiny_decoder", res, markdown(res, command))  # prints the table too
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
