"""One small engine interface shared by every target.

An engine is loaded from a file (ONNX, OpenVINO blob or TensorRT plan), describes its inputs and
outputs, and runs a batch: ``run({name: array}) -> {name: array}``. That is all the runtime, the
parity check and the benchmarks use, so a target is one module here. No backend module imports
its runtime library (or torch) at import time: a device needs only the one it uses.
"""
from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from stargan_rt.errors import UserError

TARGETS = ("tensorrt", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "int8")

# What to install when a target's runtime is missing.
INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu for the CUDA / TensorRT providers)",
    "openvino": "pip install openvino",
    "tensorrt": ("pip install 'stargan-rt[tensorrt]' (tensorrt + pycuda) on a machine with an "
                 "NVIDIA GPU and driver; Jetson: TensorRT comes with JetPack"),
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class TensorSpec:
    """An engine input or output: name, shape (None / -1 for dynamic axes) and numpy dtype."""

    name: str
    shape: tuple
    dtype: np.dtype

    def describe(self) -> str:
        dims = ",".join("N" if (d is None or (isinstance(d, int) and d < 0)) else str(d)
                        for d in self.shape)
        return f"{self.name} {np.dtype(self.dtype).name}[{dims}]"


class Engine:
    """Base class: subclasses fill inputs / outputs and implement ``_run``."""

    target: str = ""
    precision: str = "fp32"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    path: Path | None = None
    max_batch: int | None = None  # None: any batch size

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [spec.name for spec in self.inputs if spec.name not in feeds]
        if missing:
            raise UserError(f"{self.describe()}: missing input(s) {missing}; the engine takes "
                            + ", ".join(s.describe() for s in self.inputs))
        feeds = {spec.name: np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
                 for spec in self.inputs}
        batch = _batch_size(feeds)
        if self.max_batch is None or batch <= self.max_batch:
            return self._run(feeds)
        # Larger batches than the engine's profile: run in chunks and concatenate.
        parts = [self._run({k: v[i:i + self.max_batch] for k, v in feeds.items()})
                 for i in range(0, batch, self.max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def input(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def describe(self) -> str:
        return f"{self.target} {self.precision}"

    def signature(self) -> str:
        return ("inputs: " + ", ".join(s.describe() for s in self.inputs) + "; outputs: "
                + ", ".join(s.describe() for s in self.outputs))


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    sizes = {a.shape[0] for a in feeds.values() if a.ndim > 0}
    return max(sizes) if sizes else 1


def cpu_name() -> str:
    """A stable name for this CPU (part of the engine cache key for CPU targets)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def require(module: str, target: str):
    """Import a target's runtime library or raise a UserError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"target {target} is not available: cannot import {module} ({exc}); "
                        f"install it with: {INSTALL_HINTS[target]}") from None


def backend_module(target: str):
    """The backend module for a target name (lazy: importing it imports no runtime)."""
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; expected one of auto, {', '.join(TARGETS)}")
    return importlib.import_module(f"stargan_rt.backends.{target}")
