"""The Euler sampler's sigmas and timesteps from a scheduler config, in numpy.

What diffusers' EulerDiscreteScheduler.set_timesteps computes for the refocuser's scheduler
(Karras sigmas between the config's sigma_max and sigma_min, rho 7, a final 0; timestep
0.25 ln sigma; init_noise_sigma sigma_max, or sqrt(sigma_max^2 + 1) for "leading" spacing),
computed the way it computes them, so that the thin runtime needs no torch: the float64 ramp,
then float32. Sigmas and init_noise_sigma come out equal to the scheduler's, timesteps within
one float32 ulp. A model's own sigmas (refocus.json `sigmas`, used at the model's
own step count) go through the same path diffusers' `set_timesteps(sigmas=...)` takes.
tests/test_thin_runtime.py checks every value against the scheduler itself.

A config this module cannot reproduce (not Karras, or no sigma_min/sigma_max, or not
continuous-time v-prediction) is refused with a message, not approximated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from refocus_edge.runtime.errors import ModelLoadError

RHO = 7.0  # Karras et al.'s rho, as diffusers fixes it


@dataclass(frozen=True)
class EulerSchedule:
    sigmas: np.ndarray  # float32 [steps + 1], the last one the final sigma (0)
    timesteps: np.ndarray  # float32 [steps]: 0.25 ln sigma, the UNet's timestep input
    init_noise_sigma: np.float32  # the initial noise's scale


class StoredScheduler:
    """A scheduler as the thin runtime holds it: its saved config (scheduler_config.json), which is
    all the thin sampler reads from a scheduler (a diffusers scheduler's `.config` reads the same)."""

    def __init__(self, config: Mapping):
        self.config = dict(config)


def _check(config: Mapping) -> None:
    wanted = {"use_karras_sigmas": True, "timestep_type": "continuous", "prediction_type": "v_prediction"}
    wrong = {k: config.get(k) for k, v in wanted.items() if config.get(k) != v}
    if config.get("sigma_min") is None or config.get("sigma_max") is None:
        wrong["sigma_min/sigma_max"] = "missing"
    if config.get("final_sigmas_type", "zero") != "zero":
        wrong["final_sigmas_type"] = config.get("final_sigmas_type")
    if wrong:
        raise ModelLoadError(f"the thin runtime computes Karras sigmas of continuous-time v-prediction "
                             f"schedulers with sigma_min, sigma_max and a final sigma 0; this scheduler has "
                             f"{wrong}: run it with PyTorch (--mode reference, or a model folder)",
                             "scheduler/scheduler_config.json")


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int) -> np.ndarray:
    """`steps` sigmas from sigma_max down to sigma_min, float64, as diffusers' _convert_to_karras."""
    ramp = np.linspace(0, 1, steps)
    min_inv_rho = sigma_min ** (1 / RHO)
    max_inv_rho = sigma_max ** (1 / RHO)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** RHO


def euler_schedule(config: Mapping, steps: int, own_sigmas=None) -> EulerSchedule:
    """Sigmas and timesteps for `steps` Euler steps. `own_sigmas`: the model's own sigma list
    (refocus.json), used as given (diffusers' set_timesteps(sigmas=...)): no final 0 is added."""
    _check(config)
    if own_sigmas is not None:
        sigmas = np.array(own_sigmas).astype(np.float32)
    else:
        sigmas = karras_sigmas(float(config["sigma_min"]), float(config["sigma_max"]), int(steps))
        sigmas = np.concatenate([sigmas, [0]]).astype(np.float32)
    # diffusers: 0.25 * sigma.log() on each float32 sigma. torch's float32 log is within 1 ulp of
    # the correctly rounded value computed here (the log in float64, rounded once): equal in 96 % of
    # the Karras timesteps up to 200 steps, 1 ulp apart in the rest (no visible effect).
    timesteps = np.float32(0.25) * np.log(sigmas[:-1].astype(np.float64)).astype(np.float32)
    top = sigmas.max()
    spacing = config.get("timestep_spacing", "linspace")
    init = top if spacing in ("linspace", "trailing") else (top ** 2 + np.float32(1)) ** np.float32(0.5)
    return EulerSchedule(sigmas=sigmas, timesteps=timesteps, init_noise_sigma=np.float32(init))


def model_schedule(scheduler_config: Mapping, model_config, steps: int) -> EulerSchedule:
    """The schedule a refocuser samples with: its own sigmas at its own step count, else Karras
    (runtime.sampler.make_scheduler's rule)."""
    own = model_config.sigmas if model_config.sigmas is not None and steps == model_config.num_inference_steps \
        else None
    return euler_schedule(scheduler_config, steps, own)
