"""Distillation scale check: one `refocus distill` update (StudentTrainer.update) on the full-size SVD UNet.

Random weights, the SVD img2vid UNet config (1.52 B parameters), the recipe for the released
checkpoint (--trainable temporal --gradient-checkpointing), fp32 on the CPU, 64x64 pixels
(8x8 latents): it checks the architecture and the memory of the trainer, not the resolution.
Random stand-in trajectories (no teacher run).

    python -m benchmarks.distill_scale_check > benchmarks/results/scale-check/distill_step.txt
"""
import resource, time, torch
from pathlib import Path
from diffusers import UNetSpatioTemporalConditionModel
from refocus_edge.export.distillation.config import DistillConfig
from refocus_edge.export.distillation.train import StudentTrainer
from refocus_edge.export.distillation.trajectories import Trajectories
from refocus_edge.runtime.model_config import RefocusModelConfig


def main() -> None:
    # Everything runs here, not at import: the layout test imports every module.
    t0 = time.time()
    unet = UNetSpatioTemporalConditionModel()  # the SVD img2vid UNet config, 1.52 B parameters
    print(f"built in {time.time()-t0:.0f}s", flush=True)
    N, h, w = 2, 8, 8  # 64x64 pixels: the architecture, not the resolution, is what is checked here
    levels = [20.0, 6.391061305999756, 1.6343334913253784, 0.30000001192092896]
    traj = Trajectories(levels=levels, states=torch.randn(N, 4, 9, 4, h, w), final=torch.randn(N, 9, 4, h, w),
                        cond_latents=torch.randn(N, 4, h, w), positions=torch.tensor([0, 4]),
                        embeddings=torch.randn(N, 1, 1024), noise_seeds=torch.tensor([0, 1]), num_frames=9)
    sig = torch.tensor(levels + [0.0])
    cfg = DistillConfig(teacher="x", out=Path("out/distill-scale-check/out"), steps=4, batch=1, iterations=2, trainable="temporal",
                        gradient_checkpointing=True, run_dir=Path("out/distill-scale-check/run"), progress=False, rollout_fraction=0.5)
    tr = StudentTrainer(unet, RefocusModelConfig(), traj, sig, (401) ** 0.5, cfg, N, log=print)
    print(f"trainable {sum(p.numel() for p in tr.params)/1e6:.0f} M of {sum(p.numel() for p in unet.parameters())/1e6:.0f} M", flush=True)
    for i in range(2):
        t = time.time(); loss = tr.update(); print(f"update {i}: loss {loss:.4f} in {time.time()-t:.1f}s", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024**2:.1f} GiB")


if __name__ == "__main__":
    main()
