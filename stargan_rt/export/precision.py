"""Precision lives in the graph: fp32 (as exported), fp16, int8 with explicit Q/DQ.

fp16: ONNX Runtime's float16 converter (onnxruntime.transformers.float16, the same code as
onnxconverter-common) with the graph's I/O types kept (uint8 frames stay uint8, float I/O stays
float32) and these kept in fp32, with Casts at the borders:
  - InstanceNormalization (statistics and variance), every Reduce*, Pow, Sqrt, Exp, Log,
    Softmax, and ops ONNX Runtime's converter always keeps (Resize scales, ...); inference-mode
    BatchNormalization (the FAN's) is a fixed per-channel affine and may run in fp16;
  - the frame I/O and mask arithmetic: every node that is not between two weighted layers (Conv,
    ConvTranspose, Gemm, MatMul), i.e. the cast / scale / colour swap before the first conv, the
    clamp / round / cast after the last one, the FAN's heatmap post-processing.
  An AdaIN plugin node of a fused graph runs in fp16 (the plugin keeps its statistics in fp32).

int8: ONNX Runtime's quantize_static in QDQ format, the form TensorRT's explicit quantization and
OpenVINO read: QuantizeLinear/DequantizeLinear on the inputs and weights of Conv and
ConvTranspose only (the compute; no Q/DQ around InstanceNormalization, Resize, the AdaIN
arithmetic or the frame I/O), int8 symmetric activations (zero point 0), per-channel symmetric
weights (Conv axis 0, ConvTranspose axis 1), no output quantization, float biases. Calibrated
(99.99th percentile of |x| up to 128 px, max |x| above) on >= 256 real frames; the first and
last conv (image in / out, 3 channels) stay fp32. Accuracy guard: the int8 graph is compared
with the fp32 graph on 32 of the calibration frames; below INT8_MIN_PSNR (32 dB) convs go back to
fp32 from the input side, 1, 2, 4, ... more at a time, until it passes (recorded in the metadata
key ``int8``). Everything not quantized stays fp32. Quantize the unfused graph (ORT has to run it
to calibrate), then fuse AdaIN:
`prepare_graph` does it in that order (fp16 the other way round: fuse, then convert).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from stargan_rt.errors import UserError
from stargan_rt.export.calibration import MIN_CALIBRATION_FRAMES
from stargan_rt.export.contract import PRECISIONS
from stargan_rt.export.onnx_io import get_metadata, load_model, save_model, set_metadata

HEAVY_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
FP32_OPS = ["InstanceNormalization", "ReduceMean", "ReduceSum",
            "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare", "Pow", "Sqrt",
            "Exp", "Log", "Softmax", "LayerNormalization", "GroupNormalization", "IsNaN",
            "IsInf", "Range", "CumSum", "TopK", "NonMaxSuppression", "RoiAlign", "Upsample",
            "RandomUniformLike", "RandomNormalLike"]
QUANTIZED_OPS = ["Conv", "ConvTranspose"]
MASK_FRAMES = 64
INT8_MIN_PSNR = 32.0  # dB vs the fp32 graph; parity checks >= 30 dB against PyTorch
CHECK_FRAMES = 32
# onnxruntime CalibrationMethod: Percentile (99.99th, more convs stay int8 at the same PSNR) up
# to PERCENTILE_MAX_SIZE px; above, MinMax: the percentile histograms sort every activation of
# every batch, which made a 256 px v2 generator's calibration take many minutes here.
CALIB_METHOD = "auto"
PERCENTILE_MAX_SIZE = 128


# -- fp16 ---------------------------------------------------------------------------------------

def _name_nodes(model: onnx.ModelProto) -> None:
    seen = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def _outside_heavy_span(model: onnx.ModelProto) -> list[str]:
    """Names of nodes with no weighted layer upstream or none downstream (frame I/O, masks)."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def closure(start_nodes, step):
        reached, stack = set(), list(start_nodes)
        while stack:
            node = stack.pop()
            for nxt in step(node):
                if nxt.name not in reached:
                    reached.add(nxt.name)
                    stack.append(nxt)
        return reached

    heavy = [n for n in graph.node if n.op_type in HEAVY_OPS]
    down = closure(heavy, lambda n: [c for o in n.output for c in consumers.get(o, [])])
    up = closure(heavy, lambda n: [producer[i] for i in n.input if i in producer])
    heavy_names = {n.name for n in heavy}
    return [n.name for n in graph.node
            if n.name not in heavy_names and (n.name not in down or n.name not in up)]


def to_fp16_model(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    _constants_to_initializers(model)
    _name_nodes(model)
    block_nodes = _outside_heavy_span(model)
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS,
                                         node_block_list=block_nodes)
    _name_nodes(converted)
    topological_sort(converted.graph)
    _drop_cast_round_trips(converted)
    del converted.graph.value_info[:]  # stale annotations; consumers re-infer what they need
    return converted


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """Constant nodes -> initializers (the fp16 converter casts Constant outputs to fp16 and
    back even where fp32 nodes read them; it handles initializers per consumer)."""
    graph = model.graph
    keep = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _drop_cast_round_trips(model: onnx.ModelProto) -> int:
    """Cast(fp32 -> fp16) -> Cast(-> fp32) pairs between two fp32 nodes: read the fp32 tensor."""
    graph = model.graph
    bare = onnx.ModelProto.FromString(model.SerializeToString())
    del bare.graph.value_info[:]  # the converter leaves some stale fp32 annotations behind
    try:
        inferred = onnx.shape_inference.infer_shapes(bare)
    except Exception:
        return 0
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(graph.input)}
    types.update({i.name: i.data_type for i in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None)

    dropped = 0
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type != "Cast" or cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or first.op_type != "Cast" or cast_to(first) != onnx.TensorProto.FLOAT16:
            continue
        if types.get(first.input[0]) != onnx.TensorProto.FLOAT or node.output[0] in outputs:
            continue
        for other in graph.node:  # consumers read the original fp32 tensor
            for index, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[index] = first.input[0]
        dropped += 1
    used = {i for n in graph.node for i in n.input} | outputs
    while True:
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input} | outputs
    return dropped


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progress = []
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                progress.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if not progress:
            missing = sorted({n for node in rest for n in node.input if n not in available})
            raise RuntimeError(f"graph has a cycle or undefined tensors: {missing[:5]}")
        ordered.extend(progress)
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


# -- int8 ---------------------------------------------------------------------------------------

def _sibling(fp32_path: Path, network: str, meta: dict) -> Path | None:
    """Another exported graph of the same bundle and I/O variant in the same directory."""
    for candidate in sorted(fp32_path.parent.glob("*.onnx")):
        if candidate == fp32_path:
            continue
        try:
            other = get_metadata(onnx.load(str(candidate), load_external_data=False))
        except Exception:
            continue
        if (other.get("network") == network and other.get("bundle_hash") == meta.get("bundle_hash")
                and other.get("precision") == "fp32" and other.get("adain_fused") != "1"
                and other.get("io") in (meta.get("io"), None)):
            return candidate
    return None


def _run(path: Path, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def calibration_feeds(fp32_path: Path, model: onnx.ModelProto, frames: np.ndarray,
                      aux: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict:
    """Every graph input for len(frames) samples: frames as the image, the rest from ``aux``,
    sibling graphs (v2 styles from the mapping network, masks from the FAN) or sampled."""
    from stargan_rt.imaging import bgr_to_unit_nchw

    meta = get_metadata(model)
    contract = json.loads(meta["contract"]) if "contract" in meta else None
    if contract is None:
        raise UserError(f"{fp32_path}: no stargan-rt I/O contract in the ONNX metadata; "
                        "calibrate graphs made by `stargan-rt export`")
    count = len(frames)
    io = meta.get("io", "uint8")
    image = frames if io == "uint8" else bgr_to_unit_nchw(frames)
    rng = np.random.default_rng(seed)
    domains = json.loads(meta.get("domains", "[]")) or ["?"]
    feeds: dict[str, np.ndarray] = {}
    aux = dict(aux or {})
    for spec in contract["inputs"]:
        name, shape = spec["name"], spec["shape"]
        if name in aux:
            value = np.asarray(aux[name])
            feeds[name] = value[np.arange(count) % len(value)]
        elif name == "image":
            feeds[name] = image
        elif name == "labels":
            feeds[name] = (rng.random((count, shape[1])) < 0.5).astype(np.float32)
        elif name == "domain":
            feeds[name] = (np.arange(count) % len(domains)).astype(np.int64)
        elif name == "z":
            feeds[name] = rng.standard_normal((count, shape[1])).astype(np.float32)
        elif name == "style":
            mapping = _sibling(fp32_path, "mapping_network", meta)
            if mapping is not None:
                z = rng.standard_normal((count, json.loads(meta["config"])["latent_dim"]))
                y = (np.arange(count) % len(domains)).astype(np.int64)
                feeds[name] = _run(mapping, {"z": z.astype(np.float32), "domain": y})[0]
            else:
                feeds[name] = rng.standard_normal((count, shape[1])).astype(np.float32)
        elif name.startswith("mask_"):
            continue  # filled below, both masks from one FAN run
        else:
            raise UserError(f"{fp32_path}: no calibration data for input {name!r}; pass it in "
                            "calib_inputs")
    mask_names = [s["name"] for s in contract["inputs"] if s["name"].startswith("mask_")
                  and s["name"] not in feeds]
    if mask_names:
        fan = _sibling(fp32_path, "fan", meta)
        if fan is not None:
            import onnxruntime as ort

            session = ort.InferenceSession(str(fan), providers=["CPUExecutionProvider"])
            # The FAN costs ~0.5 s and ~0.5 GB per frame on a CPU: run it in pairs, on at most
            # MASK_FRAMES frames; further frames reuse those masks (only the ranges matter).
            distinct = min(count, MASK_FRAMES)
            masks = []
            for start in range(0, distinct, 2):
                masks.append(session.run(None, {"image": image[start:min(start + 2, distinct)]}))
            index = np.arange(count) % distinct
            feeds["mask_face"] = np.concatenate([m[0] for m in masks])[index]
            feeds["mask_inner"] = np.concatenate([m[1] for m in masks])[index]
        else:
            for name in mask_names:
                feeds[name] = np.ones((count, 1, 256, 256), np.float32) * 0.5
    return feeds


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


def _psnr(got: list, want: list) -> float:
    """Worst PSNR over the outputs; peak 255 for uint8 frames, 2 for float images in [-1, 1],
    else the reference's value range (styles, masks, logits)."""
    worst = float("inf")
    for g, w in zip(got, want):
        if w.dtype == np.uint8:
            peak = 255.0
        elif w.ndim == 4 and w.shape[1] == 3:
            peak = 2.0
        else:
            peak = max(float(w.max() - w.min()), 1e-6)
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        mse = float(np.mean((g - w) ** 2))
        worst = min(worst, float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse))
    return worst


def _run_batched(path: Path, feeds: dict, batch: int = 4) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    count = len(next(iter(feeds.values())))
    parts = [session.run(None, {k: v[i:i + batch] for k, v in feeds.items()})
             for i in range(0, count, batch)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


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
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    while True:  # drop Q/DQ pairs nothing reads any more
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
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
    _name_nodes(model)
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
        reference = _run_batched(named, check_feeds)

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
            return _psnr(_run_batched(out, check_feeds), reference)

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


# -- public -------------------------------------------------------------------------------------

def to_precision(onnx_fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                 precision: str, calib_frames: np.ndarray | None = None,
                 calib_inputs: dict[str, np.ndarray] | None = None,
                 min_psnr: float = INT8_MIN_PSNR) -> Path:
    """Write the ``precision`` version of an exported fp32 graph to ``out_path``.

    int8 needs ``calib_frames``: uint8 (N >= 256, S, S, 3) BGR face crops
    (see ``load_calibration_frames``); ``calib_inputs`` may give the other inputs (styles, labels,
    masks) per sample, otherwise they come from sibling graphs or are sampled.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    src = Path(onnx_fp32_path)
    model = load_model(src)
    meta = get_metadata(model)
    if meta.get("precision", "fp32") != "fp32":
        raise UserError(f"{src} is already a {meta['precision']} graph; convert the fp32 export")
    if precision == "fp32":
        converted = model
    elif precision == "fp16":
        converted = to_fp16_model(model)
    else:
        if meta.get("adain_fused") == "1":
            raise UserError(f"{src} has fused AdaIN nodes that ONNX Runtime cannot run for "
                            "calibration; quantize the unfused graph, then fuse (prepare_graph)")
        _check_frames(calib_frames, model, src)
        converted, info = to_int8_model(src, model, calib_frames, calib_inputs, min_psnr)
        set_metadata(converted, calibration_frames=str(len(calib_frames)), int8=info)
    set_metadata(converted, precision=precision)
    onnx.checker.check_model(converted)
    return save_model(converted, out_path)


def _check_frames(frames, model: onnx.ModelProto, src: Path) -> None:
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


def prepare_graph(onnx_fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  precision: str, fuse: bool = False, calib_frames: np.ndarray | None = None,
                  calib_inputs: dict | None = None) -> tuple[Path, int]:
    """fp32 export -> precision graph [-> AdaIN fused], in the order that works for each
    precision. Returns (path, number of AdaIN nodes fused)."""
    from stargan_rt.export.fusion import fuse_adain

    out_path = Path(out_path)
    if not fuse:
        return to_precision(onnx_fp32_path, out_path, precision, calib_frames, calib_inputs), 0
    if precision == "fp16":  # fuse first: the fp32 casts around InstanceNorm would hide it
        with tempfile.TemporaryDirectory(prefix="stargan-rt-fuse-") as tmp:
            fused = Path(tmp) / "fused.onnx"
            count = fuse_adain(onnx_fp32_path, fused)
            return to_precision(fused, out_path, precision), count
    to_precision(onnx_fp32_path, out_path, precision, calib_frames, calib_inputs)
    return out_path, fuse_adain(out_path, out_path)
