"""The run both solvers share: the ``Trainer`` base class (its hooks) and ``run_training``, the
loop that resumes, steps, logs, samples, checkpoints and writes the bundle."""
from __future__ import annotations

import abc
import json
import math
import time
from pathlib import Path

import torch

from stargan_rt.errors import UserError

from .checkpoints import CKPT_NAME, remove_stale_temps, resume_run, save_run
from .config import primitive
from .device import pick_device, set_threads
from .distributed import Dist
from .run_log import Logger
from .schedules import TrainClock, schedule_iter


class Trainer(abc.ABC):
    """What every solver's run has (device, process group, threads, iteration counters);
    ``train()`` runs ``run_training``, which calls the hooks below. A solver sets ARCH, RUN_KEYS
    and ``report`` (its data summary) and implements every abstract method."""

    ARCH = ""        # "v1" / "v2": names the checkpoint format
    RUN_KEYS = ()    # settings a resumed run must share with its checkpoint

    def __init__(self, out_dir, cfg: dict, resume: bool, device: str | None, quiet: bool):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.device = pick_device(device)
        self.dist = Dist(self.device)
        set_threads(cfg.get("threads", 0), self.dist.world)
        cfg["world"] = self.dist.world
        self.quiet, self.resume = quiet, resume
        self.it, self.sched_it = 0, 0.0
        self.changed: dict = {}   # settings a resume changed (--change), for the log

    def train(self) -> dict:
        return run_training(self)

    @abc.abstractmethod
    def step(self, it: int) -> dict:
        """One training iteration (reading ``self.sched_it``); returns its losses by name."""

    @abc.abstractmethod
    def state(self) -> dict:
        """This solver's part of the checkpoint: tensors and primitives only."""

    @abc.abstractmethod
    def load_state(self, state: dict) -> None:
        """Restore what ``state()`` returned."""

    @abc.abstractmethod
    def sample(self, path: Path) -> None:
        """Write a sample grid of the current model to ``path``."""

    @abc.abstractmethod
    def write_bundle(self, path: Path, include_discriminator: bool = True, name: str = "",
                     stopped_early: bool = False):
        """Write the trained model as a bundle; returns the Bundle."""

    @abc.abstractmethod
    def progress_losses(self, avg: dict) -> dict:
        """The losses the progress bar shows, from the interval's averages."""

    @abc.abstractmethod
    def learning_rates(self) -> dict:
        """The current learning rates by name (logged each interval)."""


THREADS_CHECK_EVERY = 50  # iterations between re-checks of --threads -1 (auto)


def check_finite(losses: dict, it: int) -> None:
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"iteration {it}: non-finite loss(es) {', '.join(bad)}; lower the "
                           "learning rate or turn off --bf16")


def run_training(trainer) -> dict:
    """The training loop both solvers share: resume or refuse an existing run, step, log,
    sample, checkpoint every ``ckpt_every`` (and when the time cap is hit), write the bundle.

    ``trainer`` is a Trainer: its hooks are declared there."""
    cfg, out = trainer.cfg, trainer.out
    if trainer.dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
    trainer.dist.barrier()
    ckpt = out / CKPT_NAME
    if trainer.dist.main:
        remove_stale_temps(out)
    resumed = False
    if trainer.resume:
        resumed = resume_run(trainer)
    elif ckpt.exists():
        raise UserError(f"{out} already holds a training run ({ckpt.name}); pass --resume to "
                        "continue it or choose a new --out directory")
    if not resumed:
        trainer.clock = TrainClock()
    log = Logger(out, cfg["iters"], trainer.dist.main, trainer.quiet)
    if trainer.dist.main:
        (out / "config.json").write_text(json.dumps(primitive(cfg), indent=2) + "\n")
        log.event({"event": "resume" if resumed else "start", "iter": trainer.it,
                   "data": trainer.report, "world": trainer.dist.world, "device": trainer.device,
                   "threads": torch.get_num_threads(),
                   **({"changed": trainer.changed} if trainer.changed else {})})
    t_start = time.perf_counter()
    t_window, n_window = time.perf_counter(), 0
    minutes = cfg.get("max_minutes") or 0
    stopped_early = False
    last: dict = {}
    while trainer.it < cfg["iters"]:
        # Rank 0's clock drives every rank, so their schedules and stopping point agree.
        elapsed = trainer.dist.gather_objects(trainer.clock.total())[0]
        trainer.sched_it = schedule_iter(trainer.it, elapsed, cfg)
        if trainer.it == cfg.get("ae_iters", 0):
            last.clear()   # the warm-up's losses end with it: no stale keys in later rows
        losses = trainer.step(trainer.it)
        trainer.it += 1
        n_window += cfg["batch"]
        check_finite(losses, trainer.it)
        last.update(losses)
        if trainer.it % cfg["log_every"] == 0 or trainer.it == cfg["iters"]:
            avg = trainer.dist.all_reduce_mean(dict(last))
            now = time.perf_counter()
            ips = n_window / max(now - t_window, 1e-9)
            t_window, n_window = now, 0
            log.progress(trainer.it, trainer.progress_losses(avg), ips)
            log.event({"iter": trainer.it, "images_per_s": round(ips, 2),
                       "threads": torch.get_num_threads(), **trainer.learning_rates(), **avg})
        if cfg.get("threads") == -1 and trainer.it % THREADS_CHECK_EVERY == 0:
            # the machine's load changes during a run: re-pick the thread count
            set_threads(-1, trainer.dist.world, own_load=trainer.dist.world *
                        torch.get_num_threads())
        if trainer.dist.main and cfg["sample_every"] and trainer.it % cfg["sample_every"] == 0:
            trainer.sample(out / "samples" / f"{trainer.it:06d}.png")
        over = minutes > 0 and elapsed > 60 * minutes  # time before this step: <= 1 step late
        if trainer.it % cfg["ckpt_every"] == 0 or trainer.it == cfg["iters"] or over:
            save_run(trainer)
        if over and trainer.it < cfg["iters"]:
            stopped_early = True
            break
    log.done()
    summary = {"iterations": trainer.it, "seconds": round(time.perf_counter() - t_start, 1),
               "stopped_early": stopped_early, "resumed": resumed}
    if trainer.dist.main:
        trainer.sample(out / "samples" / "final.png")
        bundle = trainer.write_bundle(out / "bundle", stopped_early=stopped_early)
        summary["bundle"] = str(bundle.path)
        log.event({"event": "end", **summary})
    trainer.dist.barrier()
    return summary
