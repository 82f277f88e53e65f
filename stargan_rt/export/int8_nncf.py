"""int8 for OpenVINO by NNCF, OpenVINO's own post-training quantizer.

NNCF (``nncf.quantize``) reads the exported fp32 graph as an ``openvino.Model``, calibrates on
the same frames as the Q/DQ path and places FakeQuantize nodes where OpenVINO's CPU plugin has
int8 kernels (convolutions, and their inputs in the form those kernels want). Measured with
`stargan-rt bench` on the StarGAN generators it runs faster than the Q/DQ graph made for
TensorRT, so the OpenVINO target's int8 uses it; the Q/DQ ONNX stays the TensorRT int8 graph.

The result is an OpenVINO IR (``.xml`` + ``.bin``). Accuracy guard: the int8 model is compared
with the fp32 one on CHECK_FRAMES of the calibration frames, against ``min_psnr`` (INT8_MIN_PSNR):
1. NNCF's defaults (FakeQuantize also on the adds, multiplies and normalisations' inputs): the
   fastest; the official-size v1 passes here.
2. Below it, convolutions only (every other operation type in NNCF's ignored scope) with
   asymmetric activations. The 256 px v2 generator (random weights, 64 calibration frames)
   checks 24.4 dB with the defaults, 25.8 with asymmetric activations everywhere, 27.2 with
   convolutions only and 30.4 with both, at the same speed; a quantile range estimator instead
   of min / max added 0.1 dB for twice the build time.
3. Still below, convolutions go back to float, most costly first (each one's cost measured by
   making it alone float), 1, 2, 4, ... of them, by bypassing their FakeQuantize nodes: one
   NNCF run in all, not one per step.
4. Below it with every convolution in float (NNCF's bias correction stays; the 256 px FAN
   checked 30.5 dB on its masks there), the fp32 graph itself is written, and the build says so.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from pathlib import Path

import numpy as np

from stargan_rt.errors import UserError

CONV_TYPES = ("Convolution", "ConvolutionBackpropData", "GroupConvolution")


def nncf_available() -> str | None:
    """None when NNCF can be imported, else why not."""
    try:
        import nncf  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        return f"nncf is not installed ({exc}); pip install nncf"
    return None


def _samples(feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = len(next(iter(feeds.values())))
    return [{k: np.ascontiguousarray(v[i:i + 1]) for k, v in feeds.items()} for i in range(count)]


def nncf_quantize(fp32_path: str | os.PathLike, feeds: dict[str, np.ndarray],
                  convolutions_only: bool = False):
    """``nncf.quantize`` on the fp32 ONNX read by OpenVINO: its default settings, or with every
    operation type but the convolutions in its ignored scope and asymmetric activations (the
    MIXED preset: the convolutions read LeakyReLU outputs, mostly positive, which symmetric int8
    spends half its codes on). Returns the ``openvino.Model``."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_path))
    samples = _samples(feeds)
    kwargs = {}
    if convolutions_only:
        others = sorted({op.get_type_name() for op in model.get_ordered_ops()} - set(CONV_TYPES)
                        - {"Parameter", "Result", "Constant"})
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=others, validate=False)
        kwargs["preset"] = nncf.QuantizationPreset.MIXED
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bars
            return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                 **kwargs)
    finally:
        nncf_logger.setLevel(level)


def convs_to_float(model, names) -> int:
    """Return convolutions of a quantized model to float in place: their inputs (activation and
    weights) bypass the FakeQuantize nodes NNCF put there. No re-quantization, so trying more
    convolutions in float costs one check each, not one NNCF run. Returns the bypassed count."""
    names, bypassed = set(names), 0
    for op in model.get_ordered_ops():
        if op.get_friendly_name() not in names or op.get_type_name() not in CONV_TYPES:
            continue
        for port in range(min(2, op.get_input_size())):
            fq = op.input_value(port).get_node()
            if fq.get_type_name() == "FakeQuantize":
                op.input(port).replace_source_output(fq.input_value(0))
                bypassed += 1
    model.validate_nodes_and_infer_types()
    return bypassed


def _conv_names(model) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in CONV_TYPES]


def _run(model, feeds: dict[str, np.ndarray], batch: int = 4,
         hint: str = "f32") -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    count = len(next(iter(feeds.values())))
    parts = []
    for start in range(0, count, batch):
        request.infer({k: v[start:start + batch] for k, v in feeds.items()})
        parts.append([request.get_output_tensor(i).data.copy()
                      for i in range(len(compiled.outputs))])
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def to_openvino_int8(fp32_path: str | os.PathLike, out_xml: str | os.PathLike,
                     frames: np.ndarray, aux: dict | None = None, min_psnr: float | None = None,
                     log=None, float_precision: str = "fp32") -> dict:
    """Quantize the fp32 export with NNCF, check it, write ``out_xml`` (+ ``.bin``) atomically.
    Returns the info recorded with the engine (scheme, PSNR of the check, float convolutions).
    ``float_precision`` (fp32 / bf16): what the engine runs the float parts at; the check runs
    them at the same against the fp32 graph at fp32."""
    import onnx
    import openvino as ov

    from stargan_rt.export.calibration import calibration_feeds
    from stargan_rt.export.int8 import CHECK_FRAMES, INT8_MIN_PSNR
    from stargan_rt.metrics import worst_psnr as _psnr

    why = nncf_available()
    if why:
        raise UserError(f"OpenVINO int8 is quantized by NNCF: {why}")
    min_psnr = INT8_MIN_PSNR if min_psnr is None else min_psnr
    fp32_path = Path(fp32_path)
    graph = onnx.load(str(fp32_path), load_external_data=False)
    feeds = calibration_feeds(fp32_path, graph, frames, aux)
    count, size = len(frames), frames.shape[1]
    check = np.linspace(0, count - 1, min(CHECK_FRAMES, count)).round().astype(int)
    check_feeds = {k: v[check] for k, v in feeds.items()}
    # NNCF's statistics pass runs the network once per sample: above 128 px a quarter of the
    # frames (64 of 256) keeps a 256 px v2 build to minutes.
    calib = feeds if size <= 128 else \
        {k: v[np.linspace(0, count - 1, max(32, count // 4)).round().astype(int)]
         for k, v in feeds.items()}
    reference = _run(ov.Core().read_model(str(fp32_path)), check_feeds)

    hint = {"fp32": "f32", "bf16": "bf16"}[float_precision]

    def checked(model) -> float:
        return _psnr(_run(model, check_feeds, hint=hint), reference)

    scheme, floats = "nncf defaults", []
    quantized = nncf_quantize(fp32_path, calib)
    psnr = checked(quantized)
    if psnr < min_psnr:
        if log:
            log(f"int8 (nncf defaults) check {psnr:.1f} dB < {min_psnr:g}: convolutions only")
        scheme = "nncf, convolutions only, asymmetric activations"
        base = nncf_quantize(fp32_path, calib, convolutions_only=True)
        quantized, psnr = base, checked(base)
        if psnr < min_psnr:
            # Convolutions back to float, most costly first: each one's cost is the check's
            # gain when it alone is float (on 8 of the check frames), then 1, 2, 4, ... of them.
            few = {k: v[:8] for k, v in check_feeds.items()}
            few_reference = [r[:8] for r in reference]
            gains = []
            for name in _conv_names(base):
                trial = base.clone()
                convs_to_float(trial, [name])
                gains.append((_psnr(_run(trial, few, hint=hint), few_reference), name))
            order = [name for _, name in sorted(gains, key=lambda g: -g[0])]
            kept, step = 0, 1
            while psnr < min_psnr and kept < len(order):
                kept = min(len(order), kept + step)
                step *= 2
                quantized = base.clone()
                convs_to_float(quantized, order[:kept])
                psnr = checked(quantized)
                if log:
                    log(f"int8 (nncf) check {psnr:.1f} dB with {kept} convolutions in float")
            floats = order[:kept]
            if psnr < min_psnr:
                # Every convolution is float and the check still fails: NNCF's corrected biases
                # remain. Write the fp32 graph rather than one below the guard's own threshold.
                scheme += "; no int8 graph passed: the fp32 graph"
                quantized = ov.Core().read_model(str(fp32_path))
                psnr = math.inf  # the check's own reference
                if log:
                    log(f"int8 (nncf): below {min_psnr:g} dB with every convolution in float; "
                        "keeping the fp32 graph")
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    tmp_xml = out_xml.with_name(f".{out_xml.stem}.tmp.xml")
    ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
    os.replace(tmp_xml.with_suffix(".bin"), out_xml.with_suffix(".bin"))  # weights first
    os.replace(tmp_xml, out_xml)
    convs = _conv_names(quantized)
    return {"quantizer": "nncf", "scheme": scheme,
            "check_psnr_db": round(min(float(psnr), 100.0), 2),  # identical outputs: inf
            "check_frames": int(len(check)),
            "calibration_samples": len(next(iter(calib.values()))),
            "fp32_convs": len(floats), "quantized_convs": len(convs) - len(floats),
            "float_convs": floats, "min_psnr_db": min_psnr, "float_precision": float_precision}
