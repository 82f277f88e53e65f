"""The engine interface and the backend interface every target implements.

An ``Engine`` is loaded from a file (ONNX, OpenVINO blob or TensorRT plan), describes its inputs
and outputs, runs a batch (``run({name: array}) -> {name: array}``) and is closed when done. That
is all the runtime, the parity check and the benchmarks use.

A ``Backend`` is one target: whether it can run here (and if not why, and what to install), the
parts of the engine cache key that depend on the machine, which ONNX graph it wants for a network
at a precision, how it compiles that graph into an engine file and how it loads one. The targets
are registered, in ``auto``'s order of preference, in ``stargan_rt/backends/__init__.py``. No
backend module imports its runtime library (or torch) at import time: a device needs only the one
it uses.
"""
from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from stargan_rt.errors import UserError

if TYPE_CHECKING:
    from stargan_rt.backends.cache import EngineCache

PRECISIONS = ("fp32", "fp16", "int8")

Log = Callable[[str], None]


@dataclass
class TargetStatus:
    """Whether a target can run on this machine: its version, and the devices / providers when
    available, the reason when not."""

    name: str
    available: bool
    version: str = ""
    detail: str = ""


@dataclass(frozen=True)
class GraphChoice:
    """The ONNX graph a backend wants for one network: at which precision (fp32 = the exported
    graph as is) and whether with AdaIN fused into plugin nodes; ``note`` is said to the user."""

    precision: str = "fp32"
    fuse_adain: bool = False
    note: str = ""


class Backend:
    """One engine target. Subclasses set the class attributes and implement the methods."""

    name: str = ""            # the --target name
    suffix: str = ""          # engine file suffix in the cache
    install_hint: str = ""    # what to install when the runtime is missing

    def probe(self) -> TargetStatus:
        """Can this target run here? Imports the runtime library (only here, lazily)."""
        raise NotImplementedError

    def runtime_version(self) -> str:
        raise NotImplementedError

    def device_name(self) -> str:
        raise NotImplementedError

    def build_options(self, precision: str) -> str:
        """Build settings that change the engine, as text (part of the cache key)."""
        return ""

    def support_precision(self, precision: str) -> str:
        """The precision of the per-frame support networks (the v2 FAN) in a build at
        ``precision``: fp32 unless this target has a float precision that is faster here and
        within that build's accuracy budget."""
        return "fp32"

    def int8_float_precision(self) -> str:
        """The precision the float parts of this target's int8 engine run at (its accuracy guard
        checks the graph at the same one)."""
        return "fp32"

    def graph_for(self, network: str, precision: str, arch: str) -> GraphChoice:
        """The graph to compile for ``network`` running at ``precision`` (the precision is in
        the graph by default)."""
        return GraphChoice(precision)

    def compile(self, onnx_path: Path, precision: str, out: Path, log: Log,
                cache: EngineCache) -> None:
        """Compile ``onnx_path`` into the engine file ``out`` (``cache`` holds auxiliary files
        such as TensorRT's timing cache)."""
        raise NotImplementedError

    def load(self, path: Path, precision: str, streams: int = 1) -> Engine:
        """Load a compiled engine. ``streams``: how many calls may run at once, each on its
        share of the cores (throughput for a pipeline with frames in flight); 1: one call at a
        time on every core (the lowest latency)."""
        raise NotImplementedError

    def require(self, module: str):
        """Import this target's runtime library or raise a UserError saying what to install."""
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"target {self.name} is not available: cannot import {module} "
                            f"({exc}); install it with: {self.install_hint}") from None


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
    """Base class: subclasses fill inputs / outputs and implement ``_run`` (and ``close`` when they
    hold more than Python memory)."""

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

    def close(self) -> None:
        """Release the engine's runtime resources (sessions, device memory); idempotent. The
        engine cannot run afterwards."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
