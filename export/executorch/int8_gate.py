"""int8 programs: calibration before the export, and the per-component gate by stack drift.

An int8 component's raw output error says little (a 1% error in the UNet's v-prediction may or
may not show in the frames), so, as `refocus quantize` does for its int8 graphs, each program is
judged by the stack it helps produce: the gate photo sampled with only this component's program in
place of the PyTorch module, LPIPS (alex) per frame against the PyTorch stack, median frame within
the project's int8 budget. The whole int8 bundle's worst frame is the
driver's end-to-end gate.
"""
from __future__ import annotations

import torch

from refocus_edge.export.drift_budget import QUANTIZED_DRIFT_LPIPS
from refocus_edge.export.emulation import ModuleRunner, emulated_refocuser
from refocus_edge.export.parity import GateResult, gate_image, gate_sample, max_rel_error
from refocus_edge.runtime.artifacts import EXECUTORCH
from refocus_edge.runtime.component_names import component_family
from refocus_edge.runtime.errors import InvalidArgumentError


def int8_budget() -> tuple[float, float]:
    """(median, worst frame) LPIPS an int8 program may add: the project's one quantization budget,
    the same `refocus quantize` gates its int8 recipe with."""
    return QUANTIZED_DRIFT_LPIPS


def _torch_runners(job) -> dict:
    return {n: ModuleRunner(job.reference[n], s.input_names, s.output_names) for n, s in job.specs.items()}


def prepare_int8(job, calibration_cfg) -> None:
    """Record the calibration calls (the fp32 PyTorch components behind the runtime's adapters,
    sampled on calibration photos) and the gate's reference stack."""
    from refocus_edge.export.calibration import collect_calibration
    from refocus_edge.runtime.metrics.lpips import LPIPS

    working = tuple(job.refocuser.config.working_size)
    if tuple(job.dims.resolutions[0]) != working:
        raise InvalidArgumentError(f"--quantize int8 calibrates at the model's working size "
                                   f"{working[0]}x{working[1]}; export int8 programs at that size")
    torch_model = emulated_refocuser(job.refocuser, job.specs, _torch_runners(job), "torch")
    calibration = collect_calibration(torch_model, calibration_cfg)
    job.state["calibration"] = calibration.feeds
    job.state["calibration_record"] = calibration.to_json()
    calls = ", ".join(f"{n} {len(v)}" for n, v in calibration.feeds.items())
    job.log(f"calibrate  {calibration_cfg.samples} {calibration_cfg.data} stacks at the model's own sigmas "
            f"(calls: {calls})")
    steps = job.cfg.gate_steps or job.refocuser.config.num_inference_steps
    image = gate_image(job.dims, job.refocuser.config.default_position)
    with torch.no_grad():
        job.state["int8_gate"] = (image, steps, gate_sample(job.refocuser, image, steps, job.cfg.gate_seed),
                                  LPIPS("alex"))


@torch.no_grad()
def int8_component_gate(job, variant, spec, runner) -> GateResult:
    image, steps, reference, lpips = job.state["int8_gate"]
    runners = _torch_runners(job)
    runners[spec.name] = runner
    model = emulated_refocuser(job.refocuser, job.specs, runners, f"executorch int8 {spec.name}")
    frames = gate_sample(model, image, steps, job.cfg.gate_seed)
    per_frame = lpips(frames * 2 - 1, reference * 2 - 1).float()
    feeds = spec.sample_inputs(torch.Generator().manual_seed(0), "opt")
    ref = job.reference[spec.name](*(feeds[n] for n in spec.input_names)).float()
    err = max_rel_error(runner(feeds)[spec.output_names[0]], ref)
    median, threshold = float(per_frame.median()), int8_budget()[0]
    hint = "" if median <= threshold else \
        f"; --int8-keep-float {component_family(spec.name)} keeps this component's program float"
    return GateResult(spec.name, EXECUTORCH, variant.name, "lpips_alex_median_frame", median, threshold,
                      f"worst frame {float(per_frame.max()):.4f} with only {spec.name} in int8; "
                      f"max_rel_error {err:.3g} on random inputs at the opt shapes{hint}")
