"""The machine's measured limits: chains of dense products through the same runtimes the engines
use, in the same run. An engine's achieved rate (its network's operation count / its time) as a
fraction of the ceiling of its runtime and precision says how much is left on the table.

Two kernels per size n, the fastest kept for each runtime and precision:
  matmul   Y = X @ W1 @ ... @ W4, X (n, n) fed per call, the W (n, n) constants;
  conv3x3  eight 3x3 convolutions of n/4 channels at 32x32, pad 1 (a residual block's layer:
           n = 1024 is StarGAN v1's 256 channels; the runtimes convolve through other kernels
           than they multiply matrices with, and on CPUs with AMX a chain of int8 convolutions
           ran 1.3x OpenVINO's fastest int8 matmul).
A chain, not one product, because one product's call also converts its fp32 input and output
(quantizes them, for int8), which a network pays once, not per layer: on a 2-core Xeon with AMX
one 2048-sided int8 product ran at 2349 GFLOP/s through OpenVINO and four chained at 3605, and an
int8 network (4238) ran faster than the single-product "ceiling". Sizes: 1024 and 2048, since AMX
tiles need long products (bf16 and int8 1.3-1.5x faster at 2048 than at 1024); fp32 is the same.
  fp32  plain MatMul / Conv;
  bf16  the same graphs with OpenVINO's bf16 inference hint / torch bf16 tensors;
  int8  each product's input through QuantizeLinear (uint8, zero point 128) / DequantizeLinear
        and int8 weights + DequantizeLinear (per output channel for convolutions), the form of
        the engines' int8 graphs: ONNX Runtime runs it with its U8S8 integer kernels, OpenVINO
        with its int8 ones.
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
MATMUL_DEPTH, CONV_DEPTH, CONV_SIDE = 4, 8, 32


def kernels(size: int) -> dict[str, dict]:
    """{name: shape facts} for one size: what `measure` times."""
    channels = max(1, size // 4)
    return {
        f"matmul {size}x{size} x{MATMUL_DEPTH}": {
            "kind": "matmul", "input": (size, size), "weight": (size, size),
            "flop": 2.0 * size ** 3 * MATMUL_DEPTH},
        f"conv3x3 {channels}ch {CONV_SIDE}x{CONV_SIDE} x{CONV_DEPTH}": {
            "kind": "conv", "input": (1, channels, CONV_SIDE, CONV_SIDE),
            "weight": (channels, channels, 3, 3),
            "flop": 2.0 * channels * channels * 9 * CONV_SIDE ** 2 * CONV_DEPTH},
    }


def _depth(kernel: dict) -> int:
    return CONV_DEPTH if kernel["kind"] == "conv" else MATMUL_DEPTH


def _fan_in(kernel: dict) -> int:
    shape = kernel["weight"]
    return int(np.prod(shape[1:])) if kernel["kind"] == "conv" else shape[0]


def _weights(kernel: dict, int8: bool, rng) -> list[np.ndarray]:
    """Scaled so activations keep about unit size along the chain (no overflow, no denormals)."""
    shape, fan_in = kernel["weight"], _fan_in(kernel)
    if int8:
        return [rng.integers(-127, 128, shape, dtype=np.int8) for _ in range(_depth(kernel))]
    return [(rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
            for _ in range(_depth(kernel))]


def _graph(kernel: dict, int8: bool) -> onnx.ModelProto:
    conv = kernel["kind"] == "conv"
    shape, fan_in = kernel["weight"], _fan_in(kernel)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zp")]
    nodes, current = [], "x"
    for i, w in enumerate(_weights(kernel, int8, np.random.default_rng(0))):
        out = "y" if i == _depth(kernel) - 1 else f"h{i}"
        operand = f"w{i}"
        if int8:
            per_channel = (shape[0],) if conv else ()  # one scale per output channel for Conv
            # int8 weights of spread ~73: this scale gives the float product unit size
            scale = np.full(per_channel, 1.0 / (73.0 * np.sqrt(fan_in)), np.float32)
            inits += [numpy_helper.from_array(w, f"w{i}_q"),
                      numpy_helper.from_array(scale, f"w{i}_scale"),
                      numpy_helper.from_array(np.zeros(per_channel, np.int8), f"w{i}_zp")]
            nodes += [helper.make_node("QuantizeLinear", [current, "x_scale", "x_zp"], [f"q{i}"]),
                      helper.make_node("DequantizeLinear", [f"q{i}", "x_scale", "x_zp"], [f"d{i}"]),
                      helper.make_node("DequantizeLinear", [f"w{i}_q", f"w{i}_scale", f"w{i}_zp"],
                                       [operand], axis=0)]
            current = f"d{i}"
        else:
            inits.append(numpy_helper.from_array(w, operand))
        nodes.append(helper.make_node("Conv", [current, operand], [out], pads=[1, 1, 1, 1])
                     if conv else helper.make_node("MatMul", [current, operand], [out]))
        current = out
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(kernel["input"]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "ceiling", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
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
    """{runtime: {precision: GFLOP/s}}, the best kernel, for what is installed, with each
    kernel's own figures under "by_kernel"; errors are recorded, not raised."""
    out: dict = {"kernels": [], "by_kernel": {}}
    for size in sizes:
        for name, kernel in kernels(size).items():
            one = _measure_kernel(name, kernel, seconds, log)
            out["kernels"].append(name)
            out["by_kernel"][name] = one
            for runtime, per_precision in one.items():
                if runtime == "errors":
                    out.setdefault("errors", {}).update(
                        {f"{key} ({name})": text for key, text in per_precision.items()})
                    continue
                kept = out.setdefault(runtime, {})
                for precision, value in per_precision.items():
                    if kept.get(precision) is None or (value is not None and value > kept[precision]):
                        kept[precision] = value
    return out


def _measure_kernel(name: str, kernel: dict, seconds: float, log=None) -> dict:
    x = np.random.default_rng(1).standard_normal(kernel["input"]).astype(np.float32)
    out: dict[str, dict] = {}

    def attempt(runtime: str, precision: str, make):
        try:
            call = make()
            out.setdefault(runtime, {})[precision] = round(_rate(call, kernel["flop"], seconds), 1)
        except Exception as exc:  # noqa: BLE001 - a missing runtime or kernel is a finding
            out.setdefault(runtime, {})[precision] = None
            out.setdefault("errors", {})[f"{runtime} {precision}"] = str(exc)[:200]
        if log:
            log(f"ceiling {runtime} {precision} ({name}): {out[runtime][precision]} GFLOP/s")

    with tempfile.TemporaryDirectory(prefix="stargan-rt-ceiling-") as tmp:
        paths = {}
        for kind in ("fp32", "int8"):
            paths[kind] = Path(tmp) / f"ceiling-{kind}.onnx"
            onnx.save(_graph(kernel, kind == "int8"), str(paths[kind]))

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
            import torch.nn.functional as F

            a = torch.from_numpy(x).to(dtype)
            ws = [torch.from_numpy(w).to(dtype)
                  for w in _weights(kernel, False, np.random.default_rng(0))]
            product = ((lambda h, w: F.conv2d(h, w, padding=1)) if kernel["kind"] == "conv"
                       else torch.mm)

            def call():
                with torch.no_grad():
                    h = a
                    for w in ws:
                        h = product(h, w)
            return call

        attempt("torch", "fp32", lambda: torch_call(__import__("torch").float32))
        attempt("torch", "bf16", lambda: torch_call(__import__("torch").bfloat16))
        attempt("onnxruntime", "fp32", lambda: ort_call("fp32"))
        attempt("onnxruntime", "int8", lambda: ort_call("int8"))
        attempt("openvino", "fp32", lambda: ov_call("fp32", "f32"))
        attempt("openvino", "bf16", lambda: ov_call("fp32", "bf16"))
        attempt("openvino", "int8", lambda: ov_call("int8", "f32"))
    return out
