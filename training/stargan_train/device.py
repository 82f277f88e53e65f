"""Where and how a run computes: the device it picks, bf16 autocast, CPU threads."""
from __future__ import annotations

import os

import torch

from stargan_rt.errors import UserError


def autocast(enabled: bool, device: str):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)


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
