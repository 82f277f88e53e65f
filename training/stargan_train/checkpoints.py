"""Training checkpoints: atomic save, weights-only load with its checks, removal of a killed
save's temp files, and a run's save / resume (``save_run``, ``resume_run``), which refuses other
settings."""
from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import torch

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic

from .config import primitive
from .schedules import TrainClock

CKPT_NAME = "checkpoint.pt"


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
