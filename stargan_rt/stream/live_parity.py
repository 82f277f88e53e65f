"""Live parity: every N-th frame's crops through the PyTorch reference as well, in a thread of its
own, compared with what the engine made (PSNR, max error) against `stargan-rt parity`'s
thresholds. The reference (torch) is loaded lazily, on the first check."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from stargan_rt.metrics import max_abs_err, psnr
from stargan_rt.parity import Thresholds
from stargan_rt.stream.contracts import StreamTranslator, Target
from stargan_rt.stream.stats import ParityStats, StageTimes

PSNR_CAP = 100.0  # identical outputs (JSON has no infinity)


def psnr_and_max_err(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """uint8 images: (PSNR in dB capped at PSNR_CAP, max absolute error in levels)."""
    return min(PSNR_CAP, psnr(a, b, 255.0)), int(max_abs_err(a, b))


class LiveParity:
    def __init__(self, every: int, reference_factory: Callable[[], StreamTranslator],
                 precision: str, stats: ParityStats, times: StageTimes,
                 log: Callable[[str], None]):
        self.every = every
        self.reference_factory = reference_factory
        self.precision = precision
        self.stats = stats
        self.times = times
        self.log = log
        self.metric, self.limit = Thresholds().criterion(precision, is_uint8=True)
        self.stats.threshold = (self.metric, self.limit)
        self.reference: StreamTranslator | None = None
        self.applied: Target | None = None

    def due(self, index: int) -> bool:
        return index % self.every == 0

    def check(self, crops: np.ndarray, engine_out: np.ndarray, target: Target,
              style: np.ndarray | None) -> bool:
        """Compare one batch; False when the reference failed and parity is off for the run."""
        try:
            if self.reference is None:
                self.log("parity: loading the PyTorch reference ...")
                self.reference = self.reference_factory()
            if self.applied is not target:
                target.apply_to(self.reference)
                self.applied = target
            if style is not None:
                # v2: the engine draws z with numpy, the reference with torch; compare the
                # generator (and FAN) on the engine's own style vector
                self.reference.set_style_vector(style)
            t = time.perf_counter()
            ref_out = self.reference(crops)
            self.times.add((time.perf_counter() - t) * 1000)
        except Exception as exc:  # noqa: BLE001 - parity must never stop the stream
            self.stats.error = f"{type(exc).__name__}: {exc}"
            self.log(f"parity disabled: {self.stats.error}")
            return False
        value, max_err = psnr_and_max_err(engine_out, ref_out)
        ok = (max_err <= self.limit) if self.metric == "max_abs_err" else (value >= self.limit)
        self.stats.add(value, max_err, ok, len(crops))
        if not ok:
            self.stats.warnings += 1
            if self.stats.warnings <= 3 or self.stats.warnings % 50 == 0:
                self.log(f"WARNING parity below the {self.precision} threshold: PSNR "
                         f"{value:.1f} dB, max error {max_err} levels (needs {self.metric} "
                         f"{'<=' if self.metric == 'max_abs_err' else '>='} {self.limit:g})")
        return True
