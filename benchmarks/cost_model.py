"""Cost model (issue 21 item 5): FLOPs of every component as a function of the working size.

Latency at 1024x576 on the released architecture takes hours on this CPU; FLOPs do not. For
each component the spec describes (runtime/components.py: image encoder, VAE encoder, UNet,
decoder chunks), one forward at the spec's input shapes is counted by
torch.utils.flop_counter.FlopCounterMode under FakeTensorMode (no arithmetic is done and no
weights are initialised: the modules are built on the meta device and given uninitialised
storage). Counted: matrix multiplies and convolutions, 2 FLOPs per multiply-add; elementwise
work (norms, activations, softmax) is not, so the numbers are a lower bound that tracks the
compute-bound part of the time.

Each component's count is fitted, exactly, by f(P) = a + b P + c P^2 in the pixel count P over
three working sizes (convolutions grow with P, spatial self-attention with P^2), then checked at
a fourth size it was not fitted on. The report gives per-call and per-stack FLOPs for the
reference sampler (25 guided steps: 50 batch-1 UNet calls), a 4-step and a 1-step student,
and the decoder's share of each stack: how the ratio moves with the size.

Models: the released learn2refocus architecture (diffusers' default SVD UNet, the SVD temporal
VAE, CLIP ViT-H/14; random weights, as in benchmarks/full_size_speedup.py) and the shipped
refocus-tiny.

    python -m benchmarks.cost_model --out benchmarks/results/cost-model
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

FIT_SIZES = ((256, 256), (512, 320), (512, 512))  # (W, H)
CHECK_SIZE = (1024, 576)
REPORT_SIZES = ((256, 256), (512, 320), (512, 512), (1024, 576))
STACKS = {"reference (25 guided steps)": 50, "4-step student": 4, "1-step student": 1}
TINY = "tiny_decoder_stack"  # the tiny decoder over a whole stack, one chunk
TINY_STACK = "1-step student, tiny decoder"


def meta_full_size_refocuser(scheduler_folder: Path):
    """The released architecture with uninitialised weights: built on the meta device (no init
    arithmetic), then given empty CPU storage (pages are never touched under FakeTensorMode)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from benchmarks.full_size_speedup import CLIP_VIT_H, SVD_VAE
    from refocus_edge.runtime.model_config import RefocusModelConfig
    from refocus_edge.runtime.refocuser import Refocuser

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VIT_H))
    return Refocuser(unet=unet.to_empty(device="cpu").eval(), vae=vae.to_empty(device="cpu").eval(),
                     image_encoder=encoder.to_empty(device="cpu").eval(),
                     scheduler=EulerDiscreteScheduler.from_pretrained(scheduler_folder),
                     config=RefocusModelConfig(), source=Path("released architecture, random weights"))


def _call_sizes(spec) -> dict[str, int]:
    """The spec's opt sizes with one image / one guidance branch per call."""
    sizes = spec.sizes("opt")
    for axis in ("batch", "frames"):
        if axis in sizes:
            sizes[axis] = 1
    return sizes


def _fake_flops(module, shapes) -> float:
    """FLOPs of one forward of `module` on empty inputs of `shapes`, under FakeTensorMode (no memory,
    no arithmetic: the released model's counts take seconds)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        inputs = [torch.empty(s) for s in shapes]
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(*inputs)
    return float(counter.get_total_flops())


def component_flops(refocuser, size: tuple[int, int]) -> dict[str, float]:
    """FLOPs of one call of every component at working size `size` (W, H): UNet per batch-1 call,
    VAE encoder per frame, each decoder chunk per call."""
    from refocus_edge.runtime.component_modules import component_module
    from refocus_edge.runtime.components import ModelDims, component_specs

    specs = component_specs(ModelDims.of(refocuser, resolutions=(size,)))
    return {name: _fake_flops(component_module(refocuser, spec), [t.shape(_call_sizes(spec)) for t in spec.inputs])
            for name, spec in specs.items()}


def tiny_decoder_flops(refocuser, size: tuple[int, int]) -> float:
    """FLOPs of the tiny temporal decoder (runtime/tiny_decoder.py, default architecture, built for this
    model's latent channels and VAE factor) decoding one whole stack in one chunk at `size` (W, H)."""
    from refocus_edge.runtime.tiny_decoder import TinyTemporalDecoder

    f, frames = refocuser.vae_scale_factor, refocuser.config.num_frames
    tiny = TinyTemporalDecoder(latent_channels=refocuser.latent_channels, num_frames=frames,
                               shuffle=f // 4).eval()  # default channels: 2 upsamplings, then the sub-pixel f/4
    return _fake_flops(tiny, [(frames, refocuser.latent_channels, size[1] // f, size[0] // f)])


def fit_quadratic(pixels: list[float], flops: list[float]) -> tuple[float, float, float]:
    """(a, b, c) of a + b P + c P^2 through three points, exactly."""
    a = np.vander(np.asarray(pixels, dtype=np.float64), 3, increasing=True)
    return tuple(float(v) for v in np.linalg.solve(a, np.asarray(flops, dtype=np.float64)))


def evaluate(coef, pixels: float) -> float:
    a, b, c = coef
    return a + b * pixels + c * pixels ** 2


def stack_flops(per_call: dict[str, float], unet_calls: int, frames: int, chunks: tuple[int, ...]) -> dict:
    """One stack's FLOPs by stage: image embedding once, the input frame encoded once (fast form),
    `unet_calls` batch-1 UNet calls, and the decoder over `frames` in `chunks`."""
    from refocus_edge.runtime.component_names import decoder_name

    decode, left = 0.0, frames
    for chunk in chunks:
        while left >= chunk:
            decode += per_call[decoder_name(chunk)]
            left -= chunk
    parts = {"image_encoder": per_call["image_encoder"], "vae_encoder": per_call["vae_encoder"],
             "unet": unet_calls * per_call["unet"], "decoder": decode}
    return parts | {"total": sum(parts.values())}


def model_report(name: str, refocuser, log) -> dict:
    cfg = refocuser.config
    chunks = tuple(sorted(set(cfg.decode_chunk_sizes), reverse=True))
    measured = {}
    for size in (*FIT_SIZES, CHECK_SIZE):
        t0 = time.perf_counter()
        measured[size] = component_flops(refocuser, size)
        measured[size][TINY] = tiny_decoder_flops(refocuser, size)
        log(f"{name} {size[0]}x{size[1]}: unet {measured[size]['unet'] / 1e12:.3f} TFLOP per call "
            f"({time.perf_counter() - t0:.0f} s to count)")
    components = list(measured[FIT_SIZES[0]])
    fits, check = {}, {}
    for comp in components:
        coef = fit_quadratic([w * h for w, h in FIT_SIZES], [measured[s][comp] for s in FIT_SIZES])
        fits[comp] = coef
        predicted = evaluate(coef, CHECK_SIZE[0] * CHECK_SIZE[1])
        actual = measured[CHECK_SIZE][comp]
        check[comp] = {"predicted": predicted, "counted": actual,
                       "relative_error": abs(predicted - actual) / actual if actual else 0.0}
    rows = []
    for w, h in REPORT_SIZES:
        per_call = {comp: evaluate(fits[comp], w * h) for comp in components}
        stacks = {label: stack_flops(per_call, calls, cfg.num_frames, chunks) for label, calls in STACKS.items()}
        one = stacks["1-step student"]
        tiny = {**one, "decoder": per_call[TINY]}
        stacks[TINY_STACK] = tiny | {"total": sum(v for k, v in tiny.items() if k != "total")}
        rows.append({"size": [w, h], "per_call": per_call, "stacks": stacks})
    return {"model": name, "frames": cfg.num_frames, "decode_chunks": list(chunks),
            "fit": {c: list(v) for c, v in fits.items()}, "check": {"size": list(CHECK_SIZE), **check},
            "rows": rows}


def _g(x: float) -> str:
    return f"{x / 1e12:.2f} T" if x >= 1e12 else f"{x / 1e9:.1f} G" if x >= 1e9 else f"{x / 1e6:.1f} M"


def markdown(res: dict) -> str:
    lines = ["# Cost model: FLOPs per component and per stack, by working size", "",
             f"- command: `{res['command']}`", f"- {res['date']}; torch {res['torch']}",
             "- counted by FlopCounterMode under FakeTensorMode at the spec's shapes (matmuls and convolutions, "
             "2 FLOPs per multiply-add); fitted exactly by a + bP + cP^2 at "
             + ", ".join(f"{w}x{h}" for w, h in FIT_SIZES) + f", checked at {CHECK_SIZE[0]}x{CHECK_SIZE[1]}", ""]
    for m in res["models"]:
        chunks = " + ".join(str(c) for c in m["decode_chunks"])
        lines += [f"## {m['model']}", "",
                  "Fit check at {}x{}: ".format(*m["check"]["size"]) + ", ".join(
                      f"{c} {v['relative_error']:.1e}" for c, v in m["check"].items() if c != "size")
                  + " relative error (the counts are exact polynomials in P when both sides scale, so an "
                    "exact fit predicts every size).", "",
                  "| size | UNet / call | decoder / frame | VAE encoder | image encoder | "
                  + " | ".join(f"{k}: FLOPs, decoder share" for k in (*STACKS, TINY_STACK)) + " |",
                  "|---|---|---|---|---|" + "---|" * (len(STACKS) + 1)]
        for r in m["rows"]:
            pc = r["per_call"]
            dec_frame = r["stacks"][next(iter(STACKS))]["decoder"] / m["frames"]
            cells = [f"{_g(s['total'])}FLOP, {s['decoder'] / s['total']:.0%}" for s in r["stacks"].values()]
            lines.append(f"| {r['size'][0]}x{r['size'][1]} | {_g(pc['unet'])}FLOP | {_g(dec_frame)}FLOP | "
                         f"{_g(pc['vae_encoder'])}FLOP | {_g(pc['image_encoder'])}FLOP | " + " | ".join(cells) + " |")
        r = m["rows"][-1]
        ratio = r["stacks"]["1-step student"]["decoder"] / r["per_call"][TINY]
        lines += ["", f"Decoder per frame: the {chunks} chunks of a {m['frames']}-frame stack, divided by "
                      f"{m['frames']}. Tiny decoder (runtime/tiny_decoder.py, default architecture at this "
                      f"model's latent channels): {_g(r['per_call'][TINY] / m['frames'])}FLOP per frame at "
                      f"{r['size'][0]}x{r['size'][1]}, {ratio:.0f}x fewer than the full decoder.", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/cost-model"))
    p.add_argument("--skip-full-size", action="store_true", help="only the shipped tiny model")
    args = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    from refocus_edge.runtime.loading import load_refocuser
    from refocus_edge.runtime.zoo import resolve_model

    tiny_folder = resolve_model("refocus-tiny")
    models = [("refocus-tiny (shipped)", load_refocuser(tiny_folder))]
    if not args.skip_full_size:
        models.append(("released architecture (SVD UNet, SVD temporal VAE, CLIP ViT-H/14)",
                       meta_full_size_refocuser(Path(tiny_folder) / "scheduler")))
    res = {"command": "python -m benchmarks.cost_model " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "models": [model_report(name, r, log) for name, r in models]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost_model.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "cost_model.md").write_text(markdown(res))
    print(args.out / "cost_model.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
