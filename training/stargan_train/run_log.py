"""A run's log: metrics as JSON lines in the run directory and the progress bar on stderr."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


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
