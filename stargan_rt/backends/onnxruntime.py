"""ONNX Runtime: the portable fallback and the reference runner for graph checks.

CPU provider everywhere; the CUDA and TensorRT execution providers are used when the installed
onnxruntime has them (onnxruntime-gpu). The "engine" is ONNX Runtime's optimised graph, saved
into the cache so a later start skips the graph optimisation.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from stargan_rt.backends.base import Backend, Engine, TargetStatus, TensorSpec, cpu_name
from stargan_rt.errors import UserError

TARGET = "onnxruntime"
SUFFIX = ".ort.onnx"
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

_ORT_TYPES = {
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(float)": np.float32,
    "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
    "tensor(double)": np.float64, "tensor(bool)": np.bool_,
}


def _ort():
    return BACKEND.require("onnxruntime")


def providers() -> list[str]:
    available = _ort().get_available_providers()
    chosen = [p for p in _GPU_PROVIDERS if p in available]
    return chosen + ["CPUExecutionProvider"]


class OrtEngine(Engine):
    target = TARGET

    def __init__(self, path: str | Path, precision: str = "fp32", optimized_out: Path | None = None,
                 threads: int = 0, streams: int = 1):
        ort = _ort()
        self.path = Path(path)
        self.precision = precision
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.streams = streams
        if streams > 1 and not threads:   # concurrent runs share the cores
            threads = max(1, (os.cpu_count() or 1) // streams)
        if threads:
            options.intra_op_num_threads = threads
        if optimized_out is not None:
            # Saved at the extended level: everything but the hardware-specific layouts.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(optimized_out)
        else:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers())
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise UserError(f"{self.path}: ONNX Runtime cannot load this model ({str(exc)[:300]}); "
                            "the file is corrupt, truncated or not an ONNX model: re-export it "
                            "(`stargan-rt build` does so when given the bundle)") from None
        self.inputs = [TensorSpec(i.name, tuple(i.shape), np.dtype(_ORT_TYPES[i.type]))
                       for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, tuple(o.shape), np.dtype(_ORT_TYPES[o.type]))
                        for o in self.session.get_outputs()]
        self._names = [o.name for o in self.outputs]
        self._lock = threading.Lock()

    def _run(self, feeds):
        # InferenceSession.run may be called from several threads at once (streams > 1); the
        # lock only guards the hand-over against a concurrent close.
        with self._lock:
            session = self.session
        if session is None:
            raise UserError(f"{self.path}: this ONNX Runtime engine was closed")
        values = session.run(self._names, feeds)
        return dict(zip(self._names, values))

    def close(self) -> None:
        with self._lock:
            self.session = None

    def describe(self) -> str:
        if self.session is None:
            return f"onnxruntime {self.precision} (closed)"
        used = self.session.get_providers()[0].replace("ExecutionProvider", "")
        return f"onnxruntime {BACKEND.runtime_version()} {self.precision} ({used})"


class OnnxRuntimeBackend(Backend):
    name = TARGET
    suffix = SUFFIX
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for the CUDA / TensorRT providers)"

    def probe(self) -> TargetStatus:
        try:
            import onnxruntime as ort
        except ImportError:
            return TargetStatus(TARGET, False, detail="not installed (pip install onnxruntime)")
        return TargetStatus(TARGET, True, ort.__version__, ", ".join(ort.get_available_providers()))

    def runtime_version(self) -> str:
        return _ort().__version__

    def device_name(self) -> str:
        gpu = [p for p in providers() if p != "CPUExecutionProvider"]
        return cpu_name() + (" + " + "+".join(gpu) if gpu else "")

    def build_options(self, precision: str) -> str:
        return "providers=" + ",".join(providers())

    def compile(self, onnx_path, precision, out, log, cache) -> None:
        """Optimise the graph with ONNX Runtime and save the result at ``out``. With a GPU
        provider the graph is partly compiled by that provider and cannot be saved: the cached
        engine is then the ONNX graph itself."""
        if providers() != ["CPUExecutionProvider"]:
            out.write_bytes(Path(onnx_path).read_bytes())
            return
        OrtEngine(onnx_path, precision, optimized_out=out).close()  # the session wrote ``out``
        if not out.exists():
            raise UserError(f"ONNX Runtime did not write its optimised model to {out}")

    def load(self, path, precision, streams: int = 1) -> OrtEngine:
        return OrtEngine(path, precision, streams=streams)


BACKEND = OnnxRuntimeBackend()
