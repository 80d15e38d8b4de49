"""The training loop every project trainer shares: deterministic, checkpointed, resumable, with EMA.

A run killed at any point continues from its last checkpoint: the checkpoint holds the trained
module, its EMA, the optimiser, the data generator's state, the step and the loss history, and is
written atomically. Resuming a run whose settings differ is refused rather than mixed. Subclasses
(the few-step student's trainers in export/distillation/, the tiny decoder's in export/tiny_decoder/)
set up the module, optimiser and generator and say what one update's loss is.
"""
from __future__ import annotations

import math
import time

import torch

from refocus_edge.runtime.errors import InvalidArgumentError

SHOW_EVERY = 10


def warmup_cosine(step: int, iterations: int, peak: float, warmup: int, floor: float) -> float:
    """Linear warm-up over min(warmup, iterations / 10) updates to `peak`, then a cosine down to
    `floor` x peak at the last update."""
    warm = min(warmup, max(iterations // 10, 1))
    if step < warm:
        return peak * (step + 1) / warm
    progress = min((step - warm) / max(iterations - warm, 1), 1.0)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class CheckpointedTrainer:
    """Needs, from the subclass: cfg (iterations, ema_decay, checkpoint_minutes, progress,
    training_facts()), model, ema, opt, gen, params, ckpt (a Path), log; `lr_at(step)` and `loss()`."""

    desc = "train"  # progress bar and log prefix
    ckpt_key = "model"  # the checkpoint's name for the trained module's weights

    def _start_counters(self) -> None:
        self.step, self.history, self.seconds = 0, [], 0.0

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def loss(self) -> torch.Tensor:
        raise NotImplementedError

    def bar_desc(self) -> str:
        return self.desc

    # ------------------------------------------------------------ checkpoints
    def resume(self) -> bool:
        if not self.ckpt.is_file():
            return False
        # On the CPU: the generator state must stay a CPU tensor; load_state_dict moves the weights.
        state = torch.load(self.ckpt, weights_only=False, map_location="cpu")
        facts = self.cfg.training_facts()
        if state["facts"] != facts:
            changed = sorted(k for k in state["facts"] if state["facts"][k] != facts.get(k))
            raise InvalidArgumentError(f"{self.ckpt} belongs to a run with different settings {changed}; "
                                       "use another --run-dir, or delete it to start over")
        self.model.load_state_dict(state[self.ckpt_key])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.step, self.history, self.seconds = state["step"], state["history"], state["seconds"]
        self.log(f"{self.desc}: resumed {self.ckpt} at step {self.step}/{self.cfg.iterations}")
        return True

    def save(self) -> None:
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save({self.ckpt_key: self.model.state_dict(), "ema": self.ema.state_dict(),
                    "opt": self.opt.state_dict(), "gen": self.gen.get_state(), "step": self.step,
                    "history": self.history, "seconds": self.seconds,
                    "facts": self.cfg.training_facts()}, tmp)
        tmp.replace(self.ckpt)

    # ------------------------------------------------------------- one update
    def update(self) -> float:
        """One optimiser step on `loss()` (gradient norm clipped to 1), then the EMA."""
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, pl in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(pl, 1 - decay)
        self.step += 1
        return float(loss.detach())

    # ------------------------------------------------------------------ loop
    def run(self, stop_after: int | None = None) -> None:
        """Train to cfg.iterations (or `stop_after` more updates: tests use it to simulate a kill)."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        end = cfg.iterations if stop_after is None else min(cfg.iterations, self.step + stop_after)
        bar = tqdm(total=cfg.iterations, initial=self.step, desc=self.bar_desc(), unit="it",
                   disable=not cfg.progress, mininterval=2)
        last_save = time.time()
        while self.step < end:
            t0 = time.perf_counter()
            loss = self.update()
            self.seconds += time.perf_counter() - t0
            self.history.append((self.step, loss))  # every update: a resumed run continues it exactly
            if self.step % SHOW_EVERY == 0:
                recent = [v for _, v in self.history[-SHOW_EVERY:]]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            bar.update()
            if time.time() - last_save > cfg.checkpoint_minutes * 60:
                self.save()
                last_save = time.time()
        bar.close()
        self.save()
