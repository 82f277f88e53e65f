"""Pieces both solvers share: distributed set-up and gradient averaging, atomic checkpoints that
load with ``torch.load(weights_only=True)``, RNG state capture, EMA, progress/metrics logging,
sample-grid PNGs and the linear learning-rate schedule."""
from __future__ import annotations

import abc

import errno
import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic
from stargan_rt.metrics import SSIM_K1, SSIM_K2, gaussian_kernel

CKPT_NAME = "checkpoint.pt"


# ---------------------------------------------------------------------------------------------
# Distributed

class Dist:
    """Process group from torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK); gloo on CPU,
    nccl on CUDA. world == 1 without torchrun."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, 0)

    def average_gradients(self, modules) -> None:
        """All-reduce (mean) the gradients of the given modules in one flat bucket per call.

        Equivalent to DistributedDataParallel's reduction, but done explicitly after backward:
        DDP does not support the double backward of the WGAN-GP / R1 penalties, which
        differentiate the discriminator's input gradient."""
        if not self.enabled:
            return
        grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def average_buffers(self, module: torch.nn.Module) -> None:
        """All-reduce (mean) the floating-point buffers, e.g. BatchNorm running statistics that
        the module uses in eval mode: each rank sees other images, and all must judge alike."""
        if not self.enabled:
            return
        for buf in module.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf.data)
                buf.data.div_(self.world)

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def gather_objects(self, obj):
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# RNG state

def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """torch / numpy (legacy global) / python RNG states as tensors and primitive containers."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached": float(np_state[4])},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(run_dir: Path, state: dict, name: str = CKPT_NAME) -> Path:
    """Write ``state`` to run_dir/name atomically (``stargan_rt.files.write_atomic``). A failure
    (disk full, ...) removes the temp file, leaves the previous checkpoint as it was, and raises
    a UserError saying so."""
    target = Path(run_dir) / name

    def error(where: Path, exc: OSError) -> UserError:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        why = "the disk is full" if full else (exc.strerror or str(exc))
        kept = "the previous checkpoint is intact" if where.exists() else "no checkpoint yet"
        return UserError(f"{where}: cannot save the checkpoint ({why}); {kept}. Free space "
                         "(or choose another --out) and run again with --resume")
    return write_atomic(target, lambda tmp: torch.save(state, tmp), error)


def remove_stale_temps(run_dir: Path) -> None:
    """Temp files a killed save left behind (never the checkpoint itself)."""
    for tmp in Path(run_dir).glob(f".{CKPT_NAME}.*.tmp"):
        _remove(tmp)


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read with weights_only=True and checked to hold what resume_run
    uses; anything else is one line (never torch's advice to load it unsafely)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects beyond tensors and settings: never unpickled
        raise UserError(f"{path}: refused: the file holds pickled objects a stargan-rt "
                        "checkpoint never has (they were not run); delete it or choose a new "
                        "--out to start over") from None
    except Exception as exc:  # truncated/corrupt files
        first = (str(exc).splitlines() or [""])[0][:120]
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {first}); "
                        "delete it or choose a new --out to start over") from None
    wanted = {"format": str, "iter": int, "config": dict, "elapsed_s": (int, float)}
    if not isinstance(state, dict):
        what = f"it holds a {type(state).__name__}, not a dict"
    else:
        bad = [key for key, kind in wanted.items() if not isinstance(state.get(key), kind)]
        what = f"missing or mistyped: {', '.join(bad)}" if bad else ""
    if what:
        raise UserError(f"{path}: not a stargan-rt training checkpoint ({what}); delete it or "
                        "choose a new --out to start over")
    return state


def save_run(trainer) -> None:
    """Checkpoint a run: the solver's own state (``trainer.state()``, collective: every rank
    takes part) plus what every run has (format, iteration, config, training time)."""
    state = trainer.state()
    state.update({"format": f"stargan-rt-train-{trainer.ARCH}", "iter": trainer.it,
                  "config": primitive(trainer.cfg), "elapsed_s": trainer.clock.total()})
    if trainer.dist.main:
        save_checkpoint(trainer.out, state)
    trainer.dist.barrier()


# Run settings newer than some checkpoints, with the value that means "off".
LATER_SETTINGS_OFF = {"lambda_ssim": 0.0, "lr_ramp": 0}


def resume_run(trainer) -> bool:
    """Restore a run from its checkpoint (False when there is none): refuses another
    architecture's checkpoint or other settings (``trainer.RUN_KEYS``), then hands the state to
    ``trainer.load_state`` and restores the iteration and the training clock."""
    path = trainer.out / CKPT_NAME
    if not path.exists():
        return False
    state = load_checkpoint(path)
    if state.get("format") != f"stargan-rt-train-{trainer.ARCH}":
        other = "v2" if trainer.ARCH == "v1" else "v1"
        raise UserError(f"{path}: not a stargan-rt {trainer.ARCH} training checkpoint; use "
                        f"`stargan-rt train {other}` for {other} runs or a new --out")
    # settings added after a checkpoint was written: it ran with them off
    saved = {**LATER_SETTINGS_OFF, **state["config"]}
    allowed = tuple(trainer.cfg.get("change_on_resume") or ())
    check_same_settings(saved, trainer.cfg, [k for k in trainer.RUN_KEYS if k not in allowed],
                        path)
    trainer.changed = {k: [saved.get(k), trainer.cfg.get(k)] for k in allowed
                       if _norm(saved.get(k)) != _norm(trainer.cfg.get(k))}
    trainer.load_state(state)
    trainer.it = int(state["iter"])
    trainer.clock = TrainClock(state["elapsed_s"])
    return True


def check_same_settings(saved: dict, current: dict, keys, path: Path) -> None:
    """Refuse to resume when settings that shape the run differ."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in keys
             if _norm(saved.get(k)) != _norm(current.get(k))]
    if diffs:
        raise UserError(f"{path}: cannot resume a run with other settings ({'; '.join(diffs)}); "
                        "use the original options or a new --out directory (loss weights "
                        "may change on resume with --change NAME)")


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# ---------------------------------------------------------------------------------------------
# Losses

def ssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM of two (N, C, H, W) image batches in [-1, 1]: eval's SSIM
    (``stargan_rt.metrics``: window, sigma, constants, valid region), in float32 and
    differentiable. Why: L1 alone lets a small G return blurred faces (the shipped 180-minute
    v1 kept only SSIM 0.78 of its own input at 25 dB); SSIM weighs local contrast and
    structure, which blur loses first."""
    with torch.autocast(a.device.type, enabled=False):  # variances cancel badly in bf16
        a, b = a.float(), b.float()
        g = torch.from_numpy(gaussian_kernel()).float().to(a.device)
        channels = a.shape[1]
        win = (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()
        blur = lambda t: torch.nn.functional.conv2d(t, win, groups=channels)  # noqa: E731
        c1, c2 = (SSIM_K1 * 2) ** 2, (SSIM_K2 * 2) ** 2     # data range 2 for [-1, 1]
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a ** 2
        var_b = blur(b * b) - mu_b ** 2
        cov = blur(a * b) - mu_a * mu_b
        ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
        return 1.0 - ssim.mean()


def autoencoder_loss(out: torch.Tensor, target: torch.Tensor, cfg: dict):
    """The warm-up's reconstruction loss: (L1, L1 + the SSIM term at the GAN phase's ratio of
    lambda_ssim to the identity weight). The L1 is what the log shows."""
    l1 = (out.float() - target.float()).abs().mean()
    if cfg.get("lambda_ssim", 0.0) <= 0:
        return l1, l1
    return l1, l1 + cfg["lambda_ssim"] / max(cfg["lambda_id"], 1.0) * ssim_loss(out, target)


# ---------------------------------------------------------------------------------------------
# EMA, learning rate

@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float, step: int) -> None:
    """ema = b * ema + (1 - b) * model, for parameters; buffers copied. b = min(beta,
    (1 + step) / (10 + step)): without this warm-up a short run's EMA (0.999 over 1000 steps)
    still holds 37 % of the random initial weights; after a few thousand steps b = beta."""
    beta = min(beta, (1.0 + step) / (10.0 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - beta)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


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


# ---------------------------------------------------------------------------------------------
# Logging and images

class Logger:
    """Metrics as JSON lines (run_dir/metrics.jsonl) and a one-line progress bar on stderr."""

    def __init__(self, run_dir: Path, total: int, enabled: bool, quiet: bool = False):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.total, self.enabled, self.quiet = total, enabled, quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def event(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def progress(self, it: int, losses: dict, images_per_s: float) -> None:
        if not self.enabled or self.quiet:
            return
        width = 24
        done = int(width * it / max(self.total, 1))
        bar = "#" * done + "." * (width - done)
        loss_text = " ".join(f"{k}={v:.3f}" for k, v in sorted(losses.items()))
        elapsed = time.perf_counter() - self.t0
        line = (f"[{bar}] {it}/{self.total} {images_per_s:.1f} img/s "
                f"{elapsed / 60:.1f} min {loss_text}")
        if self.tty:
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.tty and not self.quiet:
            sys.stderr.write("\n")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) in [-1,1] -> uint8 (N,H,W,3) RGB."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def save_grid(path: Path, columns: list[torch.Tensor]) -> None:
    """PNG grid: one row per sample, columns = [input, output per target...]; atomic."""
    cols = [to_uint8(c) for c in columns]
    rows = [np.concatenate([c[i] for c in cols], axis=1) for i in range(len(cols[0]))]
    grid = np.concatenate(rows, axis=0)[:, :, ::-1]
    ok, data = cv2.imencode(".png", grid)
    if not ok:
        return
    write_atomic(path, data.tobytes())


def autocast(enabled: bool, device: str):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)


def check_finite(losses: dict, it: int) -> None:
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"iteration {it}: non-finite loss(es) {', '.join(bad)}; lower the "
                           "learning rate or turn off --bf16")


def set_threads(n: int, world: int = 1, own_load: float = 0.0) -> int:
    """Intra-op CPU threads; returns the number set. 0 keeps torch's default; -1 ("auto", the
    tiny presets) takes the cores that the 1-minute load average shows idle, not counting
    ``own_load`` (this run's own threads, when re-checking during training), shared between the
    run's processes, at least 1. Why: on a busy 2-core machine two OpenMP threads made a v2 step
    15x slower (83 s vs 5.4 s) and a v1 run 20x slower, each of the many small ops waiting at a
    barrier for a descheduled thread, while on a quiet one 2 threads are 1.6x faster than 1."""
    if n == -1:
        cores = os.cpu_count() or 1
        try:
            busy = max(0, round(os.getloadavg()[0] - own_load))
        except OSError:
            busy = 0
        n = max(1, (cores - busy) // max(1, world))
    if n and n > 0 and n != torch.get_num_threads():
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def pick_device(requested: str | None) -> str:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {requested}: CUDA is not available on this machine")
        return requested
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return f"cuda:{local}"
    return "cpu"


def make_config(presets: dict, preset: str, defaults: dict, overrides: dict) -> dict:
    """A preset's settings plus ``defaults``, then every override that is not None."""
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    cfg = dict(presets[preset], preset=preset, seed=0, holdout=0.02, **defaults)
    cfg.update({key: value for key, value in overrides.items() if value is not None})
    return cfg


def synth_framing(data_dir) -> dict:
    """The crop framing (``crop_scale``, ``crop_shift``) of faces made by `stargan-rt data
    synth` when ``data_dir`` is such a set (it carries its recipe), else {}: a bundle trained on
    it carries the framing, so the runtime's live crops are framed like its training images."""
    from stargan_rt.synth import HAAR_FRAMING, read_recipe

    if data_dir is None or read_recipe(data_dir) is None:
        return {}
    return dict(HAAR_FRAMING)


def primitive(value):
    """JSON/torch.load(weights_only)-safe copy of a config."""
    if isinstance(value, dict):
        return {str(k): primitive(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [primitive(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


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


