"""Settings of a tiny-decoder distillation run (the CLI builds one; tests build small ones)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

# The gate (issue 21): the tiny decoder's frames may differ from the full decoder's by at most this
# LPIPS (alex), median over the frames of the held-out stacks.
GATE_LPIPS_MEDIAN = 0.03
# The photo-guided decoder's gate (issue 23): against the true frames of the held-out stacks, its
# median per-frame LPIPS may exceed the full decoder's (same latents) by at most this; 0 = it must
# be at least as close to the truth as the decoder it replaces.
GUIDED_GATE_MARGIN = 0.0


@dataclass(frozen=True)
class TinyDecoderConfig:
    model: str | Path  # shipped name or model folder whose VAE decoder is distilled
    out: Path | None = None  # the tiny_decoder folder to write (default: <model>/tiny_decoder)
    samples: int = 256  # training stacks; each gives the model's own latents and the true frames' latents
    held_out: int = 8  # held-out stacks (the renderer's held-out split) for the gate
    iterations: int = 3000
    batch: int = 2  # stacks (of 9 frames) per update
    lr: float = 1e-3
    ema_decay: float = 0.999
    perceptual_weight: float = 0.5  # LPIPS beside the L1 to the full decoder's frames
    # L1 between log focus maps of its frames and the target's (export/distillation/ground_truth.py):
    # the sharpness-across-frames signal depth from focus reads
    focus_weight: float = 0.0
    # cross-entropy of the per-pixel focus curves across frames with the target's (focus_curve_loss):
    # only where each pixel is sharpest, the order depth from focus reads
    curve_weight: float = 0.0
    # Larger sizes the decoder also learns from (W, H): the lens blur grows with the image, so a
    # decoder that serves photos at their own shape must have seen that blur. Their stacks are
    # rendered at that size and cut to random crops of the working size, transposed half the time.
    sizes: tuple[tuple[int, int], ...] = ()
    size_samples: int = 192  # training stacks per extra size
    size_mix: float = 0.5  # the share of each batch's stacks drawn from the extra sizes
    # Gaussian sigmas (px at the output) of the guided decoder's bank of re-blurred photos (runtime/
    # tiny_decoder._PhotoBlurs); empty: none
    photo_blurs: tuple[float, ...] = ()
    # sigmas (px) of unsharp masks of the photo (2 * photo - G(sigma) * photo) joining that bank: they
    # let the decoder sharpen past the photo where a frame's focal plane meets the scene; empty: none
    photo_sharpen: tuple[float, ...] = ()
    # the focus-depth head (weights from `python -m training.depth_head`) of a thin-lens stack mixed into the
    # guided decoder's output at lens_mix (runtime/lens_stack.LensStack); frozen while the decoder trains
    lens_head: Path | None = None
    lens_mix: float = 0.75
    lens_amount: float = 1.0  # unsharp amount per frame of focus a frame gains over the photo
    init: Path | None = None  # a decoder folder of the same architecture to start from (default: the tiny decoder)
    channels: tuple[int, ...] = (64, 48, 32)
    blocks: tuple[int, ...] = (2, 1, 1)
    seed: int = 0
    data: str = "synthetic"  # FocalStackSource spec (export/distillation/data.py)
    gate_threshold: float = GATE_LPIPS_MEDIAN
    guided: bool = False  # the photo-guided decoder, trained toward the true frames (gate: GUIDED_GATE_MARGIN)
    run_dir: Path | None = None
    checkpoint_minutes: float = 5.0
    device: str = "cpu"
    force: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def training_facts(self) -> dict:
        """What a resumed run must share with the checkpoint it continues."""
        keep = ("samples", "batch", "lr", "ema_decay", "perceptual_weight", "channels", "blocks", "seed", "data",
                "iterations") + (("guided",) if self.guided else ()) + (("focus_weight",) if self.focus_weight else ()) \
            + (("curve_weight",) if self.curve_weight else ()) + (("photo_blurs",) if self.photo_blurs else ()) \
            + (("photo_sharpen",) if self.photo_sharpen else ()) \
            + (("lens_head", "lens_mix", "lens_amount") if self.lens_head else ()) \
            + (("sizes", "size_samples", "size_mix") if self.sizes else ()) + (("init",) if self.init else ())

        def plain(v):
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else str(v) if isinstance(v, Path) else v

        return {k: plain(v) for k, v in asdict(self).items() if k in keep}

    def resolved_run_dir(self, model_folder: Path) -> Path:
        kind = "guided-decoder" if self.guided else "tiny-decoder"
        return Path(self.run_dir) if self.run_dir else Path("runs") / kind / Path(model_folder).name
