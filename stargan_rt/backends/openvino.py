"""OpenVINO on the CPU: the fast CPU engine.

Precisions: ``fp32`` runs the fp32 graph with the f32 inference hint; ``fp16`` means the CPU's
native reduced precision, bf16 where OPTIMIZATION_CAPABILITIES lists BF16 (AMX / AVX512-BF16),
else f16 where it lists FP16, else f32 (said when chosen); ``int8`` runs NNCF's int8 graph
(OpenVINO maps its quantize pairs onto INT8 kernels).

In an int8 build the float parts (the normalisation layers, the convolutions the accuracy guard
kept in float) and the v2 FAN run at bf16 where bf16 pays on this CPU (``bf16_pays``: measured,
not read from the flags: AVX512-BF16 without AMX runs OpenVINO's bf16 at 0.7x fp32 on an Intel
Xeon and at 1.9x on an AMD EPYC). The compiled model is exported (``CompiledModel.export_model``)
into the engine cache and imported on the next start.
"""
from __future__ import annotations

import functools
import os
import queue
import time
from pathlib import Path

import numpy as np

from stargan_rt.backends.base import Backend, Engine, GraphChoice, TargetStatus, TensorSpec
from stargan_rt.errors import UserError

TARGET = "openvino"
SUFFIX = ".ov.blob"
DEVICE = "CPU"


def _ov():
    return BACKEND.require("openvino")


def capabilities() -> list[str]:
    return [str(c) for c in _ov().Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]


def reduced_precision() -> str:
    """The reduced float precision this CPU runs natively: bf16, else f16, else f32."""
    caps = capabilities()
    if "BF16" in caps:
        return "bf16"
    if "FP16" in caps:
        return "f16"
    return "f32"


BF16_ENV = "STARGAN_RT_OPENVINO_BF16"   # "1" / "0": skip the measurement (reproducible builds)
# bf16 must beat fp32 by this much. Measured: 0.7x on an Intel Xeon without AMX, 1.5-1.9x on an
# AMD EPYC (1.5 when its neighbours load the host). A threshold near either would let a noisy
# probe change the engines from one run to the next.
BF16_MIN_GAIN = 1.2


def bf16_pays() -> bool:
    """Whether this CPU runs OpenVINO's bf16 clearly faster than f32 (``bf16_gain``), unless
    STARGAN_RT_OPENVINO_BF16 says so. The flags cannot tell: AVX512-BF16 is listed both where
    it is slower than fp32 and where it is twice as fast."""
    forced = os.environ.get(BF16_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return "BF16" in capabilities() and bf16_gain() >= BF16_MIN_GAIN


@functools.cache
def bf16_gain() -> float:
    """bf16 speed over f32 on this CPU: a 512x512 matrix product at each inference hint, best
    of a dozen calls (about 0.1 s, once per process)."""
    ov = _ov()
    size = 512
    x = ov.opset13.parameter([size, size], ov.Type.f32, name="x")
    w = ov.opset13.constant(np.random.default_rng(0).standard_normal((size, size), np.float32))
    model = ov.Model([ov.opset13.matmul(x, w, False, False)], [x], "probe")
    feed = np.random.default_rng(1).standard_normal((size, size), np.float32)
    best = {}
    for hint in ("f32", "bf16"):
        request = ov.Core().compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": hint,
                                                          "NUM_STREAMS": 1}).create_infer_request()
        request.infer({0: feed})
        times = []
        for _ in range(12):
            start = time.perf_counter()
            request.infer({0: feed})
            times.append(time.perf_counter() - start)
        best[hint] = min(times)
    return best["f32"] / best["bf16"]


def inference_hint(precision: str) -> str:
    if precision == "fp16":
        return reduced_precision()
    if precision == "int8":
        # The INT8 kernels run the quantized convolutions; what stays float (normalisation, the
        # guard's float convolutions) runs at bf16 only where that pays (see bf16_pays).
        return "bf16" if bf16_pays() else "f32"
    return "f32"


def _config(precision: str, streams: int = 1) -> dict:
    config = {"INFERENCE_PRECISION_HINT": inference_hint(precision)}
    if streams > 1:   # CPU streams: each runs one request on its share of the cores
        config["NUM_STREAMS"] = streams
    return config


class OvEngine(Engine):
    target = TARGET

    def __init__(self, compiled, precision: str, path: Path | None, streams: int = 1):
        self.compiled = compiled
        self.precision = precision
        self.path = path
        self.streams = streams
        self.hint = inference_hint(precision)
        self.inputs = [self._spec(port) for port in compiled.inputs]
        self.outputs = [self._spec(port) for port in compiled.outputs]
        # One infer request per stream: concurrent calls each take a free one.
        self._free: queue.Queue = queue.Queue()
        for _ in range(streams):
            self._free.put(compiled.create_infer_request())
        self._closed = False

    @staticmethod
    def _spec(port) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()))

    def _run(self, feeds):
        while True:   # wait for a free request; a close meanwhile ends the wait
            if self._closed:
                raise UserError(f"{self.path}: this OpenVINO engine was closed")
            try:
                request = self._free.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        try:
            # the feeds are contiguous arrays of the inputs' types (Engine.run) and outlive
            # this synchronous call: OpenVINO reads them in place instead of copying them
            # (0.1 ms of the caller's CPU per call, measured)
            request.infer(feeds, share_inputs=True)
            return {spec.name: request.get_tensor(spec.name).data.copy()
                    for spec in self.outputs}
        finally:
            self._free.put(request)

    def close(self) -> None:
        # Idle requests are released now; a call in flight keeps its own until it returns.
        self._closed = True
        self.compiled = None
        while True:
            try:
                self._free.get_nowait()
            except queue.Empty:
                return

    def describe(self) -> str:
        streams = f", {self.streams} streams" if self.streams > 1 else ""
        return (f"openvino {BACKEND.runtime_version().split('-')[0]} {self.precision} "
                f"(CPU, {self.hint}{streams})")


def compile_onnx(onnx_path: Path, precision: str) -> "OvEngine":
    ov = _ov()
    core = ov.Core()
    try:
        model = core.read_model(str(onnx_path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
        raise UserError(f"{onnx_path}: OpenVINO cannot read this ONNX model ({str(exc)[:300]}); "
                        "the file is corrupt or truncated: re-export it") from None
    try:
        compiled = core.compile_model(model, DEVICE, _config(precision))
    except Exception as exc:
        raise UserError(f"{onnx_path}: OpenVINO cannot compile this model for the CPU "
                        f"({str(exc)[:300]}); check the graph with `stargan-rt parity --target "
                        "onnxruntime` or report it") from None
    return OvEngine(compiled, precision, Path(onnx_path))


class OpenVinoBackend(Backend):
    name = TARGET
    suffix = SUFFIX
    install_hint = "pip install openvino"

    def probe(self) -> TargetStatus:
        try:
            import openvino as ov
        except ImportError:
            return TargetStatus(TARGET, False, detail="not installed (pip install openvino)")
        devices = ov.Core().available_devices
        if DEVICE not in devices:
            return TargetStatus(TARGET, False, ov.__version__, f"no CPU device (found {devices})")
        return TargetStatus(TARGET, True, ov.__version__, ", ".join(devices))

    def runtime_version(self) -> str:
        return _ov().get_version()

    def device_name(self) -> str:
        return str(_ov().Core().get_property(DEVICE, "FULL_DEVICE_NAME"))

    def build_options(self, precision: str) -> str:
        return "hint=" + inference_hint(precision)

    def support_precision(self, precision: str) -> str:
        # At bf16 the FAN's masks check 32-36 dB against PyTorch and the translation loses about
        # 1 dB: inside an int8 build's 30 dB, not an fp16 build's 40 dB.
        return "fp16" if precision == "int8" and bf16_pays() else "fp32"

    def int8_float_precision(self) -> str:
        return "bf16" if bf16_pays() else "fp32"

    def graph_for(self, network: str, precision: str, arch: str) -> GraphChoice:
        # fp16: OpenVINO converts the fp32 graph itself (the bf16 / f16 inference hint)
        return GraphChoice("fp32" if precision == "fp16" else precision)

    def compile(self, onnx_path, precision, out, log, cache) -> None:
        """Compile for the CPU and export the compiled model (imported on the next start)."""
        with compile_onnx(onnx_path, precision) as engine:
            blob = engine.compiled.export_model()   # bytes, or a BytesIO in recent releases
        out.write_bytes(blob.getvalue() if hasattr(blob, "getvalue") else blob)

    def load(self, path, precision, streams: int = 1) -> OvEngine:
        ov = _ov()
        try:
            compiled = ov.Core().import_model(Path(path).read_bytes(), DEVICE,
                                              _config(precision, streams))
        except Exception as exc:
            raise UserError(f"{path}: OpenVINO cannot import this compiled model "
                            f"({str(exc)[:200]}); it is corrupt or from another OpenVINO "
                            "version: rebuild it with `stargan-rt build --target openvino`") from None
        return OvEngine(compiled, precision, Path(path), streams)


BACKEND = OpenVinoBackend()
