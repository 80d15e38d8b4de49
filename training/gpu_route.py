"""The GPU route: finetune the teacher, then train the 1- and 4-step students, in one command.

    python -m training.gpu_route [--teacher refocus-tiny] [--out runs/gpu-route] [--minutes 7]
    python -m training.gpu_route --dry-run            # CPU, a handful of updates, a temp folder

Stages, all under one wall-clock budget (`--minutes`, whole run; later stages get
what earlier ones left):

  data     render synthetic training stacks at the teacher's working size (in parallel,
           one process per core; training-split items from --data-start on, so scenes the
           shipped teacher never saw), or reuse an existing cache (--data);
  teacher  continue the teacher's UNet + image encoder on the device
           (training/train_tiny.py `train_unet`, warm-started from --teacher, bf16
           autocast, time-capped), then write it as a model folder (the teacher's
           folder with the new UNet and image encoder);
  encode   the students' ground-truth cache (export/distillation, on CPU, once for both);
  students the 4- and 1-step students with the ground-truth objective through
           export.distillation (DistillConfig + run_distillation), from the new
           teacher's UNet (or --student-init), their update counts sized from the
           teacher's measured s/step so that each fits its share of the time left.

Every stage's wall time, the device and the peak GPU memory go to <out>/summary.json
(rewritten after each stage, so a killed run still leaves one). The budgets, batch
sizes and update counts are plans: no GPU was available when this was written.
`--dry-run` runs the same functions with tiny numbers (CPU unless --device says
otherwise); the test suite runs it on a random tiny refocuser.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from refocus_edge.runtime.errors import InvalidArgumentError, RefocusError
from training.train_tiny import StageConfig, load_stacks, train_unet, training_device

SPLIT = "train"
SUMMARY_NAME = "summary.json"
DATA_DIR, TEACHER_RUN, STUDENT_RUNS = "data", "teacher-run", "student-runs"
PLANNED_TEACHER_S_PER_STEP = 0.15  # only used if the teacher stage made no timed update


@dataclass(frozen=True)
class RouteConfig:
    """One GPU route. The defaults are the plan for one H200 (139 GiB) with 16 CPU cores."""

    out: Path = Path("runs/gpu-route")
    teacher: str = "refocus-tiny"  # shipped name or model folder
    name: str = "refocus-tiny-gpu"  # the new teacher's folder name; students get -<N>step
    device: str = "cuda"
    precision: str = "bf16"  # autocast of UNet (+ image encoder) forward passes; fp32 weights
    minutes: float = 7.0  # the whole run, first stage to summary
    # data
    data: Path | None = None  # an existing uint8 [N, 9, H, W, 3] cache instead of rendering
    data_start: int = 3000  # first training-split item rendered (the shipped teacher saw 0..2999)
    data_count: int = 2048
    render_workers: int = 0  # 0: one per CPU core
    # teacher
    teacher_fraction: float = 0.45  # share of the time left after the data stage
    teacher_steps: int = 6000  # an upper bound: the time budget normally ends the stage
    teacher_batch: int = 128
    teacher_lr: float = 2e-4
    sigma_uniform: float = 0.6  # as the shipped teacher was trained
    # students
    student_steps: tuple[int, ...] = (4, 1)  # in this order: the 4-step (the default model) first
    student_init: str = "teacher"  # or a folder template such as models/refocus-tiny-{steps}step
    student_samples: int = 512  # ground-truth stacks (the first ones of the data; ~5% held back)
    student_calls: int = 128  # UNet samples per update: batch = student_calls // steps
    student_lr: float = 1e-4
    student_min_iterations: int = 20
    student_max_iterations: int = 5000
    student_cost: float = 1.0  # planned s/update = teacher s/step x (steps + 1) x this
    reserve_s: float = 15.0  # per student: validation before and after, writing the folder
    seed: int = 0
    pack: Path | None = None  # also write the students (+ teacher if room) as tar parts here
    pack_limit_mib: float = 60.0
    force: bool = False
    dry_run: bool = False


def dry_run_config(cfg: RouteConfig) -> RouteConfig:
    """The same route with tiny numbers: a handful of stacks, steps and updates."""
    return replace(cfg, dry_run=True, minutes=min(cfg.minutes, 5.0), data_count=6, render_workers=2,
                   teacher_steps=3, teacher_batch=2, student_samples=4, student_calls=2,
                   student_min_iterations=1, student_max_iterations=2, reserve_s=1.0)


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), "gpu-route:", msg, flush=True)


# ------------------------------------------------------------------ data
def _render_range(job: tuple[int, int, int, int]) -> tuple[int, np.ndarray]:
    """Worker: training-split items [start, stop) as uint8 [n, 9, H, W, 3] (render_cache's rounding)."""
    from refocus_edge.focalstacks.synthetic import render_stack, split_seed

    start, stop, h, w = job
    torch.set_num_threads(1)
    frames = [render_stack(split_seed(SPLIT, i), (h, w))[0] for i in range(start, stop)]
    return start, np.stack([np.round(f * 255.0).astype(np.uint8) for f in frames])


def render_training_stacks(path: Path, count: int, size_hw: tuple[int, int], start: int = 0,
                           workers: int = 1, log=_log) -> Path:
    """Training-split items start .. start+count-1 into a uint8 .npy at `path`, `workers` processes
    at a time (render_cache's format; written beside `path`, then renamed into place)."""
    import concurrent.futures
    import multiprocessing

    h, w = size_hw
    chunk = max(1, min(16, -(-count // (max(workers, 1) * 4))))
    jobs = [(i, min(i + chunk, start + count), h, w) for i in range(start, start + count, chunk)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (path.name + ".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, 9, h, w, 3))
    if workers <= 1:
        results = map(_render_range, jobs)
        pool = None
    else:  # spawn: no fork of a process that may hold CUDA or OpenMP state
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_render_range, jobs)
    try:
        for first, block in results:
            out[first - start:first - start + len(block)] = block
        out.flush()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        del out
    os.replace(tmp, path)
    from refocus_edge.focalstacks.synthetic import split_seed

    path.with_suffix(".json").write_text(json.dumps(  # the keys render_cache writes, but the lens
        {"split": SPLIT, "seed_start": split_seed(SPLIT, start), "first_item": start, "count": count,
         "size": [h, w], "frames_layout": "N,focus,H,W,RGB uint8 (focus index 0 = near)"}, indent=2) + "\n")
    log(f"rendered {count} stacks ({w}x{h}, items {start}..{start + count - 1}, {workers} workers) -> {path}")
    return path


def _check_cache(path: Path, size_hw: tuple[int, int], need: int) -> int:
    if not path.is_file():
        raise InvalidArgumentError(f"--data {path}: no such stack cache")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 5 or arr.shape[1] != 9 or tuple(arr.shape[2:4]) != tuple(size_hw) or arr.shape[4] != 3:
        raise InvalidArgumentError(f"{path}: expected uint8 [N, 9, {size_hw[0]}, {size_hw[1]}, 3] stacks "
                                   f"(the teacher's working size), got {tuple(arr.shape)}")
    if len(arr) < need:
        raise InvalidArgumentError(f"{path}: {len(arr)} stacks, the students alone need {need}")
    return len(arr)


# --------------------------------------------------------------- teacher
def teacher_stacks(stacks: torch.Tensor, student_samples: int) -> torch.Tensor:
    """All stacks but the ones the students hold back for validation (the tail of their first
    `student_samples`), so that the students' before/after numbers are on stacks no model trained on."""
    from refocus_edge.export.distillation.pipeline import split_counts

    n_train, _ = split_counts(student_samples)
    return torch.cat([stacks[:n_train], stacks[student_samples:]])


def export_teacher(source: Path, run_dir: Path, out: Path, card: dict) -> Path:
    """`source`'s folder with the UNet and image encoder trained in `run_dir`, staged then renamed."""
    from refocus_edge.runtime.model_config import load_model_config, save_model_config

    stage = out.parent / f".{out.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(source, stage, ignore=shutil.ignore_patterns("unet", "image_encoder", "README.md"))
    shutil.copytree(run_dir / "unet", stage / "unet")
    shutil.copytree(run_dir / "image_encoder", stage / "image_encoder")
    save_model_config(replace(load_model_config(source), extra=dict(card)), stage)
    (stage / "README.md").write_text(
        f"# {out.name}\n\n{card['summary']}\n\nWritten by `python -m training.gpu_route`; the VAE, "
        f"scheduler and sampling settings are {source.name}'s. Numbers: summary.json of the run.\n")
    shutil.rmtree(out, ignore_errors=True)
    stage.replace(out)
    return out


# -------------------------------------------------------------- students
def student_iterations(cfg: RouteConfig, steps: int, budget_s: float, teacher_s_per_step: float) -> int:
    """Updates that fit `budget_s`, planned from the teacher's measured s/step (never measured for students)."""
    per_update = teacher_s_per_step * (steps + 1) * cfg.student_cost
    return int(min(cfg.student_max_iterations, max(cfg.student_min_iterations, budget_s // per_update)))


def _student_init(cfg: RouteConfig, steps: int) -> Path | None:
    if cfg.student_init == "teacher":
        return None
    path = Path(cfg.student_init.format(steps=steps))
    if not (path / "unet").is_dir() and not (path / "config.json").is_file():
        raise InvalidArgumentError(f"--student-init {cfg.student_init!r}: {path} is not a model or UNet folder")
    return path


def _distill_config(cfg: RouteConfig, teacher_dir: Path, data: Path, device: torch.device):
    from refocus_edge.export.distillation.config import DistillConfig

    return DistillConfig(teacher=teacher_dir, out=cfg.out / f"{cfg.name}-student", objective="ground-truth",
                         data=str(data), samples=cfg.student_samples, lr=cfg.student_lr, seed=cfg.seed,
                         device=str(device), precision=cfg.precision, cache=cfg.out / STUDENT_RUNS / "ground-truth",
                         progress=False, force=True)


# ------------------------------------------------------------- plumbing
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _route_entries(cfg: RouteConfig) -> set[str]:
    names = {TEACHER_RUN, STUDENT_RUNS, SUMMARY_NAME, cfg.name, f".{cfg.name}.partial"}
    for n in cfg.student_steps:
        names |= {f"{cfg.name}-{n}step", f".{cfg.name}-{n}step.partial"}
    return names


def prepare_out(cfg: RouteConfig) -> None:
    """Refuse a folder holding results unless --force; then remove only what the route writes
    (the rendered data/ is kept for the next run)."""
    out = cfg.out
    if out.is_dir():
        entries = [p for p in out.iterdir() if p.name != DATA_DIR]
        foreign = sorted(p.name for p in entries if p.name not in _route_entries(cfg))
        if foreign:
            raise InvalidArgumentError(f"{out} holds {foreign[:3]}, which this route did not write; "
                                       "choose another --out")
        if entries and not cfg.force:
            raise InvalidArgumentError(f"{out} already holds a route's results; pass --force to replace them "
                                       "(the rendered data/ is kept)")
        for p in entries:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


class Summary:
    """summary.json: settings, device, per-stage wall time and peak GPU memory, rewritten after each stage."""

    def __init__(self, cfg: RouteConfig, device: torch.device, path: Path):
        self.device, self.path, self.t0 = device, path, time.time()
        self.data = {"planned_not_measured": "budgets, batch sizes and update counts are plans made "
                                             "without a GPU; the measured numbers are the ones below",
                     "device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "precision": cfg.precision, "budget_minutes": cfg.minutes,
                     "dry_run": cfg.dry_run, "config": json.loads(json.dumps(asdict(cfg), default=str)),
                     "stages": {}, "models": {}}

    @contextmanager
    def stage(self, name: str):
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        record, t = self.data["stages"].setdefault(name, {}), time.time()
        try:
            yield record
        except BaseException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record["seconds"] = round(time.time() - t, 2)
            if cuda:
                record["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 3)
            self.write()

    def write(self) -> None:
        peaks = [s["peak_gpu_memory_gib"] for s in self.data["stages"].values() if "peak_gpu_memory_gib" in s]
        self.data["peak_gpu_memory_gib"] = max(peaks) if peaks else None
        self.data["total_seconds"] = round(time.time() - self.t0, 2)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)


def pack_models(folders: list[Path], dest: Path, limit_mib: float, part_mib: float = 15.0) -> dict:
    """The model folders, without their vae/ (the route never trains it: it is the teacher's), as
    one tar split into parts of at most `part_mib` (the device tool brings back files up to 16 MiB),
    in the order given while they fit in `limit_mib`. Rejoin with `cat models.tar.* | tar -x`."""
    import io
    import tarfile

    def size(folder: Path) -> int:
        return sum(f.stat().st_size for f in folder.rglob("*")
                   if f.is_file() and f.relative_to(folder).parts[0] != "vae")

    packed, skipped, total = [], [], 0
    for folder in folders:
        if total + size(folder) + 2 ** 20 > limit_mib * 2 ** 20:
            skipped.append(folder.name)
            continue
        packed.append(folder)
        total += size(folder)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in packed:
            tar.add(folder, arcname=folder.name, filter=lambda ti: None if Path(ti.name).parts[1:2] == ("vae",) else ti)
    data, part = buf.getvalue(), int(part_mib * 2 ** 20)
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(data), part):
        parts.append(dest / f"models.tar.{i // part:03d}")
        parts[-1].write_bytes(data[i:i + part])
    return {"packed": [f.name for f in packed], "not_packed": skipped, "parts": [p.name for p in parts],
            "mib": round(len(data) / 2 ** 20, 1)}


# ------------------------------------------------------------------ route
def run_route(cfg: RouteConfig, log=_log) -> dict:
    """All stages; returns the summary (also in <out>/summary.json)."""
    from refocus_edge.runtime.model_config import load_model_config
    from refocus_edge.runtime.zoo import resolve_model

    t0 = time.time()
    deadline = t0 + cfg.minutes * 60
    device = training_device(cfg.device)
    if cfg.precision not in ("fp32", "bf16"):
        raise InvalidArgumentError(f"--precision must be fp32 or bf16, got {cfg.precision!r}")
    source = resolve_model(cfg.teacher)
    missing = [c for c in ("unet", "vae", "image_encoder") if not (source / c).is_dir()]
    if missing:
        raise InvalidArgumentError(f"--teacher {cfg.teacher}: {source} is not a model folder (no {missing})")
    fixed = load_model_config(source).fixed_size
    if fixed is None:
        raise InvalidArgumentError(f"--teacher {cfg.teacher}: the route trains at the teacher's fixed working "
                                   "size, and this model has none (refocus.json fixed_size)")
    size_hw = (int(fixed[1]), int(fixed[0]))
    if cfg.student_samples < 4 or not cfg.student_steps or min(cfg.student_steps) < 1:
        raise InvalidArgumentError("--student-samples must be >= 4 and --student-steps >= 1")
    inits = {n: _student_init(cfg, n) for n in cfg.student_steps}
    prepare_out(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    summary = Summary(cfg, device, cfg.out / SUMMARY_NAME)
    log(f"{'dry run, ' if cfg.dry_run else ''}device {summary.data['device_name']}, {cfg.precision}, "
        f"budget {cfg.minutes:g} min, out {cfg.out}")
    try:
        _run_stages(cfg, device, source, size_hw, inits, deadline, summary, log)
    finally:  # also after a failed stage: whatever was written comes back
        if cfg.pack is not None:
            order = [f"{n}step" for n in sorted(cfg.student_steps, reverse=True)] + ["teacher"]
            folders = [Path(summary.data["models"][k]) for k in order if k in summary.data["models"]]
            summary.data["pack"] = pack_models(folders, Path(cfg.pack), cfg.pack_limit_mib)
        summary.write()
        if cfg.pack is not None:
            shutil.copy2(summary.path, Path(cfg.pack) / SUMMARY_NAME)
    return summary.data


def _run_stages(cfg: RouteConfig, device: torch.device, source: Path, size_hw: tuple[int, int],
                inits: dict, deadline: float, summary: Summary, log) -> None:
    from refocus_edge.export.distillation.pipeline import load_teacher, prepare_ground_truth, run_distillation

    # (a) data
    with summary.stage("data") as rec:
        if cfg.data is not None:
            data, rec["rendered"] = Path(cfg.data), False
        else:
            name = f"{SPLIT}_{size_hw[1]}x{size_hw[0]}_from{cfg.data_start}_n{cfg.data_count}.npy"
            data = cfg.out / DATA_DIR / name
            rec["rendered"] = not data.is_file()
            if rec["rendered"]:
                render_training_stacks(data, cfg.data_count, size_hw, cfg.data_start,
                                       cfg.render_workers or os.cpu_count() or 1, log)
        rec["stacks"], rec["path"] = _check_cache(data, size_hw, cfg.student_samples), str(data)
    # (b) teacher
    teacher_dir = cfg.out / cfg.name
    with summary.stage("teacher") as rec:
        run_dir = cfg.out / TEACHER_RUN
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / "vae", run_dir / "vae", dirs_exist_ok=True)
        stacks = teacher_stacks(load_stacks(data), cfg.student_samples)
        rec["budget_s"] = round(cfg.teacher_fraction * (deadline - time.time()), 1)
        stage_cfg = StageConfig(cfg.teacher_steps, cfg.teacher_lr, cfg.teacher_batch, cfg.seed,
                                sigma_uniform=cfg.sigma_uniform)
        log(f"teacher: {len(stacks)} stacks, batch {cfg.teacher_batch}, up to {cfg.teacher_steps} steps "
            f"in {rec['budget_s']:g} s")
        rec.update(train_unet(stacks, stage_cfg, run_dir, source, device, cfg.precision, rec["budget_s"] / 60))
        del stacks
        card = {"summary": f"{source.name} finetuned for {rec['steps']} steps (batch {cfg.teacher_batch}) "
                           f"on {summary.data['device_name']} by training/gpu_route.py",
                "finetuned_from": str(source), "steps": rec["steps"], "batch": cfg.teacher_batch,
                "lr": cfg.teacher_lr, "precision": cfg.precision, "data": str(data)}
        summary.data["models"]["teacher"] = str(export_teacher(source, run_dir, teacher_dir, card))
    teacher_rate = summary.data["stages"]["teacher"].get("s_per_step") or PLANNED_TEACHER_S_PER_STEP
    # (c) students: the ground truth once, then each student
    base = _distill_config(cfg, teacher_dir, data, device)
    with summary.stage("encode"):
        prepare_ground_truth(load_teacher(base), base, log)
    left = list(cfg.student_steps)
    for n in cfg.student_steps:
        weights = sum(k + 1 for k in left)
        budget = ((deadline - time.time()) - cfg.reserve_s * len(left)) * (n + 1) / weights
        left.remove(n)
        with summary.stage(f"student_{n}step") as rec:
            if budget + cfg.reserve_s <= 0:
                rec["skipped"] = "the route's time budget was spent"
                log(f"{n}-step student skipped: no time left")
                continue
            iterations = student_iterations(cfg, n, budget, teacher_rate)
            scfg = replace(base, steps=n, out=cfg.out / f"{cfg.name}-{n}step", init=inits[n],
                           run_dir=cfg.out / STUDENT_RUNS / f"{n}step", iterations=iterations,
                           batch=max(1, cfg.student_calls // n),
                           extra_card={"trained_by": "training/gpu_route.py",
                                       "device_name": summary.data["device_name"]})
            rec.update(budget_s=round(budget, 1), iterations=iterations, batch=scfg.batch,
                       planned_s_per_update=round(teacher_rate * (n + 1) * cfg.student_cost, 4))
            log(f"{n}-step student: {iterations} updates of batch {scfg.batch} planned in {budget:.0f} s")
            summary.data["models"][f"{n}step"] = str(run_distillation(scfg, log))
            card = json.loads((scfg.resolved_run_dir / "card.json").read_text())["training"]
            rec.update(train_seconds=round(card["seconds"], 2), val_start=card["val_start"],
                       val_end=card["val_end"], s_per_update=card["seconds"] / max(card["iterations"], 1))


def _print_summary(s: dict) -> None:
    print(f"\nGPU route on {s['device_name']} ({s['precision']}): {s['total_seconds'] / 60:.1f} min of the "
          f"{s['budget_minutes']:g} planned; peak GPU memory "
          + (f"{s['peak_gpu_memory_gib']:.2f} GiB" if s["peak_gpu_memory_gib"] is not None else "n/a (not CUDA)"))
    for name, st in s["stages"].items():
        extra = ", ".join(f"{k} {round(st[k], 3) if isinstance(st[k], float) else st[k]}" for k in (
            "steps", "iterations", "batch", "s_per_step", "s_per_update", "peak_gpu_memory_gib", "skipped")
            if st.get(k) is not None)
        print(f"  {name:<15} {st['seconds']:8.1f} s  {extra}")
    for name, path in s["models"].items():
        print(f"  model {name:<9} {path}")
    if s.get("pack"):
        print(f"  packed {s['pack']['packed']} ({s['pack']['mib']} MiB, {len(s['pack']['parts'])} parts); "
              f"not packed: {s['pack']['not_packed']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.gpu_route", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=None, help="shipped name or model folder (default refocus-tiny)")
    p.add_argument("--out", type=Path, default=None,
                   help="route folder (default runs/gpu-route; dry run: a temp folder)")
    p.add_argument("--device", default=None, help="cuda (default), cuda:N; the dry run defaults to cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="autocast precision (default bf16)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the whole run (default 7)")
    p.add_argument("--data", type=Path, default=None, help="an existing uint8 [N, 9, H, W, 3] stack cache")
    p.add_argument("--data-count", type=int, default=None, help="stacks to render (default 2048)")
    p.add_argument("--teacher-batch", type=int, default=None)
    p.add_argument("--student-steps", type=int, nargs="+", default=None,
                   help="students, in training order (default: 4 1)")
    p.add_argument("--student-init", default=None,
                   help="'teacher' (the new teacher's UNet, default) or a folder template, "
                        "e.g. models/refocus-tiny-{steps}step")
    p.add_argument("--student-samples", type=int, default=None, help="ground-truth stacks (default 512)")
    p.add_argument("--pack", type=Path, default=None,
                   help="also write the model folders (no vae/) as tar parts of <= 15 MiB here, e.g. $OUT")
    p.add_argument("--force", action="store_true", help="replace the results of an earlier route in --out")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny numbers, a temp folder unless --out")
    return p


def config_from_args(args: argparse.Namespace) -> RouteConfig:
    cfg = RouteConfig()
    if args.dry_run:
        cfg = dry_run_config(replace(cfg, device="cpu"))
        if args.out is None:
            args.out = Path(tempfile.mkdtemp(prefix="gpu-route-dry-"))
    given = {"out": args.out, "teacher": args.teacher, "device": args.device, "precision": args.precision,
             "minutes": args.minutes, "data": args.data, "data_count": args.data_count,
             "teacher_batch": args.teacher_batch, "student_init": args.student_init,
             "student_samples": args.student_samples, "pack": args.pack,
             "student_steps": tuple(args.student_steps) if args.student_steps else None}
    return replace(cfg, force=args.force, **{k: v for k, v in given.items() if v is not None})


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run_route(config_from_args(args))
    except RefocusError as exc:
        print(f"gpu_route: error: {exc}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
