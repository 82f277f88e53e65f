"""Run statistics of the live pipeline, in constant memory: per-stage latency (a live window and
a log-spaced histogram for the run's percentiles), frame counts, FPS, memory and live parity."""
from __future__ import annotations

import collections
import math
import os
import threading
import time
from typing import Any

import numpy as np

STAGES = ("capture", "detect", "infer", "paste", "output", "end_to_end")


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        try:
            import resource  # fallback (peak, not current)
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except Exception:  # noqa: BLE001
            return float("nan")


class LatencyHistogram:
    """Log-spaced histogram (1% bins from 0.01 ms to ~100 s): percentiles in constant memory."""

    LOW, STEP, BINS = 0.01, math.log(1.01), 1700

    def __init__(self):
        self.counts = np.zeros(self.BINS, np.int64)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float) -> None:
        index = 0 if ms <= self.LOW else int(math.log(ms / self.LOW) / self.STEP) + 1
        self.counts[min(index, self.BINS - 1)] += 1
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)

    def percentile(self, p: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100.0 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        value = self.LOW * math.exp(self.STEP * max(0, index - 0.5))
        return min(value, self.max)

    def summary(self) -> dict:
        if not self.count:
            return {"count": 0}
        return {"count": self.count, "mean": round(self.total / self.count, 3),
                "p50": round(self.percentile(50), 3), "p95": round(self.percentile(95), 3),
                "max": round(self.max, 3)}


class StageTimes:
    def __init__(self, window: int = 120):
        self.window = collections.deque(maxlen=window)
        self.hist = LatencyHistogram()
        self.lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self.lock:
            self.window.append(ms)
            self.hist.add(ms)

    def recent(self) -> float | None:
        with self.lock:
            return sum(self.window) / len(self.window) if self.window else None


class RunStats:
    def __init__(self, window: int = 120):
        self.stages = {name: StageTimes(window) for name in STAGES + ("parity",)}
        self.frames_in = 0
        self.frames_out = 0
        self.frames_with_faces = 0
        self.faces_found = 0
        self.max_faces = 0
        self.out_stamps = collections.deque(maxlen=window)
        self.started = time.perf_counter()
        self.first_out: float | None = None
        self.last_out: float | None = None
        self.rss_start = rss_mb()
        self.rss_peak = self.rss_start
        self.rss_samples = collections.deque(maxlen=64)  # (frames_out, MB), every 64 frames
        self.parity = ParityStats()

    def frame_out(self) -> None:
        now = time.perf_counter()
        self.frames_out += 1
        self.out_stamps.append(now)
        self.first_out = self.first_out or now
        self.last_out = now
        if self.frames_out % 64 == 0:
            rss = rss_mb()
            self.rss_peak = max(self.rss_peak, rss)
            self.rss_samples.append((self.frames_out, round(rss, 1)))

    def fps(self) -> float | None:
        stamps = list(self.out_stamps)
        if len(stamps) < 2 or stamps[-1] <= stamps[0]:
            return None
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def live(self) -> dict:
        fps = self.fps()
        return {"fps": None if fps is None else round(fps, 2),
                "frames_in": self.frames_in, "frames_out": self.frames_out,
                "stage_ms": {k: (None if v.recent() is None else round(v.recent(), 2))
                             for k, v in self.stages.items()},
                "parity": self.parity.live()}


class ParityStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.checks = 0
        self.faces = 0
        self.psnr = LatencyHistogram()  # reused as a compact distribution of dB values
        self.psnr_min: float | None = None
        self.psnr_last: float | None = None
        self.max_err = 0
        self.max_err_last: int | None = None
        self.warnings = 0
        self.failed_checks = 0
        self.threshold: tuple[str, float] | None = None
        self.error: str | None = None

    def add(self, psnr: float, max_err: int, ok: bool, faces: int) -> None:
        with self.lock:
            self.checks += 1
            self.faces += faces
            self.psnr.add(psnr)
            self.psnr_min = psnr if self.psnr_min is None else min(self.psnr_min, psnr)
            self.psnr_last = psnr
            self.max_err = max(self.max_err, max_err)
            self.max_err_last = max_err
            if not ok:
                self.failed_checks += 1

    def live(self) -> dict | None:
        if not self.checks and not self.error:
            return None
        return {"checks": self.checks, "max_abs_err": self.max_err_last,
                "psnr_db": None if self.psnr_last is None else round(self.psnr_last, 2),
                "failed": self.failed_checks, "error": self.error}

    def summary(self) -> dict:
        with self.lock:
            out: dict[str, Any] = {"checks": self.checks, "faces": self.faces,
                                   "failed_checks": self.failed_checks, "error": self.error}
            if self.threshold:
                out["threshold"] = {"metric": self.threshold[0], "value": self.threshold[1]}
            if self.checks:
                out.update(psnr_db={"min": round(self.psnr_min, 2),
                                    "mean": round(self.psnr.total / self.psnr.count, 2),
                                    "last": round(self.psnr_last, 2)},
                           max_abs_err=int(self.max_err),
                           passed=self.failed_checks == 0 and self.error is None)
            return out
