"""What changes over a run: the ramps after the warm-up, the learning-rate decay, the training
clock (summed over resumes) and where the run stands in its schedules; setting an optimizer's
learning rate."""
from __future__ import annotations

import time

import torch


def gan_ramp(it: int, cfg: dict) -> float:
    """Factor (0..1] on G's adversarial and classification weights in the first ``gan_ramp``
    iterations after the warm-up, rising linearly. Why: the critic is untrained when the GAN
    phase starts, and at full weight its first gradients undid the warm-up's reconstruction
    (identity L1 0.08 -> 0.33 within 150 iterations, recovered only over thousands)."""
    return _after_warm_up(it, cfg, "gan_ramp")


def lr_ramp(it: int, cfg: dict) -> float:
    """Factor (0..1] on G's learning rate (v2: also E's and F's) in the first ``lr_ramp``
    iterations after the warm-up, rising linearly. Why: Adam's second moments still hold the
    warm-up's small reconstruction gradients, so the GAN phase's new gradients would first take
    steps many times the learning rate (with the loss weights ramped to 1/600, one G step of a
    tiny run moved its held-out identity L1 from 0.16 to 0.23); the ramp lets them catch up."""
    return _after_warm_up(it, cfg, "lr_ramp")


def _after_warm_up(it: int, cfg: dict, key: str) -> float:
    """Linear rise from 1 / cfg[key] at the first iteration after the warm-up to 1 (no ramp: 1)."""
    ramp = cfg.get(key, 0) or 0
    if ramp <= 0:
        return 1.0
    return min(1.0, max(0.0, (it - cfg.get("ae_iters", 0) + 1) / ramp))


def linear_decay_lr(base: float, it: int, total: int, decay_iters: int) -> float:
    """Learning rate for iteration ``it`` (0-based): constant, then linearly to 0 over the last
    ``decay_iters`` iterations (what the StarGAN v1 paper describes). The official code instead
    subtracts lr/num_iters_decay once every lr_update_step (1000) iterations, so 100 updates of
    1e-5 of the lr leave it at ~99.9 % of its start value: its decay is a no-op."""
    if decay_iters <= 0:
        return base
    start = total - decay_iters
    if it < start:
        return base
    return base * max(0.0, (total - it) / decay_iters)


class TrainClock:
    """Training time summed over resumed sessions (kept in the checkpoint), so --max-minutes
    caps the whole run and the schedules see the same time after a SIGKILL and --resume."""

    def __init__(self, before: float = 0.0):
        self.before = float(before)
        self.start = time.perf_counter()

    def total(self) -> float:
        return self.before + time.perf_counter() - self.start


def schedule_iter(it: int, elapsed_s: float, cfg: dict) -> float:
    """Where the run stands in its schedules (learning-rate decay, v2's diversity weight), in
    iterations: ``it``, or further along when a --max-minutes budget is the tighter limit, so
    that a run cut off by its time cap still ends with the decayed learning rate rather than
    stopping in the middle of its constant phase."""
    minutes = cfg.get("max_minutes") or 0
    if minutes <= 0:
        return float(it)
    return max(float(it), min(1.0, elapsed_s / (60 * minutes)) * cfg["iters"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
