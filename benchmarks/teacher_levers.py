"""Teacher training levers against each other at equal wall time (issue 23, item 4).

Each lever continues the shipped teacher (`--init`, default models/refocus-tiny) with
`python -m training.train_tiny unet` for the same wall-clock budget (`--minutes`) on one
thread, `--parallel` of them at a time, so the runs share the machine the same way. A
baseline continues with the teacher's own recipe, so a lever is compared with what the
same minutes of ordinary training give. Then every result (and the starting teacher) is
measured the same way:

- `training.probe` at guidance 1, error per distance |j - k| (latent MSE of the one-shot
  clean estimate at sigma 700, 20 and 1): the "does not keep its own frame" diagnosis;
- `benchmarks.quality` in reference mode (25 guided steps, the reference sampler
  unchanged): LPIPS at |j - k| >= 4, own frame, depth-from-focus rank.

    python -m benchmarks.teacher_levers --minutes 20 --out benchmarks/results/teacher-levers

Runs live under --work (default runs/levers/<lever>/); a finished lever is not trained
again, so the command resumes after an interruption. results.json and levers.md go to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

# name -> (train_tiny arguments on top of the shared ones, what it changes)
LEVERS = {
    "baseline": ([], "the teacher's own recipe continued (EDM weight, batch 4, whole 128x128 frames)"),
    "min-snr": (["--loss-weight", "min-snr", "--snr-gamma", "5"],
                "min-SNR-5 loss weight instead of the EDM weight"),
    "own-frame": (["--own-weight", "4"], "the input's own frame counts 4x in the loss"),
    "crops": (["--latent-crop", "8", "--batch", "16"],
              "64x64 crops (latent 8x8), batch 16: about 4x the examples per second"),
    "batch16": (["--accumulate", "4"], "effective batch 16 (4 batches of 4 summed per update)"),
}
PROBE_SIGMAS = (700.0, 20.0, 1.0)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(work: Path, init: Path, data: Path) -> Path:
    """work/shared with the teacher's VAE and the training stacks' latents (encoded once)."""
    from diffusers import AutoencoderKLTemporalDecoder

    from training.train_tiny import encode_latents, load_stacks

    shared = work / "shared"
    if not (shared / "vae").is_dir():
        shutil.copytree(init / "vae", shared / "vae")
    if not (shared / "latents.pt").is_file():
        _log("encoding the training stacks once")
        vae = AutoencoderKLTemporalDecoder.from_pretrained(shared / "vae").eval().requires_grad_(False)
        with torch.no_grad():
            latents = encode_latents(vae, load_stacks(data))
        torch.save(latents, shared / "latents.tmp")
        (shared / "latents.tmp").replace(shared / "latents.pt")
    return shared


def train_command(name: str, args) -> list[str]:
    run = args.work / name
    extra, _ = LEVERS[name]
    base = ["--init", str(args.init), "--lr", str(args.lr), "--sigma-uniform", "0.6", "--steps", "100000",
            "--minutes", str(args.minutes), "--run-dir", str(run), "--seed", str(args.seed)]
    if "--batch" not in extra:
        base += ["--batch", "4"]
    return [sys.executable, "-m", "training.train_tiny", "unet", *base, *extra]


def train_levers(names: list[str], args, shared: Path) -> None:
    """Start the levers' runs, `parallel` at a time, one thread each; skip the finished ones."""
    from training.tiny_architecture import WORKING_SIZE

    todo = []
    for name in names:
        run = args.work / name
        if (run / "unet_run.json").is_file() and (run / "unet").is_dir():
            _log(f"{name}: trained already ({run})")
            continue
        run.mkdir(parents=True, exist_ok=True)
        for part in ("vae", "latents.pt"):
            if not (run / part).exists():
                (run / part).symlink_to((shared / part).resolve())
        stacks = run / f"train_{WORKING_SIZE[0]}.npy"  # where train_tiny reads its stacks from
        if not stacks.exists():
            stacks.symlink_to(args.data.resolve())
        todo.append(name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[str, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < args.parallel:
            name = todo.pop(0)
            cmd = train_command(name, args)
            _log(f"{name}: {shlex.join(cmd)}")
            log = open(args.work / name / "train.log", "a")
            running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(5)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                if proc.returncode != 0:
                    raise RuntimeError(f"{name}: training failed (rc {proc.returncode}); see "
                                       f"{args.work / name / 'train.log'}")
                _log(f"{name}: done")


def model_folder(name: str, args) -> Path:
    """The starting teacher's folder with this lever's UNet and image encoder (EMA weights)."""
    if name == "start":
        return args.init
    out = args.work / name / "model"
    if not out.is_dir():
        tmp = args.work / name / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(args.init, tmp, ignore=shutil.ignore_patterns("unet", "image_encoder"))
        shutil.copytree(args.work / name / "unet", tmp / "unet")
        shutil.copytree(args.work / name / "image_encoder", tmp / "image_encoder")
        tmp.replace(out)
    return out


def measure(name: str, args) -> dict:
    from benchmarks.quality import evaluate_quality
    from training.probe import probe

    cache = args.work / name / "measured.json" if name != "start" else args.work / "start_measured.json"
    facts = {"count": args.count, "positions": args.positions}
    if cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("facts") == facts:
            return old
    model = model_folder(name, args)
    t0 = time.time()
    rows = probe(model, count=args.count, positions=tuple(args.positions), sigmas=PROBE_SIGMAS, guidance=1.0)
    q = evaluate_quality(model, args.count, args.positions, seed=0, mode="reference", progress=False)
    run = {} if name == "start" else json.loads((args.work / name / "unet_run.json").read_text())
    out = {"facts": facts, "model": str(model),
           "probe": {str(s): {"own": r["model_by_jump"][0], "far": r["model_far"], "all": r["model"],
                              "copy_far": r["copy_far"], "by_jump": r["model_by_jump"]} for s, r in rows.items()},
           "large_jump": q["large_jump"]["model"], "identity": q["large_jump"]["baseline"],
           "own_frame": q["own_frame"]["model"], "depth_rank": q["depth_rank"]["model"],
           "all_cells": q["all_cells"]["model"], "measure_seconds": time.time() - t0,
           "updates": run.get("updates"), "s_per_step": run.get("s_per_step"), "final_loss": run.get("final_loss"),
           "examples": (run["updates"] * run["config"]["batch"] * run["config"]["accumulate"]) if run else None,
           "train_seconds": run.get("train_seconds")}
    cache.write_text(json.dumps(out, indent=1) + "\n")
    _log(f"{name}: large jumps {out['large_jump']:.4f}, own frame {out['own_frame']:.4f}, "
         f"depth rank {out['depth_rank']:.3f}")
    return out


def markdown(results: dict, args) -> str:
    lines = [f"# Teacher levers at equal wall time ({args.minutes:g} min each, one thread, {args.parallel} at a time)",
             "", f"`{args.command}`", "",
             f"Every run continues `{args.init}` (lr {args.lr:g} with warm-up and cosine over the budget, "
             "sigma mixture 0.6 as the teacher was trained, EMA weights measured). Quality: "
             f"`benchmarks.quality` in reference mode (25 guided Euler steps), {args.count} held-out synthetic "
             f"stacks x inputs {args.positions}; probe: `training.probe` at guidance 1, latent MSE of the "
             "one-shot clean estimate on the input's own frame (own) and at |j - k| >= 4 (far).", "",
             "| lever | what it changes | updates | examples | s/update | LPIPS \\|j-k\\|>=4 | own frame | "
             "depth rank | probe own / far, sigma 700 | sigma 20 | sigma 1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        what = "the shipped teacher, before" if name == "start" else LEVERS[name][1]
        p = r["probe"]
        cells = " | ".join(f"{p[str(s)]['own']:.3f} / {p[str(s)]['far']:.3f}" for s in PROBE_SIGMAS)
        upd = "-" if r["updates"] is None else str(r["updates"])
        ex = "-" if r["examples"] is None else str(r["examples"])
        sps = "-" if r["s_per_step"] is None else f"{r['s_per_step']:.2f}"
        lines.append(f"| {name} | {what} | {upd} | {ex} | {sps} | {r['large_jump']:.4f} | {r['own_frame']:.4f} | "
                     f"{r['depth_rank']:.3f} | {cells} |")
    start = results.get("start")
    if start:
        p = start["probe"]
        lines += ["", "Copying the input's latent (probe, far): "
                  + ", ".join(f"sigma {s:g} {p[str(s)]['copy_far']:.3f}" for s in PROBE_SIGMAS)
                  + f"; identity baseline LPIPS at large jumps {start['identity']:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.teacher_levers", description=__doc__.split("\n\n")[0])
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of every lever's training")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--init", type=Path, default=Path("models/refocus-tiny"), help="the teacher every run continues")
    p.add_argument("--data", type=Path, default=Path("runs/refocus-tiny/train_128.npy"),
                   help="training stacks (python -m training.train_tiny data --count 3000)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=8, help="held-out stacks measured")
    p.add_argument("--positions", type=int, nargs="+", default=[0, 4, 8])
    p.add_argument("--work", type=Path, default=Path("runs/levers"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/teacher-levers"))
    p.add_argument("--measure-only", action="store_true", help="measure what is trained, train nothing")
    args = p.parse_args(argv)
    args.command = "python -m benchmarks.teacher_levers " + shlex.join(sys.argv[1:] if argv is None else argv)
    if not args.data.is_file():
        print(f"error: {args.data}: no training stacks; render them with "
              "`python -m training.train_tiny data --count 3000`", file=sys.stderr)
        return 2
    shared = prepare(args.work, args.init, args.data)
    if not args.measure_only:
        train_levers(args.levers, args, shared)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results = {"start": measure("start", args)}
    for name in args.levers:
        if (args.work / name / "unet").is_dir():
            results[name] = measure(name, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"command": args.command, "minutes": args.minutes,
                                                       "parallel": args.parallel, "results": results}, indent=1) + "\n")
    (args.out / "levers.md").write_text(markdown(results, args))
    print(markdown(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
