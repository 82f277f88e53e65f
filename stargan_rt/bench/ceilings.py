"""The machine's measured limits: dense matrix products through the same runtimes the engines
use, in the same run. An engine's achieved rate (its network's operation count / its time) as a
fraction of the ceiling of its runtime and precision says how much is left on the table.

Graphs: Y = X @ W with X (M, K) fed per call and W (K, N) a constant, M = N = K = each of
SIZES, the fastest kept: on CPUs with AMX tiles a 1024-sided product is too short to reach the
tiles' rate (on a 2-core Xeon with AMX, bf16 and int8 ran 1.3-1.5x faster at 2048 than at
1024, and an int8 network ran faster than the 1024 "ceiling"), while fp32 gains nothing.
  fp32  plain MatMul;
  bf16  the same graph with OpenVINO's bf16 inference hint / torch bf16 tensors;
  int8  X through QuantizeLinear (uint8, zero point 128) / DequantizeLinear and W as int8
        weights + DequantizeLinear: ONNX Runtime fuses this into its U8S8 integer matmul,
        OpenVINO into its int8 kernels.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZES = (1024, 2048)
SECONDS = 0.6  # per ceiling, after a warm-up


def _matmul_graph(size: int, int8: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])
    if int8:
        w = rng.integers(-127, 128, (size, size), dtype=np.int8)
        inits += [numpy_helper.from_array(w, "w_q"),
                  numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
                  numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(128, np.uint8), "x_zp")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"]),
                  helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wd"]),
                  helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    else:
        inits.append(numpy_helper.from_array(
            rng.standard_normal((size, size)).astype(np.float32), "w"))
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
    graph = helper.make_graph(nodes, "matmul", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _rate(call, flop: float, seconds: float) -> float:
    call()
    call()
    count, start = 0, time.perf_counter()
    best = float("inf")
    while time.perf_counter() - start < seconds or count < 3:
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
        count += 1
    return flop / best / 1e9  # GFLOP/s at the best call: the ceiling, not the typical


def measure(sizes=SIZES, seconds: float = SECONDS, log=None) -> dict:
    """{runtime: {precision: GFLOP/s}}, the best of the matrix sizes, for what is installed,
    with each size's own figures under "by_size"; errors are recorded, not raised."""
    out: dict = {"matrix": " and ".join(f"{n}x{n} @ {n}x{n}" for n in sizes), "by_size": {}}
    for size in sizes:
        one = _measure_size(size, seconds, log)
        out["by_size"][str(size)] = one
        for runtime, per_precision in one.items():
            if runtime == "errors":
                out.setdefault("errors", {}).update(
                    {f"{key} ({size})": text for key, text in per_precision.items()})
                continue
            kept = out.setdefault(runtime, {})
            for precision, value in per_precision.items():
                if kept.get(precision) is None or (value is not None and value > kept[precision]):
                    kept[precision] = value
    return out


def _measure_size(size: int, seconds: float, log=None) -> dict:
    flop = 2.0 * size ** 3
    x = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    out: dict[str, dict] = {}

    def attempt(runtime: str, precision: str, make):
        try:
            call = make()
            out.setdefault(runtime, {})[precision] = round(_rate(call, flop, seconds), 1)
        except Exception as exc:  # noqa: BLE001 - a missing runtime or kernel is a finding
            out.setdefault(runtime, {})[precision] = None
            out.setdefault("errors", {})[f"{runtime} {precision}"] = str(exc)[:200]
        if log:
            log(f"ceiling {runtime} {precision} ({size}): {out[runtime][precision]} GFLOP/s")

    with tempfile.TemporaryDirectory(prefix="stargan-rt-ceiling-") as tmp:
        paths = {}
        for kind in ("fp32", "int8"):
            paths[kind] = Path(tmp) / f"matmul-{kind}.onnx"
            onnx.save(_matmul_graph(size, kind == "int8"), str(paths[kind]))

        def ort_call(kind):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(str(paths[kind]), options,
                                           providers=["CPUExecutionProvider"])
            return lambda: session.run(None, {"x": x})

        def ov_call(kind, hint):
            import openvino as ov

            compiled = ov.Core().compile_model(str(paths[kind]), "CPU",
                                               {"INFERENCE_PRECISION_HINT": hint})
            request = compiled.create_infer_request()
            return lambda: request.infer({"x": x})

        def torch_call(dtype):
            import torch

            a = torch.from_numpy(x).to(dtype)
            b = torch.from_numpy(x.T.copy()).to(dtype)

            def call():
                with torch.no_grad():
                    torch.mm(a, b)
            return call

        attempt("torch", "fp32", lambda: torch_call(__import__("torch").float32))
        attempt("torch", "bf16", lambda: torch_call(__import__("torch").bfloat16))
        attempt("onnxruntime", "fp32", lambda: ort_call("fp32"))
        attempt("onnxruntime", "int8", lambda: ort_call("int8"))
        attempt("openvino", "fp32", lambda: ov_call("fp32", "f32"))
        attempt("openvino", "bf16", lambda: ov_call("fp32", "bf16"))
        attempt("openvino", "int8", lambda: ov_call("int8", "f32"))
    return out
