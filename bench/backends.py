"""Backend benchmark: the same refocuser on every backend, side by side.

For each (backend, precision) a bundle can run, the bundle is loaded with that
backend named explicitly (no auto dispatch, so no mixing of backends) and timed
through the refocuser's PyTorch call signatures: the adapters of
runtime/backends/adapters.py put them on top of every backend, so one piece of
code times them all. Reported per backend:

  * per-stage latency: image encoder, VAE encode (input frame), one UNet call at
    batch 1 and batch 2, VAE decode of one chunk of each decode chunk size;
  * end to end: `sample_focal_stack` in "reference" mode (the literal loop, two
    batch-1 UNet calls per step) and "fast" mode, and fast's speed-up;
  * drift: LPIPS (alex), frame by frame, of its stacks against the torch fp32
    stacks for the same held-out synthetic inputs and seeds;
  * memory: RSS high-water mark of a fresh process that ran only that backend.

Beside them, the loop a user would write from plain diffusers components
(`refocus_edge.bench.inputs.diffusers_baseline`, stock attention) on the bundle's
source model, in its own process too.

    refocus bench --model BUNDLE --out out/backends   (or: python -m benchmarks.backends ...)

Each backend runs in a fresh subprocess (`--no-isolate` runs them in this one):
getrusage's high-water mark never goes down, so only a process that loaded one
backend and nothing else gives that backend's peak. Timings are wall clock on
whatever else the machine is doing; the report records thread counts and the
load average.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import json
import os
import platform
import shlex
import subprocess
import sys
from refocus_edge.runtime.zoo import DEFAULT_MODEL
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# torch and the runtime are imported inside the functions: `refocus` registers this module's
# options at start-up for every verb, and must not pay for importing torch there.

REPO = Path(__file__).resolve().parents[1]
LPIPS_NET = "alex"
REFERENCE = "torch/fp32"  # the run every other run's drift is measured against
BASELINE = "diffusers_baseline"

# name -> what is timed; decode stages ("vae_decode_<chunk>") are added per model.
STAGES = {
    "image_encoder": "CLIP image embedding of the input (224x224 antialiased resize + encoder)",
    "vae_encode": "conditioning latents from the input frame (1-frame VAE encode)",
    "unet_b1": "one UNet call, batch 1 (one guidance branch): the reference loop's call",
    "unet_b2": "one UNet call, batch 2 (both guidance branches): fast mode's call",
}
DECODE_WHAT = "temporal VAE decode of one chunk of {chunk} latent frame(s)"
END_TO_END = {
    "end_to_end_reference": "sample_focal_stack mode=reference: 9-frame encode, 2 batch-1 UNet calls per step",
    "end_to_end_fast": "sample_focal_stack mode=fast: 1-frame encode, 1 batch-2 UNet call per step",
}
BASELINE_WHAT = ("the plain loop a user would write from diffusers components on the source model: "
                 "1-frame encode, 2 batch-1 calls per step, stock attention, decode in chunks")


@dataclass(frozen=True)
class BackendBenchConfig:
    """What to measure. Empty tuples / None mean "the default" (see each field)."""

    bundle: str | Path  # a bundle folder; a model folder or shipped name measures torch only
    backends: tuple[str, ...] = ()  # () = torch + every available backend the bundle has artifacts for
    precisions: tuple[str, ...] = ()  # () = every precision the bundle has (torch is always fp32)
    repeats: int = 3
    warmup: int = 1
    count: int = 2  # held-out stacks for the drift measurement
    positions: tuple[int, ...] = (0, 8)  # input focal positions of the drift measurement
    seed: int = 0  # stack i of the drift measurement uses seed + i, as benchmarks.quality does
    steps: int | None = None  # sampler steps (None: the model's own)
    position: int | None = None  # input position of the latency runs (None: the model's default)
    threads: int | None = None  # torch threads in each run (None: torch's choice)
    isolate: bool = True  # one fresh process per run, for an honest per-backend peak RSS
    baseline: bool = True  # also time the plain diffusers loop on the source model
    progress: bool = True


@dataclass(frozen=True)
class Job:
    """One measured run: a backend at a precision, or the diffusers baseline."""

    kind: str  # "backend" or "baseline"
    backend: str
    precision: str

    @property
    def key(self) -> str:
        return BASELINE if self.kind == "baseline" else f"{self.backend}/{self.precision}"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one run needs, JSON-serialisable so that a subprocess can be handed it."""

    model: str
    is_bundle: bool
    kind: str
    backend: str
    precision: str
    size: tuple[int, int]  # (W, H)
    position: int
    steps: int
    seed: int
    repeats: int
    warmup: int
    threads: int | None
    inputs: str  # .pt file: held-out input frames [count, P, 1, 3, H, W] in [-1, 1]
    positions: tuple[int, ...]
    frames_out: str  # .pt file the run writes its output stacks to
    progress: bool
    bar_total: int  # progress-bar steps: stages + held-out stacks

    @property
    def key(self) -> str:
        return Job(self.kind, self.backend, self.precision).key


@dataclass
class Plan:
    model: Path
    is_bundle: bool
    size: tuple[int, int]
    position: int
    steps: int
    decode_chunks: tuple[int, ...]
    jobs: list[Job]
    skipped: dict[str, str]  # backend -> why it is not measured
    notes: list[str]
    source_model: str | None


# --------------------------------------------------------------------------- planning

def _validate(cfg: BackendBenchConfig, num_frames: int) -> None:
    from refocus_edge.focalstacks.synthetic import SYNTHETIC_SPLITS
    from refocus_edge.runtime.errors import InvalidArgumentError

    if cfg.repeats < 1 or cfg.warmup < 0:
        raise InvalidArgumentError(f"repeats must be >= 1 and warmup >= 0, got {cfg.repeats}, {cfg.warmup}")
    heldout = SYNTHETIC_SPLITS["heldout"].count
    if not 1 <= int(cfg.count) <= heldout:
        raise InvalidArgumentError(f"count must be in 1..{heldout}, got {cfg.count}")
    if not cfg.positions or any(not 0 <= int(k) < num_frames for k in cfg.positions):
        raise InvalidArgumentError(f"positions must be in 0..{num_frames - 1}, got {list(cfg.positions)}")
    if cfg.position is not None and not 0 <= int(cfg.position) < num_frames:
        raise InvalidArgumentError(f"position must be in 0..{num_frames - 1}, got {cfg.position}")
    if cfg.steps is not None and int(cfg.steps) < 1:
        raise InvalidArgumentError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.threads is not None and int(cfg.threads) < 1:
        raise InvalidArgumentError(f"threads must be >= 1, got {cfg.threads}")


def _export_hint(model) -> str:
    return f"refocus export onnx --model {model} --out BUNDLE"


def _bundle_jobs(bundle, cfg: BackendBenchConfig) -> tuple[list[Job], dict[str, str]]:
    """torch/fp32 first (the drift reference), then every asked-for backend x precision the bundle has."""
    from refocus_edge.runtime.backends import get_backend, registry
    from refocus_edge.runtime.backends.base import BackendUnavailableError

    explicit = bool(cfg.backends)
    names = list(dict.fromkeys(cfg.backends)) if explicit else list(registry())
    jobs, skipped = [Job("backend", "torch", "fp32")], {}
    for name in names:
        backend = get_backend(name)  # one-line error for an unknown name
        if backend.artifact == "torch":
            continue  # always measured: it is the reference
        state = backend.availability()
        if not state.available:
            if explicit:  # asked for by name: say so at once rather than after the other runs
                raise BackendUnavailableError(f"backend '{name}' is unavailable here: {state.reason}")
            skipped[name] = state.reason
            continue
        have = backend.precisions(bundle)  # the bundle's tables it supports, and what it derives here
        precs = [p for p in have if not cfg.precisions or p in cfg.precisions]
        if not precs:
            why = (f"the bundle has no {backend.artifact} artifacts it runs here" if not have else
                   f"the bundle's {backend.artifact} precisions are {have}, none of {list(cfg.precisions)}")
            if explicit:
                raise BackendUnavailableError(f"backend '{name}': {why}")
            skipped[name] = why
            continue
        jobs += [Job("backend", name, p) for p in precs]
    return jobs, skipped


def plan_bench(cfg: BackendBenchConfig) -> Plan:
    """Resolve the model, the working size/steps/position and the list of runs (cheap: nothing loaded)."""
    from refocus_edge.bench.models import DEFAULT_SIZE
    from refocus_edge.runtime.backends.backend_torch import source_folder
    from refocus_edge.runtime.bundle import is_bundle, read_bundle
    from refocus_edge.runtime.errors import ModelLoadError
    from refocus_edge.runtime.model_config import load_model_config
    from refocus_edge.runtime.zoo import resolve_model

    root = resolve_model(cfg.bundle)
    if not root.is_dir():
        raise ModelLoadError("no such bundle, model folder or shipped model name", root)
    mcfg = load_model_config(root)
    _validate(cfg, mcfg.num_frames)
    notes: list[str] = []
    if is_bundle(root):
        bundle = read_bundle(root)
        jobs, skipped = _bundle_jobs(bundle, cfg)
        folder = source_folder(bundle)
        source = str(folder) if folder is not None else None
        # The bundle's optimisation target: its graphs may accept nothing else.
        opt = bundle.specs["vae_encoder"].sizes("opt")
        size = (int(opt["width"]), int(opt["height"]))
    else:
        # A model folder has no exported artifacts: torch is the only backend that can run it.
        others = [b for b in cfg.backends if b != "torch"]
        if others:
            raise ModelLoadError(f"is a model folder, not a bundle; backend(s) {', '.join(others)} run "
                                 f"exported bundles: export first: {_export_hint(cfg.bundle)}", root)
        if cfg.precisions and "fp32" not in cfg.precisions:
            raise ModelLoadError(f"is a model folder, not a bundle: only torch fp32 can run it; export "
                                 f"first for {list(cfg.precisions)}: {_export_hint(cfg.bundle)}", root)
        jobs, skipped, source = [Job("backend", "torch", "fp32")], {}, str(root)
        size = tuple(int(v) for v in mcfg.fixed_size) if mcfg.fixed_size is not None else DEFAULT_SIZE
        notes.append(f"{root} is a model folder, not a bundle: only torch was measured; to compare backends, "
                     f"export it first ({_export_hint(cfg.bundle)}) and pass the bundle")
    if cfg.baseline:
        if source is None:
            skipped[BASELINE] = "the bundle's source model is not on this machine"
        else:
            jobs.append(Job("baseline", "torch", "fp32"))
    return Plan(model=root, is_bundle=is_bundle(root), size=size,
                position=mcfg.default_position if cfg.position is None else int(cfg.position),
                steps=mcfg.num_inference_steps if cfg.steps is None else int(cfg.steps),
                decode_chunks=tuple(sorted(set(mcfg.decode_chunk_sizes), reverse=True)),
                jobs=jobs, skipped=skipped, notes=notes, source_model=source)


# --------------------------------------------------------------------------- one run (worker side)

def _current_rss_mib() -> float | None:
    """Resident set size now (Linux /proc); None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def stage_what(decode_chunks) -> dict[str, str]:
    """Stage name -> description, in report order, for a model's decode chunk sizes."""
    what = dict(STAGES)
    what.update({f"vae_decode_{c}": DECODE_WHAT.format(chunk=c) for c in decode_chunks})
    what.update(END_TO_END)
    return what


def stage_callables(refocuser, size, position: int, seed: int, steps: int) -> dict[str, Callable]:
    """name -> zero-argument callable, inputs prepared once, through the PyTorch call signatures only.

    The callables touch `refocuser.unet/.vae/.image_encoder` exactly as the sampler does, so a torch
    module and a backend adapter run the same code."""
    import torch

    from refocus_edge.bench.inputs import stage_inputs
    from refocus_edge.runtime.conditioning import component_dtype, conditioning_latents, image_embedding
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    cfg = refocuser.config
    unet, vae, enc = refocuser.unet, refocuser.vae, refocuser.image_encoder
    inp = stage_inputs(refocuser, size, position, seed, steps)
    image, x1, x2, emb, emb2, ids, t = inp.image, inp.x1, inp.x2, inp.emb, inp.emb2, inp.ids, inp.t
    latents = inp.latents[0] / vae.config.scaling_factor

    def nograd(fn):
        return torch.no_grad()(fn)

    def decode(chunk):
        z = latents[:chunk].to(component_dtype(vae))
        return nograd(lambda: vae.decode(z, num_frames=chunk).sample)

    def sample(mode):
        return lambda: sample_focal_stack(refocuser, image, SamplerConfig(
            position=position, num_inference_steps=steps, seed=seed, mode=mode, progress=False)).frames

    fns = {
        "image_encoder": nograd(lambda: image_embedding(enc, image, refocuser.clip_size, refocuser.clip_mean,
                                                        refocuser.clip_std)),
        "vae_encode": nograd(lambda: conditioning_latents(vae, image, position, cfg.num_frames)),
        "unet_b1": nograd(lambda: unet(x1, t, encoder_hidden_states=emb, added_time_ids=ids).sample),
        "unet_b2": nograd(lambda: unet(x2, t, encoder_hidden_states=emb2, added_time_ids=ids.repeat(2, 1)).sample),
    }
    fns.update({f"vae_decode_{c}": decode(c) for c in sorted(set(cfg.decode_chunk_sizes), reverse=True)})
    fns.update({"end_to_end_reference": sample("reference"), "end_to_end_fast": sample("fast")})
    return fns


def load_for_job(model, job: Job, is_bundle: bool):
    """The refocuser a run measures: the bundle on the job's backend alone, or plain PyTorch modules
    (the baseline, and a model folder)."""
    from refocus_edge.runtime.loading import load_refocuser

    if job.kind == "baseline" or not is_bundle:
        return load_refocuser(model)
    return load_refocuser(model, backend=job.backend, precision=job.precision)


def _backend_env(spec: WorkerSpec) -> dict:
    import torch

    from refocus_edge.runtime.backends import get_backend

    env = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "machine": platform.machine()}
    if spec.kind == "backend":
        env.update(get_backend(spec.backend).availability().versions)
    return env


def _measure_backend(spec: WorkerSpec, refocuser, bar) -> tuple[dict, dict]:
    """Stage and end-to-end timings, then the held-out stacks. -> (result fields, tensors to save)."""
    import torch

    from refocus_edge.bench.timing import timed
    from refocus_edge.runtime.fast_attention import single_token_cross_attention
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    fns = stage_callables(refocuser, spec.size, spec.position, spec.seed, spec.steps)
    stages, outputs = {}, {}
    # Exported graphs (and the torch backend's UNet component) carry the single-token
    # cross-attention shortcut; a plain model folder gets it here so that its numbers
    # compare with a bundle's torch row. No-op for backend adapters.
    with single_token_cross_attention(refocuser.unet):
        for name, fn in fns.items():
            bar.set_postfix_str(name)
            stages[name], out = timed(fn, spec.repeats, spec.warmup)
            outputs[name] = out
            bar.update()
        inputs = torch.load(spec.inputs)
        stacks = torch.zeros((*inputs.shape[:2], refocuser.config.num_frames, *inputs.shape[-3:]))
        for i in range(inputs.shape[0]):
            for r, k in enumerate(spec.positions):
                bar.set_postfix_str(f"held-out stack {i} k={k}")
                cfg = SamplerConfig(position=k, num_inference_steps=spec.steps, seed=spec.seed + i, mode="fast",
                                    progress=False)
                stacks[i, r] = sample_focal_stack(refocuser, inputs[i, r], cfg).frames
                bar.update()
    # A model folder has no dispatch choices: plain torch modules run everything.
    devices = {c.component: c.device for c in refocuser.choices} or {"all": "torch cpu fp32 (model folder)"}
    fields = {"stages": stages, "devices": devices,
              "choices": [dataclasses.asdict(c) for c in refocuser.choices]}
    return fields, {"drift": stacks, "end_to_end_reference": outputs["end_to_end_reference"]}


def _measure_baseline(spec: WorkerSpec, refocuser, bar) -> tuple[dict, dict]:
    from refocus_edge.bench.inputs import bench_image, diffusers_baseline
    from refocus_edge.bench.timing import timed

    image = bench_image(spec.size, spec.seed)
    bar.set_postfix_str(BASELINE)
    stats, out = timed(lambda: diffusers_baseline(refocuser, image, spec.position, spec.seed, spec.steps),
                        spec.repeats, spec.warmup)
    bar.update()
    return {"stages": {BASELINE: stats}, "devices": {"all": "torch cpu (plain diffusers modules)"}}, \
        {"end_to_end_reference": out}


def run_job(spec: WorkerSpec) -> dict:
    """Load one backend (or the baseline), measure it, save its output stacks; never raises for a
    failure of the backend itself: that is reported in the result."""
    import torch
    from tqdm.auto import tqdm

    from refocus_edge.bench.timing import peak_rss_mib

    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    result = {"key": spec.key, "kind": spec.kind, "backend": spec.backend, "precision": spec.precision,
              "status": "ok", "memory": {"rss_before_load_mib": _current_rss_mib()}}
    bar = tqdm(total=spec.bar_total, desc=spec.key, unit="step", disable=not spec.progress, file=sys.stderr)
    try:
        t0 = time.perf_counter()
        refocuser = load_for_job(spec.model, Job(spec.kind, spec.backend, spec.precision), spec.is_bundle)
        result["load_s"] = time.perf_counter() - t0
        result["memory"]["rss_after_load_mib"] = _current_rss_mib()
        measure = _measure_baseline if spec.kind == "baseline" else _measure_backend
        fields, tensors = measure(spec, refocuser, bar)
        result.update(fields)
        torch.save(tensors, spec.frames_out)
    except Exception as exc:  # any failure of this run: report it, let the other runs go on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.update(status="failed", error=f"{type(exc).__name__}: {first}")
    finally:
        bar.close()
    result["memory"]["peak_rss_mib"] = peak_rss_mib()
    result["env"] = _backend_env(spec)
    return result


def _worker_main(spec_path: Path) -> int:
    """Subprocess entry: read the spec, run, write <spec>.result.json next to it."""
    data = json.loads(spec_path.read_text())
    data["size"], data["positions"] = tuple(data["size"]), tuple(data["positions"])
    result = run_job(WorkerSpec(**data))
    spec_path.with_suffix(".result.json").write_text(json.dumps(result, indent=1))
    return 0


# --------------------------------------------------------------------------- running the plan

def _run_isolated(spec: WorkerSpec, workdir: Path, index: int) -> dict:
    """Run one spec in a fresh `python -m refocus_edge.bench.backends --worker` process."""
    spec_path = workdir / f"job{index}.json"
    spec_path.write_text(json.dumps(dataclasses.asdict(spec)))
    env = dict(os.environ)
    # The worker must import this checkout's packages even when they are not installed.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "refocus_edge.bench.backends", "--worker", str(spec_path)],
                          env=env, cwd=str(REPO), stdout=subprocess.DEVNULL)
    result_path = spec_path.with_suffix(".result.json")
    if proc.returncode != 0 or not result_path.is_file():
        # A crash (killed for memory, a segfault in a native runtime) leaves no result behind.
        return {"key": spec.key, "kind": spec.kind, "backend": spec.backend, "precision": spec.precision,
                "status": "failed", "error": f"worker process exited with code {proc.returncode}",
                "memory": {}}
    return json.loads(result_path.read_text())


def _heldout_inputs(plan: Plan, cfg: BackendBenchConfig, path: Path) -> None:
    """Render the held-out stacks once and save their input frames: every run gets identical inputs."""
    import torch

    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

    w, h = plan.size
    data = SyntheticFocalStacks("heldout", size=(h, w), length=int(cfg.count))
    inputs = torch.stack([torch.stack([data[i]["frames"][k:k + 1] * 2 - 1 for k in cfg.positions])
                          for i in range(int(cfg.count))])
    torch.save(inputs, path)  # [count, P, 1, 3, H, W] in [-1, 1]


def _drift(runs: dict, frames: dict[str, Path]) -> tuple[dict, str | None]:
    """key -> per-frame LPIPS of its held-out stacks vs the torch fp32 ones; and why none, if so."""
    import torch

    from refocus_edge.runtime.errors import MissingDependencyError
    from refocus_edge.runtime.metrics.lpips import LPIPS

    if REFERENCE not in frames:
        err = runs.get(REFERENCE, {}).get("error", "not run")
        return {}, f"no {REFERENCE} reference stacks ({err})"
    try:
        lpips = LPIPS(LPIPS_NET)
    except MissingDependencyError as exc:
        return {}, f"LPIPS weights unavailable: {exc}"
    ref = torch.load(frames[REFERENCE])["drift"]  # [count, P, 9, 3, H, W] in [0, 1]
    out = {}
    with torch.no_grad():
        for key, path in frames.items():
            got = torch.load(path).get("drift")
            if got is None:
                continue
            d = torch.stack([torch.stack([lpips(got[i, r] * 2 - 1, ref[i, r] * 2 - 1)
                                          for r in range(ref.shape[1])]) for i in range(ref.shape[0])])
            out[key] = {"per_frame": d.mean(dim=(0, 1)).tolist(), "mean": float(d.mean()), "max": float(d.max()),
                        "per_input": d.tolist(),  # [stack][position][frame]
                        "max_abs_pixel": float((got - ref).abs().max())}
    return out, None


def _end_to_end_diffs(frames: dict[str, Path]) -> dict[str, float]:
    """key -> max |output - torch output| of the reference-mode latency run (same image, same seed)."""
    import torch

    if REFERENCE not in frames:
        return {}
    ref = torch.load(frames[REFERENCE])["end_to_end_reference"]
    return {key: float((torch.load(p)["end_to_end_reference"] - ref).abs().max()) for key, p in frames.items()}


def _speedups(runs: dict) -> None:
    """Add fast/reference, vs torch fast and vs the diffusers baseline, per run (medians)."""
    def median(key, stage):
        run = runs.get(key, {})
        return run.get("stages", {}).get(stage, {}).get("median_s") if run.get("status") == "ok" else None

    torch_fast, base = median(REFERENCE, "end_to_end_fast"), median(BASELINE, BASELINE)
    for key, run in runs.items():
        fast, ref = median(key, "end_to_end_fast"), median(key, "end_to_end_reference")
        if fast is None or ref is None:
            continue
        run["speedup"] = {"fast_vs_reference": ref / fast,
                          "fast_vs_torch_fast": torch_fast / fast if torch_fast else None,
                          "fast_vs_diffusers_baseline": base / fast if base else None}


def run_backend_bench(cfg: BackendBenchConfig) -> dict:
    """Measure every planned run (see the module docstring); -> the results dict (JSON-ready)."""
    plan = plan_bench(cfg)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    runs, frames = {}, {}
    with tempfile.TemporaryDirectory(prefix="refocus-bench-") as tmp:
        workdir = Path(tmp)
        _heldout_inputs(plan, cfg, workdir / "inputs.pt")
        for index, job in enumerate(plan.jobs):
            spec = WorkerSpec(
                model=str(plan.model if job.kind == "backend" else plan.source_model), is_bundle=plan.is_bundle,
                kind=job.kind, backend=job.backend, precision=job.precision, size=plan.size,
                position=plan.position, steps=plan.steps, seed=int(cfg.seed), repeats=int(cfg.repeats),
                warmup=int(cfg.warmup), threads=cfg.threads, inputs=str(workdir / "inputs.pt"),
                positions=tuple(int(k) for k in cfg.positions), frames_out=str(workdir / f"job{index}.pt"),
                progress=cfg.progress, bar_total=1 if job.kind == "baseline" else
                len(stage_what(plan.decode_chunks)) + int(cfg.count) * len(cfg.positions))
            if cfg.progress:
                where = "fresh process" if cfg.isolate else "this process"
                print(f"[{index + 1}/{len(plan.jobs)}] {job.key} ({where})", file=sys.stderr, flush=True)
            runs[job.key] = _run_isolated(spec, workdir, index) if cfg.isolate else run_job(spec)
            if runs[job.key]["status"] == "ok":
                frames[job.key] = Path(spec.frames_out)
        drift, drift_missing = _drift(runs, frames)
        diffs = _end_to_end_diffs(frames)
    for key, run in runs.items():
        if key in drift:
            run["drift"] = drift[key]
        if key in diffs:
            run["max_abs_diff_vs_torch_reference_mode"] = diffs[key]
    _speedups(runs)
    return {
        "benchmark": "backends",
        "model_path": str(plan.model),
        "is_bundle": plan.is_bundle,
        "source_model": plan.source_model,
        "size": list(plan.size),
        "position": plan.position,
        "steps": plan.steps,
        "seed": int(cfg.seed),
        "repeats": int(cfg.repeats),
        "warmup": int(cfg.warmup),
        "unet_calls": {"end_to_end_reference": 2 * plan.steps, "end_to_end_fast": plan.steps,
                       BASELINE: 2 * plan.steps},
        "stages": stage_what(plan.decode_chunks) | {BASELINE: BASELINE_WHAT},
        "drift_setup": {"reference": REFERENCE, "mode": "fast", "lpips_net": LPIPS_NET, "count": int(cfg.count),
                        "positions": [int(k) for k in cfg.positions], "split": "heldout",
                        "seeds": f"seed + stack index ({cfg.seed}..{cfg.seed + int(cfg.count) - 1})",
                        "missing": drift_missing},
        "runs": runs,
        "skipped": plan.skipped,
        "notes": plan.notes,
        "isolated": bool(cfg.isolate),
        "peak_rss_note": ("RSS high-water mark (getrusage) of a fresh process that imported the runtime, "
                          "loaded only this run's model and ran only its measurements" if cfg.isolate else
                          "process-wide RSS high-water mark of the one process that ran every backend in "
                          "turn: each figure includes everything loaded before it, so it is not per backend"),
        "wall_time_s": time.perf_counter() - start,
        "env": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_1min_start": load_start,
                "load_avg_1min_end": os.getloadavg()[0]},
    }


# --------------------------------------------------------------------------- report

def _fmt(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _lp(v: float) -> str:
    """LPIPS to 4 decimals, or in scientific notation when that would print 0.0000 for a non-zero drift."""
    return f"{v:.4f}" if v == 0 or v >= 1e-3 else f"{v:.1e}"


def _mib(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def _ok_runs(res: dict) -> dict:
    return {k: r for k, r in res["runs"].items() if r.get("status") == "ok"}


def _latency_table(res: dict) -> list[str]:
    runs = {k: r for k, r in _ok_runs(res).items() if k != BASELINE}
    keys = list(runs)
    lines = ["| stage | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for stage in res["stages"]:
        if stage == BASELINE:
            continue
        cells = [_fmt(runs[k]["stages"].get(stage, {}).get("median_s")) for k in keys]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for name, label in (("fast_vs_reference", "fast / reference"), ("fast_vs_torch_fast", "fast vs torch fast"),
                        ("fast_vs_diffusers_baseline", "fast vs diffusers baseline")):
        cells = []
        for k in keys:
            v = runs[k].get("speedup", {}).get(name)
            cells.append("-" if v is None else f"{v:.2f}x")
        lines.append(f"| speed-up: {label} | " + " | ".join(cells) + " |")
    return lines


def _drift_table(res: dict) -> list[str]:
    rows = [(k, r["drift"]) for k, r in res["runs"].items() if "drift" in r]
    if not rows:
        return [f"No drift measured: {res['drift_setup'].get('missing') or 'no run produced stacks'}."]
    n = len(rows[0][1]["per_frame"])
    lines = ["| run | " + " | ".join(f"F{j + 1}" for j in range(n)) + " | mean | max | max abs pixel |",
             "|---" * (n + 4) + "|"]
    for key, d in rows:
        lines.append(f"| {key} | " + " | ".join(_lp(v) for v in d["per_frame"])
                     + f" | {_lp(d['mean'])} | {_lp(d['max'])} | {d['max_abs_pixel']:.2e} |")
    return lines


def _memory_table(res: dict) -> list[str]:
    lines = ["| run | load | before load (MiB) | after load (MiB) | peak (MiB) | runs on |", "|---|---|---|---|---|---|"]
    for key, r in res["runs"].items():
        m = r.get("memory", {})
        devices = sorted(set(r.get("devices", {}).values())) or ["-"]
        lines.append(f"| {key} | {_fmt(r.get('load_s'))} | {_mib(m.get('rss_before_load_mib'))} | "
                     f"{_mib(m.get('rss_after_load_mib'))} | {_mib(m.get('peak_rss_mib'))} | {', '.join(devices)} |")
    return lines


def _markdown(res: dict) -> str:
    w, h = res["size"]
    env, ds = res["env"], res["drift_setup"]
    lines = [
        f"# Backends: {Path(res['model_path']).name}", "",
        f"- command: `{res.get('command', 'run_backend_bench(...)')}`",
        f"- model: `{res['model_path']}` ({'bundle' if res['is_bundle'] else 'model folder'}), source model "
        f"`{res['source_model']}`; {w}x{h}, input position {res['position']}, {res['steps']} steps, seed {res['seed']}",
        f"- {res['repeats']} timed runs after {res['warmup']} warm-up, medians; {env['cpus']} CPUs, "
        f"OMP_NUM_THREADS={env['omp_num_threads']}, load average {env['load_avg_1min_start']:.2f} at start / "
        f"{env['load_avg_1min_end']:.2f} at end (other processes skew timings); wall time "
        f"{res['wall_time_s']:.0f} s",
        "- every backend is loaded by name (no auto dispatch) and timed through the same PyTorch call "
        "signatures; every backend's UNet carries the single-token cross-attention shortcut (exported graphs "
        "have it built in), so the stock-attention cost is the diffusers baseline's",
    ]
    lines += [f"- note: {n}" for n in res["notes"]]
    lines += ["", "## Latency (median)", ""] + _latency_table(res)
    base = res["runs"].get(BASELINE)
    calls = res["unet_calls"]
    lines += ["", f"UNet calls per stack: reference {calls['end_to_end_reference']} (batch 1), fast "
              f"{calls['end_to_end_fast']} (batch 2)."]
    if base and base.get("status") == "ok":
        s = base["stages"][BASELINE]
        lines.append(f"Diffusers baseline ({BASELINE_WHAT}): {_fmt(s['median_s'])} median "
                     f"({_fmt(s['min_s'])}..{_fmt(s['max_s'])}), {calls[BASELINE]} UNet calls.")
    diffs = {k: r["max_abs_diff_vs_torch_reference_mode"] for k, r in res["runs"].items()
             if "max_abs_diff_vs_torch_reference_mode" in r}
    if diffs:
        lines.append("Max |output - torch output|, reference-mode latency run, same image and seed: "
                     + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + ".")
    lines += ["", "Chart: `backends_latency.png` (bars scaled per stage).", "",
              "## Drift vs torch fp32 (LPIPS, lower is better)", "",
              f"Fast-mode stacks of {ds['count']} held-out synthetic stacks x input positions {ds['positions']} "
              f"(seeds {ds['seeds']}), LPIPS-{ds['lpips_net']} per output frame against the {ds['reference']} "
              "stacks of the same inputs and seeds; mean over inputs. The torch row is the reference itself (0 by "
              "construction).", ""]
    lines += _drift_table(res) + ["", "Chart: `backends_drift.png`.", "", "## Memory and load", "",
                                  "Before load: Python and torch imported, nothing loaded. "
                                  f"Peak = {res['peak_rss_note']}.", ""]
    lines += _memory_table(res)
    failed = {k: r["error"] for k, r in res["runs"].items() if r.get("status") != "ok"}
    if failed or res["skipped"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- {k}: failed: {e}" for k, e in failed.items()]
        lines += [f"- {k}: skipped: {why}" for k, why in res["skipped"].items()]
    return "\n".join(lines) + "\n"


# Chart colours per run, in run order (tab10-like).
_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _latency_series(res: dict) -> tuple[list[str], list[str], dict]:
    """(stages, run keys, {(stage, key): median_s}) for the latency chart.

    The diffusers baseline is a whole focal stack: it is drawn in both end-to-end groups, on their scale."""
    runs = _ok_runs(res)
    keys = [k for k in runs if k != BASELINE]
    stages = [s for s in res["stages"] if s != BASELINE]
    values = {(s, k): runs[k]["stages"][s]["median_s"] for s in stages for k in keys if s in runs[k]["stages"]}
    if BASELINE in runs:
        keys.append(BASELINE)
        for stage in END_TO_END:
            values[(stage, BASELINE)] = runs[BASELINE]["stages"][BASELINE]["median_s"]
    return stages, keys, values


def _drift_series(res: dict) -> dict[str, list[float]]:
    return {k: r["drift"]["per_frame"] for k, r in res["runs"].items() if "drift" in r}


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _mpl_to_pil(fig):
    from PIL import Image
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _latency_chart_mpl(res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages, keys, values = _latency_series(res)
    fig, axes = plt.subplots(len(stages), 1, figsize=(8, 1.0 + 0.35 * len(keys) * len(stages)), squeeze=False)
    for ax, stage in zip(axes[:, 0], stages):
        names = [k for k in keys if (stage, k) in values]
        ax.barh(names, [values[(stage, k)] * 1000 for k in names],
                color=[tuple(c / 255 for c in _COLORS[keys.index(k) % len(_COLORS)]) for k in names])
        ax.set_title(stage, fontsize=9, loc="left")
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        ax.set_xlabel("median ms", fontsize=8)
    fig.tight_layout()
    return _mpl_to_pil(fig)


def _drift_chart_mpl(res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (key, values) in enumerate(_drift_series(res).items()):
        ax.plot(range(1, len(values) + 1), values, marker="o", label=key,
                color=tuple(c / 255 for c in _COLORS[i % len(_COLORS)]))
    ax.set_xlabel("output frame (near to far)")
    ax.set_ylabel(f"LPIPS-{LPIPS_NET} vs {REFERENCE}")
    ax.set_title("per-frame drift, mean over held-out inputs")
    ax.legend(fontsize=8)
    return _mpl_to_pil(fig)


def _latency_chart_pil(res: dict):
    """Horizontal bars: one group per stage, one bar per run, each group scaled to its own maximum
    (stages differ by orders of magnitude; what matters is backends against each other)."""
    from PIL import Image, ImageDraw

    stages, keys, values = _latency_series(res)
    label_w, bar_w, row, pad = 170, 420, 16, 6
    height = 28 + sum(20 + row * sum((s, k) in values for k in keys) for s in stages) + pad
    img = Image.new("RGB", (label_w + bar_w + 100, height), "white")
    draw = ImageDraw.Draw(img)
    w, h = res["size"]
    draw.text((4, 4), f"{Path(res['model_path']).name} {w}x{h} {res['steps']} steps: median latency per stage "
                      "(bars scaled per stage)", fill="black")
    y = 28
    for stage in stages:
        names = [k for k in keys if (stage, k) in values]
        draw.text((4, y + 4), stage, fill="black")
        y += 20
        top = max(values[(stage, k)] for k in names) or 1.0
        for k in names:
            v = values[(stage, k)]
            draw.text((14, y + 2), k, fill=(60, 60, 60))
            draw.rectangle([label_w, y + 2, label_w + max(int(bar_w * v / top), 1), y + row - 2],
                           fill=_COLORS[keys.index(k) % len(_COLORS)])
            draw.text((label_w + int(bar_w * v / top) + 6, y + 2), _fmt(v), fill="black")
            y += row
    return img


def _drift_chart_pil(res: dict):
    """Lines of per-frame LPIPS drift, one per run, with axes, ticks and a legend."""
    from PIL import Image, ImageDraw

    series = _drift_series(res)
    left, top, plot_w, plot_h = 70, 30, 460, 260
    img = Image.new("RGB", (left + plot_w + 190, top + plot_h + 50), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 6), f"per-frame drift: LPIPS-{LPIPS_NET} vs {REFERENCE}, mean over held-out inputs", fill="black")
    n = max((len(v) for v in series.values()), default=9)
    ymax = max((max(v) for v in series.values() if v), default=0.0)
    ymax = ymax * 1.1 if ymax > 0 else 1e-3  # an all-zero chart still needs a scale
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")

    def xy(j, v):
        return left + int(plot_w * j / max(n - 1, 1)), top + plot_h - int(plot_h * v / ymax)

    for i in range(5):  # y ticks
        v = ymax * i / 4
        _, y = xy(0, v)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"{v:.2e}", fill="black")
    for j in range(n):  # x ticks: frames F1..F9
        x, _ = xy(j, 0)
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill="black")
        draw.text((x - 6, top + plot_h + 8), f"F{j + 1}", fill="black")
    draw.text((left + plot_w // 2 - 60, top + plot_h + 26), "output frame (near to far)", fill="black")
    for i, (key, values) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        points = [xy(j, v) for j, v in enumerate(values)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        ly = top + 6 + 18 * i  # legend
        draw.rectangle([left + plot_w + 12, ly + 2, left + plot_w + 26, ly + 12], fill=color)
        draw.text((left + plot_w + 32, ly), key, fill="black")
    if not series:
        draw.text((left + 20, top + plot_h // 2), "no drift measured", fill="black")
    return img


def write_backend_report(result: dict, out_dir) -> dict:
    """Write backends.json, backends.md, backends_latency.png and backends_drift.png; returns their paths."""
    from refocus_edge.bench.report import write_report

    mpl = _has_matplotlib()
    latency = _latency_chart_mpl(result) if mpl else _latency_chart_pil(result)
    drift = _drift_chart_mpl(result) if mpl else _drift_chart_pil(result)
    paths = write_report(out_dir, ("backends", "backends", "backends_latency"), result, _markdown(result), latency)
    paths["drift_figure"] = Path(out_dir) / "backends_drift.png"
    drift.save(paths["drift_figure"])
    return paths


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `python -m benchmarks.backends` and `refocus bench`."""
    parser.add_argument("--backend", nargs="+", default=None, metavar="NAME",
                        help="backends to measure (default: torch + every available one the bundle has "
                             "artifacts for); torch fp32 always runs, as the drift reference")
    parser.add_argument("--precision", nargs="+", default=None, choices=["fp32", "fp16", "bf16", "int8", "fp8", "any"],
                        help="artifact precisions (default: every one the bundle has, and those a backend "
                             "derives here, e.g. openvino bf16; torch is fp32); with --against-reference, "
                             "any: dispatch picks the fastest gated precision per component, also for a "
                             "quantized bundle")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    parser.add_argument("--count", type=int, default=2, help="held-out stacks for the drift (default 2)")
    parser.add_argument("--positions", type=int, nargs="+", default=[0, 8],
                        help="input focal positions of the drift runs (default 0 8)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed; drift stack i uses seed + i (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's own)")
    parser.add_argument("--position", type=int, default=None,
                        help="input focal position of the latency runs (default: the model's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="run every backend in this process (faster start; peak RSS then not per backend)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain diffusers loop")


def config_from_args(args, model) -> BackendBenchConfig:
    if "any" in (args.precision or ()):
        from refocus_edge.runtime.errors import InvalidArgumentError

        raise InvalidArgumentError("--precision any lets dispatch choose, which only --against-reference does; "
                                   "the backend matrix measures the precisions it is given (leave --precision "
                                   "out for every one the bundle has)")
    return BackendBenchConfig(
        bundle=model, backends=tuple(args.backend or ()), precisions=tuple(args.precision or ()),
        repeats=args.repeats, warmup=args.warmup, count=args.count, positions=tuple(args.positions),
        seed=args.seed, steps=args.steps, position=args.position, threads=args.threads,
        isolate=not args.no_isolate, baseline=not args.no_baseline, progress=True)


def command_line(cfg: BackendBenchConfig, prog: str, out) -> str:
    """The command that reruns `cfg` (for the report), defaults left out."""
    args = ["--model", str(cfg.bundle)] if cfg.bundle is not None else []
    args += ["--out", str(out)]
    if cfg.backends:
        args += ["--backend", *cfg.backends]
    if cfg.precisions:
        args += ["--precision", *cfg.precisions]
    args += ["--repeats", str(cfg.repeats), "--warmup", str(cfg.warmup), "--count", str(cfg.count),
             "--positions", *map(str, cfg.positions), "--seed", str(cfg.seed)]
    for flag, value in (("--steps", cfg.steps), ("--position", cfg.position), ("--threads", cfg.threads)):
        if value is not None:
            args += [flag, str(value)]
    args += (["--no-isolate"] if not cfg.isolate else []) + (["--no-baseline"] if not cfg.baseline else [])
    return f"{prog} " + shlex.join(args)


def summary_lines(result: dict) -> list[str]:
    """A few lines for the terminal: end to end and drift per run."""
    lines = []
    for key, r in result["runs"].items():
        if r.get("status") != "ok":
            lines.append(f"{key:22s} failed: {r['error']}")
            continue
        st = r["stages"]
        if key == BASELINE:
            lines.append(f"{key:22s} {_fmt(st[BASELINE]['median_s']):>10s} end to end")
            continue
        drift = r.get("drift", {}).get("mean")
        lines.append(f"{key:22s} fast {_fmt(st['end_to_end_fast']['median_s']):>10s}  reference "
                     f"{_fmt(st['end_to_end_reference']['median_s']):>10s}  "
                     f"drift {'-' if drift is None else f'{drift:.4f}'}  peak {_mib(r['memory'].get('peak_rss_mib'))} MiB")
    lines += [f"{k:22s} skipped: {why}" for k, why in result["skipped"].items()]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, metavar="BUNDLE",
                        help="bundle folder (a model folder or shipped name measures torch only; default: "
                             f"$REFOCUS_MODEL or {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, default=Path("out/backends"))
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one run
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return _worker_main(args.worker)
    from refocus_edge.runtime.errors import RefocusError

    cfg = config_from_args(args, args.model)
    try:
        result = run_backend_bench(cfg)
    except RefocusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = command_line(cfg, "python -m benchmarks.backends", args.out)
    paths = write_backend_report(result, args.out)
    print("\n".join(summary_lines(result)))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
