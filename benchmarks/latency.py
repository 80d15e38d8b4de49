"""Latency benchmark: where the time of one focal stack goes, per stage and per mode.

Every stage is a zero-argument callable built once by `stage_callables` (inputs
prepared outside the timed region) so that this module, the CLI and the
pytest-benchmark file (benchmarks/test_bench_latency.py) time the same code.
Medians, min and max over `repeats` runs after `warmup` untimed runs.

    python -m benchmarks.latency --model refocus-tiny --repeats 3 --out out/latency

Timings are wall clock on whatever else the machine is doing: the report records
torch's thread count and the load average, because on a 2-core box a second busy
process makes 2-thread torch runs many times slower (threads wait on each other).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

from refocus_edge.bench.inputs import diffusers_baseline, stage_inputs
from refocus_edge.bench.models import load, working_size
from refocus_edge.bench.timing import peak_rss_mib, timed
from refocus_edge.runtime.conditioning import component_dtype, conditioning_latents, image_embedding

# name -> what is timed. Order = report order.
STAGES = {
    "image_encoder": "CLIP image embedding of the input (224x224 antialiased resize + encoder)",
    "vae_encode_literal": "conditioning latents, reference form: 9 frames encoded (8 mid-gray), then masked",
    "vae_encode_fast": "conditioning latents, fast form: only the input frame encoded",
    "unet_b1": "one UNet call, batch 1 (one guidance branch), stock attention: the reference's call",
    "unet_b2": "one UNet call, batch 2 (both guidance branches), stock attention",
    "unet_b2_fast": "one UNet call, batch 2, single-token cross-attention shortcut: fast mode's call",
    "vae_decode": "temporal VAE decode of the 9 latents in chunks 8 + 1",
    "end_to_end_reference": "sample_focal_stack mode=reference: literal encode, 2 batch-1 calls per step",
    "end_to_end_fast": "sample_focal_stack mode=fast: 1-frame encode, 1 batch-2 call per step, shortcut",
    "diffusers_baseline": "the plain loop a user would write from diffusers components: "
                          "1-frame encode, 2 batch-1 calls per step, stock attention, decode 8 + 1",
}
END_TO_END = ("end_to_end_reference", "end_to_end_fast", "diffusers_baseline")






def stage_callables(refocuser, size=None, position: int | None = None, seed: int = 0,
                    steps: int | None = None) -> dict:
    """name -> (fn, context factory): enter the context, then time fn() (no arguments)."""
    from refocus_edge.runtime.conditioning import conditioning_latents_literal
    from refocus_edge.runtime.fast_attention import single_token_cross_attention
    from refocus_edge.runtime.sampler import SamplerConfig, decode_latents, sample_focal_stack

    cfg = refocuser.config
    size = tuple(size) if size is not None else working_size(refocuser)
    position = cfg.default_position if position is None else int(position)
    steps = cfg.num_inference_steps if steps is None else int(steps)
    inp = stage_inputs(refocuser, size, position, seed, steps)
    image, x1, x2, emb, emb2, ids, t = inp.image, inp.x1, inp.x2, inp.emb, inp.emb2, inp.ids, inp.t
    unet, vae, frames_n = refocuser.unet, refocuser.vae, cfg.num_frames

    def nograd(fn):
        return torch.no_grad()(fn)

    def sample(mode):
        return lambda: sample_focal_stack(refocuser, image, SamplerConfig(
            position=position, num_inference_steps=steps, seed=seed, mode=mode, progress=False)).frames

    none, shortcut = contextlib.nullcontext, lambda: single_token_cross_attention(unet)
    fns = {
        "image_encoder": (nograd(lambda: image_embedding(refocuser.image_encoder, image, refocuser.clip_size,
                                                         refocuser.clip_mean, refocuser.clip_std)), none),
        "vae_encode_literal": (nograd(lambda: conditioning_latents_literal(vae, image, position, frames_n)), none),
        "vae_encode_fast": (nograd(lambda: conditioning_latents(vae, image, position, frames_n)), none),
        "unet_b1": (nograd(lambda: unet(x1, t, encoder_hidden_states=emb, added_time_ids=ids).sample), none),
        "unet_b2": (nograd(lambda: unet(x2, t, encoder_hidden_states=emb2,
                                        added_time_ids=ids.repeat(2, 1)).sample), none),
        # The shortcut is entered once around all runs, as the sampler does once per stack.
        "unet_b2_fast": (nograd(lambda: unet(x2, t, encoder_hidden_states=emb2,
                                             added_time_ids=ids.repeat(2, 1)).sample), shortcut),
        "vae_decode": (nograd(lambda: decode_latents(vae, inp.latents, cfg.decode_chunk_sizes)), none),
        "end_to_end_reference": (sample("reference"), none),
        "end_to_end_fast": (sample("fast"), none),
        "diffusers_baseline": (lambda: diffusers_baseline(refocuser, image, position, seed, steps), none),
    }
    assert list(fns) == list(STAGES)
    return fns



def measure_stages(refocuser, size=None, position: int | None = None, seed: int = 0, repeats: int = 3,
                   warmup: int = 1, steps: int | None = None, progress: bool = False) -> dict:
    """Median/min/max seconds of every stage in STAGES, plus the checks that the modes agree."""
    refocuser = load(refocuser)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    cfg = refocuser.config
    size = tuple(int(v) for v in size) if size is not None else working_size(refocuser)
    position = cfg.default_position if position is None else int(position)
    steps = cfg.num_inference_steps if steps is None else int(steps)
    load_start = os.getloadavg()[0]
    fns = stage_callables(refocuser, size, position, seed, steps)
    stages, outputs = {}, {}
    for name, (fn, context) in fns.items():
        if progress:
            print(f"  {name} ...", file=sys.stderr, flush=True)
        with context():
            stats, out = timed(fn, repeats, warmup)
        if name in END_TO_END:
            outputs[name] = out
        stages[name] = {**stats, "what": STAGES[name]}
    ref = outputs["end_to_end_reference"]
    median = {k: v["median_s"] for k, v in stages.items()}
    return {
        "benchmark": "latency",
        "model_path": str(refocuser.source),
        "size": list(size),
        "position": position,
        "seed": seed,
        "steps": steps,
        "repeats": repeats,
        "warmup": warmup,
        "unet_calls": {"end_to_end_reference": 2 * steps, "end_to_end_fast": steps, "diffusers_baseline": 2 * steps},
        "stages": stages,
        "speedup": {"fast_vs_reference": median["end_to_end_reference"] / median["end_to_end_fast"],
                    "fast_vs_diffusers_baseline": median["diffusers_baseline"] / median["end_to_end_fast"]},
        # Same seed, same maths: these must stay tiny, or the comparison is not like for like.
        "max_abs_diff_vs_reference": {
            "end_to_end_fast": float((outputs["end_to_end_fast"] - ref).abs().max()),
            "diffusers_baseline": float((outputs["diffusers_baseline"] - ref).abs().max()),
        },
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_note": "process-wide RSS high-water mark (getrusage), model loading and anything run "
                         "earlier in this process included; not per stage",
        "env": {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                "dtype": str(component_dtype(refocuser.unet)), "machine": platform.machine(),
                "load_avg_1min_start": load_start, "load_avg_1min_end": os.getloadavg()[0]},
    }


# --------------------------------------------------------------------------- report

def _fmt(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _markdown(res: dict) -> str:
    env, w, h = res["env"], *res["size"]
    lines = [
        f"# Latency: {Path(res['model_path']).name}", "",
        f"- command: `{res.get('command', 'measure_stages(...)')}`",
        f"- model: `{res['model_path']}` ({env['dtype']}), {w}x{h}, input position {res['position']}, "
        f"{res['steps']} steps, seed {res['seed']}",
        f"- {res['repeats']} timed runs after {res['warmup']} warm-up; torch {env['torch']}, "
        f"{env['torch_threads']} threads, {env['cpus']} CPUs, load average {env['load_avg_1min_start']:.2f} "
        f"at start / {env['load_avg_1min_end']:.2f} at end (other processes skew timings)",
        f"- peak RSS {res['peak_rss_mib']:.0f} MiB ({res['peak_rss_note']})", "",
        "| stage | median | min | max | what |", "|---|---|---|---|---|",
    ]
    for name, s in res["stages"].items():
        lines.append(f"| {name} | {_fmt(s['median_s'])} | {_fmt(s['min_s'])} | {_fmt(s['max_s'])} | {s['what']} |")
    sp, diff, calls = res["speedup"], res["max_abs_diff_vs_reference"], res["unet_calls"]
    lines += [
        "", f"UNet calls per stack: reference {calls['end_to_end_reference']}, fast {calls['end_to_end_fast']} "
        f"(batch 2), diffusers baseline {calls['diffusers_baseline']}.",
        f"Fast mode is {sp['fast_vs_reference']:.2f}x the reference and {sp['fast_vs_diffusers_baseline']:.2f}x "
        "the diffusers baseline (median end to end).",
        f"Max |output - reference output|, same seed: fast {diff['end_to_end_fast']:.2e}, "
        f"diffusers baseline {diff['diffusers_baseline']:.2e}.", "", "Chart: `latency.png`.", "",
    ]
    return "\n".join(lines)


def _chart(res: dict):
    """Horizontal bars, per-stage and end-to-end groups each scaled to their own maximum."""
    from PIL import Image, ImageDraw

    groups = [("one call of each stage", [k for k in res["stages"] if k not in END_TO_END]),
              ("one focal stack, end to end", [k for k in res["stages"] if k in END_TO_END])]
    label_w, bar_w, row, pad = 170, 420, 20, 6
    height = 24 + sum(24 + row * len(names) for _, names in groups) + pad
    img = Image.new("RGB", (label_w + bar_w + 90, height), "white")
    draw = ImageDraw.Draw(img)
    w, h = res["size"]
    draw.text((4, 4), f"{Path(res['model_path']).name} {w}x{h} {res['steps']} steps: median latency "
                      f"(whiskers min..max)", fill="black")
    y = 24
    for title, names in groups:
        draw.text((4, y + 6), title, fill="black")
        y += 24
        top = max(res["stages"][n]["max_s"] for n in names) or 1.0
        for n in names:
            s = res["stages"][n]
            x = lambda v: label_w + int(bar_w * v / top)  # noqa: E731 - scale of this group
            color = (70, 130, 180) if n != "diffusers_baseline" else (200, 120, 60)
            draw.text((4, y + 4), n, fill="black")
            draw.rectangle([label_w, y + 3, max(x(s["median_s"]), label_w + 1), y + row - 3], fill=color)
            draw.line([x(s["min_s"]), y + row // 2, x(s["max_s"]), y + row // 2], fill="black")
            draw.text((x(s["max_s"]) + 6, y + 4), _fmt(s["median_s"]), fill="black")
            y += row
    return img


def write_latency_report(result: dict, out_dir) -> dict:
    """Write latency.json, latency.md and latency.png into out_dir; returns their paths."""
    from refocus_edge.bench.report import write_report

    return write_report(out_dir, "latency", result, _markdown(result), _chart(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="shipped model name or folder (default: $REFOCUS_MODEL "
                        "or refocus-tiny)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None,
                        help="working size (default: the model's fixed size, else 128 128)")
    parser.add_argument("--position", type=int, default=None, help="input focal position (default: model's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps (default: the model's; 25 for the reference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("out/latency"))
    args = parser.parse_args(argv)
    from refocus_edge.runtime.errors import RefocusError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        refocuser = load(args.model)
    except RefocusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = measure_stages(refocuser, args.size, args.position, args.seed, args.repeats, args.warmup,
                            args.steps, progress=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    result["command"] = "python -m benchmarks.latency " + shlex.join(argv)
    paths = write_latency_report(result, args.out)
    for name, s in result["stages"].items():
        print(f"{name:22s} {_fmt(s['median_s']):>10s}")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB (process-wide)")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
