"""`refocus bench --against-reference`: an edge configuration against the reference, one interleaved run.

The reference is what the paper runs: the teacher model (25 guided Euler steps, 50 UNet calls),
`--mode reference` (the literal loop), PyTorch fp32. The edge configuration is whatever `refocus run`
would run for `--model` (typically a bundle of the few-step student with the tiny decoder, its
backends and precisions picked by dispatch). Both are loaded once in this process and run on the
same photo in alternation, round after round, so that the machine's load hits both alike; each
round records every stage (image encoder, VAE encode, UNet loop, decode) and the wall time of the
whole call. Quality: LPIPS (alex) against the true frames of held-out synthetic stacks at large
focal jumps (|j - k| >= 4), both configurations on the same stacks, inputs and seeds.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from refocus_edge.runtime.zoo import TEACHER_MODEL

STAGES = ("image_encoder", "vae_encode", "unet_total", "vae_decode")
LARGE_JUMP = 4
SPEED_BAR = 40.0  # issue 21: the shipped edge config at least 40x faster than the reference
QUALITY_SLACK = 0.02  # ... at LPIPS (large jumps) no worse than the reference's + 0.02


@dataclass(frozen=True)
class EdgeBenchConfig:
    edge: str  # bundle or model folder/name: what `refocus run --model` takes
    reference: str = TEACHER_MODEL
    backend: str | None = None  # None: dispatch (auto)
    precision: str | None = None
    decoder: str | None = None  # for a model folder as --model
    photo: Path = Path(__file__).resolve().parents[1] / "samples" / "coffee.jpg"
    rounds: int = 5
    warmup: int = 1
    count: int = 8  # held-out stacks for quality
    positions: tuple[int, ...] = (0, 4, 8)
    seed: int = 0
    progress: bool = True
    notes: list = field(default_factory=list)


def _stage_times(result, wall: float) -> dict:
    t = {k: float(result.timings.get(k, float("nan"))) for k in STAGES}
    t["stack"] = wall
    return t


def _quality(model, mode: str, count: int, positions, seed: int, size) -> dict:
    """Mean LPIPS to the truth per |j - k| bucket over held-out synthetic stacks."""
    import torch

    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks
    from refocus_edge.runtime.metrics.lpips import LPIPS
    from refocus_edge.runtime.sampler_config import SamplerConfig

    lpips = LPIPS("alex")
    stacks = SyntheticFocalStacks("heldout", size=(size[1], size[0]), length=count)
    large, own = [], []
    for i in range(count):
        truth = stacks[i]["frames"]  # [F, 3, H, W] in [0, 1]
        for k in positions:
            rgb = truth[k].permute(1, 2, 0).numpy()
            result = model.sample(rgb, SamplerConfig(position=k, seed=seed + i, mode=mode, progress=False))
            frames = torch.from_numpy(np.asarray(result.frames, np.float32))
            with torch.no_grad():
                d = lpips(frames * 2 - 1, truth * 2 - 1).flatten().tolist()
            large += [v for j, v in enumerate(d) if abs(j - k) >= LARGE_JUMP]
            own.append(d[k])
    return {"lpips_large_jumps": float(np.mean(large)), "lpips_own_frame": float(np.mean(own)),
            "inputs": len(own)}


def run_edge_bench(cfg: EdgeBenchConfig, log=print) -> dict:
    import torch

    from refocus_edge.runtime.run_model import load_run_model
    from refocus_edge.runtime.image_io import load_photo
    from refocus_edge.runtime.resize import fit_photo
    from refocus_edge.runtime.sampler_config import SamplerConfig

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ref = load_run_model(cfg.reference, None, "reference", "torch", None, False)
    ref_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    edge = load_run_model(cfg.edge, None, "fast", cfg.backend, cfg.precision, False, cfg.decoder)
    edge_load = time.perf_counter() - t0
    photo = load_photo(cfg.photo)
    # One task: the photo as the reference model takes it, for both (a student that serves photos at
    # their own shape runs the reference's size here, so that times and quality compare like with like).
    rgb, _ = fit_photo(photo.rgb, ref.refocuser.config.resolution_policy)
    position = ref.refocuser.config.default_position
    runs = {"reference": (ref, "reference"), "edge": (edge, "fast")}
    times: dict[str, list[dict]] = {name: [] for name in runs}
    from tqdm.auto import tqdm

    bar = tqdm(total=(cfg.warmup + cfg.rounds) * 2, desc="edge vs reference", unit="stack", disable=not cfg.progress)
    for r in range(cfg.warmup + cfg.rounds):
        for name, (model, mode) in runs.items():  # alternating: the same load hits both
            t = time.perf_counter()
            result = model.sample(rgb, SamplerConfig(position=position, seed=cfg.seed, mode=mode, progress=False))
            wall = time.perf_counter() - t
            if r >= cfg.warmup:
                times[name].append(_stage_times(result, wall) | {"unet_calls": result.unet_calls})
            bar.update()
    bar.close()
    median = {name: {k: statistics.median(t[k] for t in rows) for k in (*STAGES, "stack")}
              for name, rows in times.items()}
    speedup = median["reference"]["stack"] / median["edge"]["stack"]
    log(f"edge vs reference: {median['reference']['stack']:.3f} s / {median['edge']['stack']:.3f} s = {speedup:.1f}x")

    quality = {}
    if cfg.count:
        size = rgb.shape[1], rgb.shape[0]
        for name, (model, mode) in runs.items():
            log(f"quality: {name} on {cfg.count} held-out stacks x positions {list(cfg.positions)}")
            quality[name] = _quality(model, mode, cfg.count, cfg.positions, cfg.seed, size)
    choices = [{"component": c.component, "backend": c.backend, "device": c.device, "reason": c.reason}
               for c in getattr(edge.refocuser, "choices", [])]
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "size": [int(rgb.shape[1]), int(rgb.shape[0])], "position": position,
        "reference": {"model": str(ref.refocuser.source), "mode": "reference", "backend": "torch fp32",
                      "unet_calls": times["reference"][0]["unet_calls"], "load_s": ref_load},
        "edge": {"model": str(edge.refocuser.source), "runtime": edge.runtime, "choices": choices,
                 "notes": list(edge.refocuser.notes), "decoder": edge.refocuser.config.decoder,
                 "unet_calls": times["edge"][0]["unet_calls"], "load_s": edge_load},
        "rounds": times, "median": median, "speedup": speedup, "quality": quality,
    }
    result["bars"] = bars(result)
    return result


def bars(result: dict) -> dict:
    out = {"speedup_at_least": SPEED_BAR, "speedup_met": result["speedup"] >= SPEED_BAR}
    q = result.get("quality") or {}
    if "edge" in q and "reference" in q:
        limit = q["reference"]["lpips_large_jumps"] + QUALITY_SLACK
        out |= {"lpips_large_jumps_at_most": limit, "quality_met": q["edge"]["lpips_large_jumps"] <= limit}
    return out


def markdown(result: dict, command: str) -> str:
    m, ref, edge = result["median"], result["reference"], result["edge"]
    mach = result["machine"]
    lines = [
        "# Edge configuration against the reference (one interleaved run)", "",
        f"- command: `{command}`",
        f"- photo {Path(result['config']['photo']).name} at {result['size'][0]}x{result['size'][1]}, input "
        f"position {result['position']}, seed {result['config']['seed']}; {result['config']['rounds']} timed rounds "
        f"after {result['config']['warmup']} warm-up, reference and edge alternating; medians",
        f"- machine: {mach['cpu']}, {mach['threads']} torch thread(s); load average {mach['load_before']} before, "
        f"{mach['load_after']} after (the machine is shared: ratios from one run, not absolute times)",
        f"- reference: `{ref['model']}`, `--mode reference`, torch fp32, {ref['unet_calls']} UNet calls",
        f"- edge: `{edge['model']}` ({edge['runtime']} runtime, {edge['decoder']} decoder), "
        f"{edge['unet_calls']} UNet call(s)",
    ]
    for c in edge["choices"]:
        lines.append(f"  - {c['component']}: {c['backend']} [{c['device']}]")
    lines += ["", "| stage | reference | edge | ratio |", "|---|---|---|---|"]
    for k in (*STAGES, "stack"):
        r, e = m["reference"][k], m["edge"][k]
        lines.append(f"| {k} | {r * 1e3:.1f} ms | {e * 1e3:.1f} ms | {r / e:.1f}x |")
    b = result["bars"]
    lines += ["", f"**Speed-up, whole stack: {result['speedup']:.1f}x** (bar: at least {b['speedup_at_least']:.0f}x: "
                  f"{'met' if b['speedup_met'] else 'not met'})."]
    q = result["quality"]
    if q:
        lines += ["", "| quality (held-out synthetic) | reference | edge |", "|---|---|---|",
                  f"| LPIPS to the truth, \\|j-k\\| >= 4 | {q['reference']['lpips_large_jumps']:.3f} | "
                  f"{q['edge']['lpips_large_jumps']:.3f} |",
                  f"| LPIPS to the truth, own frame | {q['reference']['lpips_own_frame']:.3f} | "
                  f"{q['edge']['lpips_own_frame']:.3f} |",
                  "", f"{q['edge']['inputs']} inputs ({result['config']['count']} stacks x positions "
                      f"{result['config']['positions']}). Bar: edge at most reference + {QUALITY_SLACK} = "
                      f"{b['lpips_large_jumps_at_most']:.3f}: {'met' if b['quality_met'] else 'not met'}."]
    return "\n".join(lines) + "\n"


def write_edge_report(result: dict, out: Path, command: str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = dict(result, command=command)
    paths = [out / "edge.json", out / "edge.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result, command))
    return paths
