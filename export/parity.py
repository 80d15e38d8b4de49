"""Parity gates: an artifact is written only if it matches the PyTorch reference.

Two gates, each a named metric with a threshold:
  * per component, `max_rel_error` = max |artifact - torch| / max |torch| on fresh
    random inputs at the min, opt and max corners of the shape profile;
  * end to end, `lpips_alex_max_frame`: the whole focal stack sampled with the same
    seed through the artifacts and through PyTorch, LPIPS (alex) per frame, worst frame.
A failed gate raises ParityError naming the component, metric, value and threshold.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from refocus_edge.runtime.errors import RefocusError

# Worst-frame LPIPS allowed between a stack sampled through the artifacts and through PyTorch.
END_TO_END_LPIPS = {"fp32": 1e-3, "fp16": 5e-2}


class ParityError(RefocusError):
    """An exported artifact does not match the PyTorch reference."""

    def __init__(self, result: "GateResult"):
        self.result = result
        super().__init__(f"parity gate failed for {result.component} ({result.artifact} {result.precision}): "
                         f"{result.metric} = {result.value:.3g} > threshold {result.threshold:.3g}"
                         f"{' at ' + result.detail if result.detail else ''}; nothing was written")


@dataclass
class GateResult:
    component: str
    artifact: str
    precision: str
    metric: str
    value: float
    threshold: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.value <= self.threshold  # NaN fails too

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def enforce(self) -> "GateResult":
        if not self.passed:
            raise ParityError(self)
        return self


@dataclass
class CheckedGate:
    """A component gate recorded by reference: the artifact passed checks made elsewhere in the
    export, named by `metric` (each raises when it fails, so a record exists only for a pass)."""

    component: str
    artifact: str
    precision: str
    metric: str
    passed: bool = True

    def to_json(self) -> dict:
        return asdict(self)

    def enforce(self) -> "CheckedGate":
        return self


def max_rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double(), ref.double()
    if got.shape != ref.shape:
        return float("inf")
    scale = ref.abs().max().clamp_min(1e-12)
    return float((got - ref).abs().max() / scale)


@torch.no_grad()
def component_gate(spec, artifact: str, precision: str, reference, runner, seed: int = 0) -> GateResult:
    """Compare `runner` (spec feeds -> outputs) with the flat PyTorch `reference` module."""
    gen = torch.Generator().manual_seed(seed)
    worst, where = 0.0, ""
    for corner in ("min", "opt", "max"):
        feeds = spec.sample_inputs(gen, corner)
        ref = reference(*(feeds[n] for n in spec.input_names)).float()
        got = runner(feeds)[spec.output_names[0]]
        err = max_rel_error(got, ref)
        if not err <= worst:  # also catches NaN
            worst, where = err, f"{corner} shapes {dict(spec.input_shapes(corner))}"
    return GateResult(spec.name, artifact, precision, "max_rel_error", worst, spec.tolerance(precision), where)


def end_to_end_gate(artifact: str, precision: str, frames: torch.Tensor, reference_frames: torch.Tensor,
                    lpips) -> GateResult:
    """Worst-frame LPIPS between two decoded stacks ([F, 3, H, W] in [0, 1])."""
    per_frame = lpips(frames * 2 - 1, reference_frames * 2 - 1)
    worst = int(per_frame.argmax())
    return GateResult("end_to_end", artifact, precision, "lpips_alex_max_frame", float(per_frame.max()),
                      END_TO_END_LPIPS[precision], f"frame {worst}")


def gate_image(dims, position: int) -> torch.Tensor:
    """A held-out synthetic photo at the opt resolution ([1, 3, H, W] in [-1, 1])."""
    from refocus_edge.focalstacks.synthetic import SyntheticFocalStacks

    w, h = dims.resolutions[0]
    frames = SyntheticFocalStacks("heldout", size=(h, w), length=1)[0]["frames"]
    return frames[position:position + 1] * 2 - 1


def gate_sample(refocuser, image, steps: int, seed: int) -> torch.Tensor:
    """The end-to-end gate's stack: fast mode (equal to reference mode within 1e-3), no progress bar."""
    from refocus_edge.runtime.sampler import SamplerConfig, sample_focal_stack

    cfg = SamplerConfig(num_inference_steps=steps, seed=seed, mode="fast", progress=False)
    return sample_focal_stack(refocuser, image, cfg).frames
