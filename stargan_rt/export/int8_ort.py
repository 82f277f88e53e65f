"""int8 for ONNX Runtime's CPU kernels: ONNX Runtime's own ``quantize_static``.

ONNX Runtime's x86 integer convolutions are fast with uint8 (asymmetric) activations and int8
weights (U8S8), and only when a Conv sits between DequantizeLinear and QuantizeLinear, so that
the graph optimizer fuses it into one QLinearConv. The Q/DQ graph made for TensorRT (symmetric
int8 activations, convolution outputs left in float) runs in ONNX Runtime as float convolutions
with extra (de)quantization around them: no faster than fp32 (measured with `stargan-rt bench`).

So the onnxruntime target's int8 graph is quantize_static's QDQ form with uint8 activations,
per-channel int8 weights and quantized convolution outputs, Conv / ConvTranspose only (the
normalisation layers, AdaIN arithmetic and frame I/O stay float), with the same accuracy guard
as the other int8 graphs (convolutions nearest the input back to fp32 until the check passes).
ONNX Runtime has no integer ConvTranspose, so stride-2 transposed convolutions are first split
into four phase convolutions (export/phase_convs.py), which it runs as QLinearConv.
``quantize_defaults`` is the peer the bench compares with: quantize_static with its default
settings (every op type it knows) and per-channel weights.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

QUANTIZED_OPS = ["Conv", "ConvTranspose"]


def _reader(feeds: dict[str, np.ndarray], batch: int = 4):
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            count = len(next(iter(feeds.values())))
            self.batches = iter([{k: np.ascontiguousarray(v[i:i + batch])
                                  for k, v in feeds.items()} for i in range(0, count, batch)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


@contextlib.contextmanager
def _quiet():
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def quantize_defaults(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                      feeds: dict[str, np.ndarray]) -> Path:
    """ONNX Runtime's quantize_static as a user would call it: QDQ, uint8 activations, int8
    per-channel weights, MinMax calibration, every op type it can quantize."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with _quiet():
        quantize_static(str(fp32_path), str(out_path), _reader(feeds),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return Path(out_path)


def _quantize_convs(fp32_path: Path, out_path: Path, feeds: dict, exclude: list[str],
                    cache: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with _quiet():
        quantize_static(str(fp32_path), str(out_path), _reader(feeds),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=exclude,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options={"QuantizeBias": True},
                        calibration_cache_path=str(cache))  # the guard's retries reuse it


def to_onnxruntime_int8(fp32_path: str | os.PathLike, model: onnx.ModelProto,
                        frames: np.ndarray, aux: dict | None = None,
                        min_psnr: float | None = None, log=None) -> tuple[onnx.ModelProto, dict]:
    """The onnxruntime target's int8 graph (see the module doc). Returns (model, info)."""
    from stargan_rt.export.calibration import calibration_feeds
    from stargan_rt.export.graph import name_nodes as _name_nodes
    from stargan_rt.export.graph import run_batched
    from stargan_rt.export.int8 import CHECK_FRAMES, INT8_MIN_PSNR
    from stargan_rt.export.phase_convs import split_transposed_convs
    from stargan_rt.metrics import worst_psnr as _psnr

    def _run_batched(path, feeds):
        return run_batched(path, feeds, 4)

    min_psnr = INT8_MIN_PSNR if min_psnr is None else min_psnr
    fp32_path = Path(fp32_path)
    feeds = calibration_feeds(fp32_path, model, frames, aux)
    count = len(frames)
    check = np.linspace(0, count - 1, min(CHECK_FRAMES, count)).round().astype(int)
    check_feeds = {k: v[check] for k, v in feeds.items()}
    model = onnx.ModelProto.FromString(model.SerializeToString())
    split = split_transposed_convs(model)  # ONNX Runtime has no integer ConvTranspose
    _name_nodes(model)
    convs = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    # The convolution writing the 3-channel image stays float: its quantized output would step
    # the picture before tanh. The one reading the image is tried in int8 and is the first the
    # guard returns to fp32 (on the official-size v1 it has to).
    fixed = [convs[-1]] if len(convs) > 2 else []
    order = [c for c in convs if c not in fixed]
    with tempfile.TemporaryDirectory(prefix="stargan-rt-int8-ort-") as tmp:
        named, out, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "cal"
        onnx.save(model, str(named))
        reference = _run_batched(named, check_feeds)
        kept, step = 0, 1
        _quantize_convs(named, out, feeds, fixed, cache)
        psnr = _psnr(_run_batched(out, check_feeds), reference)
        while psnr < min_psnr and kept < len(order):
            kept = min(len(order), kept + step)
            step *= 2
            _quantize_convs(named, out, feeds, fixed + order[:kept], cache)
            psnr = _psnr(_run_batched(out, check_feeds), reference)
            if log:
                log(f"int8 (onnxruntime U8S8) check {psnr:.1f} dB with {kept} more convs in fp32")
        quantized = onnx.load(str(out))
    info = {"quantizer": "onnxruntime quantize_static U8S8 (QDQ, Conv outputs quantized)",
            "check_psnr_db": round(float(psnr), 2), "check_frames": int(len(check)),
            "quantized_convs": len(order) - kept, "fp32_convs": len(fixed) + kept,
            "transposed_convs_split": split, "min_psnr_db": min_psnr}
    return quantized, info
