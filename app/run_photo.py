"""`refocus run` as a library call: photo in, focal stack folder out.

Order matters for the user: every check that can fail cheaply (position, output
folder, photo, model) runs before the expensive sampling, and nothing is
written until the whole stack exists (refocus_edge.app.outputs stages and publishes).
After sampling, the stack's depth-of-field views (all-in-focus image, depth map,
the viewer's precomputed re-renders: refocus_edge.dof.stack_views) are computed
unless the config turns them off; they are published with the frames, in one go.

A bundle in mode fast samples on the thin runtime (refocus_edge.runtime.run_model): no
torch import for the stack. The depth-of-field views are computed with torch; where
it is not installed they are skipped with a one-line note (in the log and run.json)
and the folder holds the frames, the sweep GIF, the stack viewer and run.json.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from refocus_edge.dof.stack_views import StackViewsConfig
from refocus_edge.runtime.errors import InvalidArgumentError
from refocus_edge.runtime.low_memory import low_memory_mode

PHOTO_DECODE_SIDE = 2048
# --steps above this and above 10x the model's own needs --force (a typo should not start a 5-hour run).
STEPS_WITHOUT_ASKING = 100


@dataclass(frozen=True)
class RunConfig:
    image: Path
    out_dir: Path
    model: str | None = None  # shipped name or folder; None: the default model
    unet: Path | None = None  # UNet folder overriding the model's (released layout)
    position: int | None = None
    steps: int | None = None
    seed: int = 0
    mode: str = "fast"
    force: bool = False
    progress: bool = True
    backend: str | None = None  # auto|torch|onnxruntime|tensorrt|coreml; None: $REFOCUS_BACKEND or auto
    precision: str | None = None  # bundles only: fp32|fp16; None: any that passed its gate
    low_memory: bool = False  # one component resident at a time (8 GB boards, phones)
    wait: bool = False  # another process writing out_dir: wait for it (default: fail at once)
    decoder: str | None = None  # full | tiny | auto (None: full for a model folder, a bundle's own)
    # All-in-focus image, depth map and viewer re-renders; None skips them (`--no-dof`).
    dof_views: StackViewsConfig | None = field(default_factory=StackViewsConfig)


@dataclass
class RunReport:
    out_dir: Path
    files: list[Path]
    model: str
    size: tuple[int, int]
    position: int
    position_was_default: bool
    steps: int
    guidance: float
    unet_calls: int
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def refocus_photo(cfg: RunConfig, log: Callable[[str], None] = lambda _msg: None) -> RunReport:
    from refocus_edge.app.outputs import check_output_dir

    if cfg.position is not None and not 0 <= cfg.position <= 8:
        raise InvalidArgumentError(f"--position {cfg.position} is outside 0..8 "
                                   "(0 = focused near, 8 = focused far)")
    if cfg.steps is not None and cfg.steps < 1:
        raise InvalidArgumentError(f"--steps must be >= 1, got {cfg.steps}")
    if cfg.mode not in ("fast", "reference"):
        raise InvalidArgumentError(f"--mode must be fast or reference, got {cfg.mode!r}")
    if cfg.dof_views is not None and not isinstance(cfg.dof_views, StackViewsConfig):
        raise InvalidArgumentError(f"dof_views must be a StackViewsConfig or None, got {type(cfg.dof_views).__name__}")
    from refocus_edge.runtime.publish import check_writable, output_lock, recover

    check_writable(cfg.out_dir)
    # One writer per output folder, from before the first second of work to the last file.
    with output_lock(cfg.out_dir, wait=cfg.wait):
        for done in recover(cfg.out_dir):
            log(f"recovered {cfg.out_dir}: {done}")
        check_output_dir(cfg.out_dir, cfg.force)
        return _refocus_locked(cfg, log)


def _refocus_locked(cfg: RunConfig, log: Callable[[str], None]) -> RunReport:
    from refocus_edge.app.outputs import result_bytes_estimate, write_stack
    from refocus_edge.runtime.run_model import load_run_model
    from refocus_edge.runtime.image_io import load_photo
    from refocus_edge.runtime.publish import check_free_space
    from refocus_edge.runtime.resize import fit_photo
    from refocus_edge.runtime.sampler_config import SamplerConfig

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # The photo is read first: a bad photo should fail before seconds of model loading.
    # 2048 px is above every working size, so huge photos are decoded reduced.
    photo = load_photo(cfg.image, max_side_hint=PHOTO_DECODE_SIDE)
    timings["load_photo"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_run_model(cfg.model, cfg.unet, cfg.mode, cfg.backend, cfg.precision, cfg.low_memory,
                           cfg.decoder)
    refocuser = model.refocuser
    timings["load_model"] = time.perf_counter() - t0
    own = refocuser.config.num_inference_steps
    if cfg.steps is not None and cfg.steps > max(STEPS_WITHOUT_ASKING, 10 * own) and not cfg.force:
        # Said before the run, not discovered hours into it.
        raise InvalidArgumentError(f"--steps {cfg.steps} is {cfg.steps / own:.0f}x this model's own {own} steps "
                                   f"(about {cfg.steps / own:.0f}x its usual time); pass --force to run it anyway")
    rgb, resize_note = fit_photo(photo.rgb, refocuser.config.resolution_policy)
    check_free_space(cfg.out_dir, result_bytes_estimate(*rgb.shape[:2][::-1]))  # before the sampling, not after
    notes = list(photo.notes) + [resize_note] + list(refocuser.notes)
    position = refocuser.config.default_position if cfg.position is None else cfg.position
    h, w = rgb.shape[:2]
    if refocuser.choices:  # a bundle (in low-memory mode the choices arrive stage by stage)
        log(f"model     {refocuser.source} (bundle, {model.runtime} runtime)")
        for c in refocuser.choices:
            log(f"backend   {c.component:14s} {c.backend} [{c.device}]: {c.reason}")
    elif low_memory_mode(refocuser):
        log(f"model     {refocuser.source} (low-memory mode: each component loads for its stage only)")
    else:
        params = sum(p.numel() for p in refocuser.unet.parameters()) / 1e6
        log(f"model     {refocuser.source} ({params:.1f} M UNet parameters)")
        log("backend   torch (a model folder runs on PyTorch; `refocus export onnx` makes a bundle "
            "for the other backends)")
    # The model's own notes (which decoder, why a bundle serves its export size, ...), except the backend
    # choices just logged line by line.
    shown = {c.note for c in refocuser.choices or ()}
    for note in refocuser.notes:
        if note not in shown:
            log(f"note      {note}")
    log(f"input     {cfg.image} ({photo.source_size[0]}x{photo.source_size[1]}) -> {w}x{h}: {resize_note}")
    for note in photo.notes:
        log(f"          {note}")
    if cfg.position is None:
        log(f"position  {position} (default: --position not given; 0 = focused near, 8 = focused far)")
    else:
        log(f"position  {position}")

    result = model.sample(rgb, SamplerConfig(position=position, num_inference_steps=cfg.steps, seed=cfg.seed,
                                             mode=cfg.mode, progress=cfg.progress))
    timings.update(result.timings)
    for note in result.notes:  # e.g. generated at the model's learnt scale and brought back to w x h
        notes.append(note)
        log(f"note      {note}")
    # Weight 0 means no unconditional branch (the reference guides whenever the weight is > 0).
    guidance = (f"guidance {result.guidance_scale}" if result.guidance_scale > 0
                else "no guidance (distilled in)")
    log(f"sampler   {cfg.mode}, {model.runtime} runtime: {result.num_inference_steps} Euler steps, {guidance}, "
        f"{result.unet_calls} UNet calls, noise {result.noise}")

    frames = (result.frames.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    views = None
    if cfg.dof_views is not None:
        from refocus_edge.dof.stack_views import stack_views

        t0 = time.perf_counter()
        try:
            views = stack_views(frames, cfg.dof_views)
        except ImportError as exc:  # the thin runtime without torch: the views are torch code
            note = (f"depth-of-field views skipped: they are computed with PyTorch ({exc.name or exc} is not "
                    f"installed here); the stack, sweep and viewer are written without them; `refocus edit "
                    f"{cfg.out_dir} --focus {position}` makes them where torch is installed")
            notes.append(note)
            log(f"note      {note}")
        except Exception as exc:  # noqa: BLE001 - the sampled stack is the expensive result: keep it
            # The views are derived from the frames and can be remade from the written folder
            # (`refocus edit`), so a failure here costs the views, never the stack.
            note = (f"depth-of-field views skipped ({type(exc).__name__}: {exc}); the stack is written "
                    f"without them; `refocus edit {cfg.out_dir} --focus {position}` makes them from the folder")
            notes.append(note)
            log(f"warning   {note}")
        timings["dof"] = time.perf_counter() - t0
    if views is not None:
        views.record["timings_s"] = {k: round(v, 4) for k, v in views.timings.items()}
        pw, ph = views.outputs.previews.size
        log(f"dof       all-in-focus, depth from focus ({views.record['depth_source']}, index "
            f"{views.record['depth_range'][0]:.2f}..{views.record['depth_range'][1]:.2f}), viewer "
            f"{len(views.outputs.previews.focus)} focus x {len(views.outputs.previews.strengths)} strengths "
            f"at {pw}x{ph}: " + ", ".join(f"{k} {v:.2f}s" for k, v in views.timings.items()))
    metadata = {
        "input": str(cfg.image), "model": str(refocuser.source), "position": position,
        "size": [w, h], "steps": result.num_inference_steps, "guidance": result.guidance_scale,
        "seed": cfg.seed, "mode": cfg.mode, "unet_calls": result.unet_calls,
        "runtime": model.runtime, "noise": result.noise, "decoder": refocuser.config.decoder,
        "sigmas": result.sigmas, "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "notes": notes,
        "backends": ({c.component: {"backend": c.backend, "precision": c.precision, "device": c.device,
                                    "reason": c.reason} for c in refocuser.choices}
                     or {"all": {"backend": "torch", "precision": "fp32", "device": "torch cpu",
                                 "reason": "model folder"}}),
    }
    if views is not None:
        metadata["dof"] = views.record
    t0 = time.perf_counter()
    files = write_stack(cfg.out_dir, frames, icc_profile=photo.icc_profile, input_position=position,
                        metadata=metadata, force=cfg.force, dof=views.outputs if views is not None else None)
    timings["write"] = time.perf_counter() - t0
    stages = ("image_encoder", "vae_encode", "unet_total", "vae_decode")
    stages += ("dof", "write") if "dof" in timings else ("write",)
    log("time      " + ", ".join(f"{k} {timings[k]:.2f}s" for k in stages)
        + f"; total {sum(timings[k] for k in stages) + timings['load_model'] + timings['load_photo']:.2f}s")
    log(f"wrote     {written_line(cfg.out_dir, files)}")
    return RunReport(out_dir=cfg.out_dir, files=files, model=str(refocuser.source), size=(w, h),
                     position=position, position_was_default=cfg.position is None,
                     steps=result.num_inference_steps, guidance=result.guidance_scale,
                     unet_calls=result.unet_calls, timings=timings, notes=notes)


def written_line(out_dir, files) -> str:
    """`out/frame_0.png .. frame_8.png, a, b, ...`: every file written, the frames run shortened."""
    names = [Path(f).name for f in files]
    frames = [n for n in names if n.startswith("frame_") and n.endswith(".png")]
    rest = [n for n in names if n not in frames]
    head = [f"{frames[0]} .. {frames[-1]}"] if len(frames) > 2 else frames
    return f"{out_dir}/" + ", ".join(head + rest)
