"""Typed configuration of one distillation run (the CLI builds it; library code reads it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from refocus_edge.export.distillation.schedule import StudentSchedule

# Levels recorded in every trajectory cache, so one cache serves the 4-, 2- and 1-step students.
SHARED_STEP_COUNTS = (1, 2, 4)


@dataclass(frozen=True)
class DistillConfig:
    teacher: str | Path
    out: Path
    steps: int = 4
    teacher_unet: Path | None = None  # the released layout: base folder + UNet folder
    data: str = "synthetic"
    size: tuple[int, int] | None = None  # (W, H); None: the teacher's fixed working size
    samples: int = 512  # teacher trajectories (inputs x noise seeds)
    iterations: int = 2000
    batch: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    rollout_fraction: float = 0.5  # share of updates taken from the student's own states
    seed: int = 0
    init: Path | None = None  # student UNet to start from (default: the teacher's UNet)
    trainable: Literal["all", "temporal"] = "all"
    precision: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = False
    device: str = "cpu"
    sigma_max: float | None = None
    sigma_min: float | None = None
    run_dir: Path | None = None  # checkpoints; default runs/distill/<out name>
    cache: Path | None = None  # trajectory cache; default runs/distill/cache/<key>
    checkpoint_minutes: float = 5.0
    progress: bool = True
    force: bool = False  # replace an existing --out folder
    extra_card: dict = field(default_factory=dict)
    # "teacher": regress each step on the teacher's trajectory (objective.py);
    # "ground-truth": run the student's own sampler with gradients and regress its decoded
    # stack on the true focal stack (ground_truth.py), optionally plus the teacher's term.
    objective: Literal["teacher", "ground-truth"] = "teacher"
    perceptual_weight: float = 1.0  # ground-truth: LPIPS (alex) of decoded crops, beside latent MSE
    perceptual_crop: int = 8  # ground-truth: latent side of the decoded crop (8 = 64 px); 0 = whole frame
    teacher_weight: float = 0.0  # ground-truth: weight of the trajectory-distillation term (0 = none)
    # ground-truth: L1 between the log focus maps (local Laplacian energy) of the decoded crop and of
    # the true frames: the per-pixel sharpness curve across frames that depth from focus reads.
    focus_weight: float = 0.0
    # ground-truth: cross-entropy of the decoded crop's per-pixel focus curves across the frames with the
    # truth's (focus_curve_loss): only which frame is sharpest where, the order depth from focus ranks
    curve_weight: float = 0.0
    # ground-truth: larger sizes (W, H) the student also learns from, as random working-size latent crops of
    # stacks rendered there (the lens blur grows with the image, so a crop of a larger render shows the blur a
    # photo served at that size has); `size_mix` of the updates draw their batch from them.
    sizes: tuple[tuple[int, int], ...] = ()
    size_samples: int = 192
    size_mix: float = 0.5

    @property
    def schedule(self) -> StudentSchedule:
        kwargs = {}
        if self.sigma_max is not None:
            kwargs["sigma_max"] = float(self.sigma_max)
        if self.sigma_min is not None:
            kwargs["sigma_min"] = float(self.sigma_min)
        return StudentSchedule(self.steps, **kwargs)

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir is not None else Path("runs/distill") / Path(self.out).name

    def training_facts(self) -> dict:
        """What a resumed run must share with the run it continues."""
        keys = ("steps", "batch", "lr", "weight_decay", "ema_decay", "rollout_fraction", "seed",
                "trainable", "precision", "sigma_max", "sigma_min", "samples", "objective",
                "perceptual_weight", "perceptual_crop", "teacher_weight", "focus_weight")
        if self.sizes:  # only when set, so that runs from before the option resume
            keys += ("sizes", "size_samples", "size_mix")
        if self.curve_weight:
            keys += ("curve_weight",)
        d = asdict(self)
        return {k: d[k] for k in keys} | {"init": str(self.init) if self.init else None}
