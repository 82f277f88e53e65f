"""int8 precision graphs, with the accuracy guard.

int8: ONNX Runtime's quantize_static in QDQ format, the form TensorRT's explicit quantization and
OpenVINO read: QuantizeLinear/DequantizeLinear on the inputs and weights of Conv and
ConvTranspose only (the compute; no Q/DQ around InstanceNormalization, Resize, the AdaIN
arithmetic or the frame I/O), int8 symmetric activations (zero point 0), per-channel symmetric
weights (Conv axis 0, ConvTranspose axis 1), no output quantization, float biases. Calibrated
(99.99th percentile of |x| up to 128 px, max |x| above) on >= 256 real frames; the first and
last conv (image in / out, 3 channels) stay fp32. Accuracy guard: the int8 graph is compared
with the fp32 graph on 32 of the calibration frames; below INT8_MIN_PSNR (31 dB) convs go back to
fp32 from the input side, 1, 2, 4, ... more at a time, until it passes (recorded in the metadata
key ``int8``). Everything not quantized stays fp32. Quantize the unfused graph (ORT has to run it
to calibrate), then fuse AdaIN:
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from stargan_rt.errors import UserError
from stargan_rt.export.calibration import MIN_CALIBRATION_FRAMES, calibration_feeds
from stargan_rt.export.graph import name_nodes, prune_unused, run_batched
from stargan_rt.export.onnx_io import get_metadata
from stargan_rt.metrics import worst_psnr

QUANTIZED_OPS = ["Conv", "ConvTranspose"]
# dB vs the fp32 graph on calibration frames. Parity checks >= 30 dB against PyTorch on held-out
# frames: 1 dB of margin. At 32 the guard kept convolutions of the official-size v1 in fp32 that
# NNCF's own defaults quantize at 31.7 dB, which cost 1.2x in speed for 0.4 dB (`stargan-rt bench`).
INT8_MIN_PSNR = 31.0
CHECK_FRAMES = 32
# onnxruntime CalibrationMethod: Percentile (99.99th, more convs stay int8 at the same PSNR) up
# to PERCENTILE_MAX_SIZE px; above, MinMax: the percentile histograms sort every activation of
# every batch, which made a 256 px v2 generator's calibration take many minutes here.
CALIB_METHOD = "auto"
PERCENTILE_MAX_SIZE = 128


class _Reader:
    """onnxruntime CalibrationDataReader over prepared feeds, a few samples per batch."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int = 2):
        self.feeds, self.batch = feeds, batch
        self.count = len(next(iter(feeds.values())))
        self.batches = -(-self.count // batch)
        self.position, self.end = 0, self.batches

    # quantize_static(extra_options={"CalibStridedMinMax": 1}) collects batch by batch and merges
    # the ranges each time, so memory stays bounded by one batch's intermediate tensors.
    def __len__(self):
        return self.batches

    def set_range(self, start_index: int, end_index: int):
        self.position, self.end = start_index, min(end_index, self.batches)

    def get_next(self):
        if self.position >= self.end:
            return None
        sl = slice(self.position * self.batch, (self.position + 1) * self.batch)
        self.position += 1
        return {k: np.ascontiguousarray(v[sl]) for k, v in self.feeds.items()}

    def rewind(self):
        self.position, self.end = 0, self.batches


def _unquantized_consumers_read_float(model: onnx.ModelProto) -> int:
    """Give every non-quantized consumer of a Q/DQ'd activation the float tensor back.

    ONNX Runtime puts one Q/DQ pair on a tensor and lets all its consumers read the DQ output;
    when a tensor feeds a conv and also an InstanceNormalization (the v2 residual blocks) or an
    Add, those would read a quantized copy. TensorRT wants Q/DQ only in front of the layers that
    run in int8; here everything else reads the original float tensor."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue  # a weight (int8 initializer), not an activation
            node.input[index] = q.input[0]
            rewired += 1
    prune_unused(model, initializers=False)  # drop Q/DQ pairs nothing reads any more
    return rewired


def to_int8_model(fp32_path: Path, model: onnx.ModelProto, frames: np.ndarray,
                  aux: dict | None = None, min_psnr: float = INT8_MIN_PSNR,
                  log=None) -> tuple[onnx.ModelProto, dict]:
    """Quantize; if the result is below ``min_psnr`` dB against the fp32 graph on CHECK_FRAMES of
    the calibration frames, move convs back to fp32 in graph order, 1, 2, 4, ... more at a time
    (measured on the StarGAN graphs: the error adds up about evenly over the layers, the
    high-resolution input side first) until it is not. Returns (model, info)."""
    import contextlib
    import io as _io
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    if not any(n.op_type in QUANTIZED_OPS for n in model.graph.node):
        return onnx.ModelProto.FromString(model.SerializeToString()), {
            "quantized_convs": 0, "fp32_convs": 0,
            "note": "no Conv / ConvTranspose: nothing to quantize, the graph stays fp32"}
    feeds = calibration_feeds(fp32_path, model, frames, aux)
    count = len(frames)
    size = frames.shape[1]
    batch = 16 if size <= 64 else 8 if size <= 128 else 2
    method = CALIB_METHOD
    if method == "auto":
        method = "Percentile" if size <= PERCENTILE_MAX_SIZE else "MinMax"

    class Reader(_Reader, CalibrationDataReader):
        pass

    model = onnx.ModelProto.FromString(model.SerializeToString())
    name_nodes(model)
    convs = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    # The first conv (reads the image) and the last (writes it) are cheap (3 channels) and the
    # most visible in the output: they stay fp32.
    fixed = [convs[-1]] if len(convs) > 2 else []
    order = [c for c in convs if c not in fixed]
    check = np.linspace(0, count - 1, min(CHECK_FRAMES, count)).round().astype(int)
    check_feeds = {k: v[check] for k, v in feeds.items()}
    logger = logging.getLogger()
    level = logger.level
    with tempfile.TemporaryDirectory(prefix="stargan-rt-int8-") as tmp:
        named, out, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "cal"
        onnx.save(model, str(named))
        reference = run_batched(named, check_feeds, 4)

        def quantize(exclude: list[str]) -> float:
            with contextlib.redirect_stdout(_io.StringIO()):
                quantize_static(
                    str(named), str(out), Reader(feeds, batch), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=QUANTIZED_OPS, per_channel=True, reduce_range=False,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    nodes_to_exclude=exclude,
                    calibration_cache_path=str(cache),  # calibrate once, re-quantize cheaply
                    extra_options={
                        "ActivationSymmetric": True, "WeightSymmetric": True,
                        "CalibTensorRangeSymmetric": True, "CalibPercentile": 99.99,
                        "CalibStridedMinMax": 1,  # batch by batch: bounded memory
                        "QuantizeBias": False,
                        "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
                        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1}})
            quantized = onnx.load(str(out))
            _unquantized_consumers_read_float(quantized)
            onnx.save(quantized, str(out))
            return worst_psnr(run_batched(out, check_feeds, 4), reference)

        try:  # quiet: the calibrators print per batch and log pre-processing advice
            logger.setLevel(logging.ERROR)
            kept = 1 if len(order) > 1 else 0  # the first conv (image in) stays fp32
            psnr = quantize(fixed + order[:kept])
            step = 1  # doubling steps: at most log2(convs) re-quantizations on big models
            while psnr < min_psnr and kept < len(order):
                kept = min(len(order), kept + step)
                step *= 2
                psnr = quantize(fixed + order[:kept])
                if log:
                    log(f"int8 check {psnr:.1f} dB with the first {kept} convs in fp32")
        finally:
            logger.setLevel(level)
        quantized = onnx.load(str(out))
    info = {"calibration": method, "check_psnr_db": round(psnr, 2), "check_frames": int(len(check)),
            "quantized_convs": len(order) - kept, "fp32_convs": len(convs) - (len(order) - kept),
            "min_psnr_db": min_psnr}
    return quantized, info


def check_calibration_frames(frames, model: onnx.ModelProto, src: Path) -> None:
    size = int(get_metadata(model).get("image_size", 0))
    if frames is None:
        raise UserError("int8 needs calibration frames: pass --calib DIR|VIDEO or use the "
                        "built-in demo faces (load_calibration_frames(None, size))")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
        raise UserError(f"calibration frames must be uint8 (N, {size}, {size}, 3) BGR, got "
                        f"{frames.dtype} {frames.shape}")
    if len(frames) < MIN_CALIBRATION_FRAMES:
        raise UserError(f"{len(frames)} calibration frames given; INT8 calibration needs at "
                        f"least {MIN_CALIBRATION_FRAMES} real frames: add images to the --calib "
                        "directory or pass a longer video")
