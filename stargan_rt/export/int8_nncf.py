"""int8 for OpenVINO by NNCF, OpenVINO's own post-training quantizer.

NNCF (``nncf.quantize``) reads the exported fp32 graph as an ``openvino.Model``, calibrates on
the same frames as the Q/DQ path and places FakeQuantize nodes where OpenVINO's CPU plugin has
int8 kernels (convolutions, and their inputs in the form those kernels want). Measured with
`stargan-rt bench` on the StarGAN generators it runs faster than the Q/DQ graph made for
TensorRT, so the OpenVINO target's int8 uses it; the Q/DQ ONNX stays the TensorRT int8 graph.

The result is an OpenVINO IR (``.xml`` + ``.bin``). Accuracy guard as for the Q/DQ graph: the
int8 model is compared with the fp32 one on CHECK_FRAMES of the calibration frames; below
``min_psnr`` the convolutions nearest the input are left out of quantization (NNCF's ignored
scope), 1, 2, 4, ... more at a time, until it passes.
"""
from __future__ import annotations

import contextlib
import io
import logging
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
                  ignored: list[str] | None = None):
    """``nncf.quantize`` with its default settings on the fp32 ONNX read by OpenVINO.
    Returns the quantized ``openvino.Model``."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_path))
    samples = _samples(feeds)
    kwargs = {}
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ignored))
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bars
            return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                 **kwargs)
    finally:
        nncf_logger.setLevel(level)


def _conv_names(model) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in CONV_TYPES]


def _run(model, feeds: dict[str, np.ndarray], batch: int = 4) -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
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
                     log=None) -> dict:
    """Quantize the fp32 export with NNCF, check it, write ``out_xml`` (+ ``.bin``) atomically.
    Returns the info recorded with the engine (PSNR of the check, convolutions left in fp32)."""
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
    count = len(frames)
    check = np.linspace(0, count - 1, min(CHECK_FRAMES, count)).round().astype(int)
    check_feeds = {k: v[check] for k, v in feeds.items()}
    reference = _run(ov.Core().read_model(str(fp32_path)), check_feeds)
    convs = _conv_names(ov.Core().read_model(str(fp32_path)))
    kept, step = 0, 1
    quantized = nncf_quantize(fp32_path, feeds)
    psnr = _psnr(_run(quantized, check_feeds), reference)
    while psnr < min_psnr and kept < len(convs):
        kept = min(len(convs), kept + step)
        step *= 2
        quantized = nncf_quantize(fp32_path, feeds, ignored=convs[:kept])
        psnr = _psnr(_run(quantized, check_feeds), reference)
        if log:
            log(f"int8 (nncf) check {psnr:.1f} dB with the first {kept} convs in fp32")
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    tmp_xml = out_xml.with_name(f".{out_xml.stem}.tmp.xml")
    ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
    os.replace(tmp_xml.with_suffix(".bin"), out_xml.with_suffix(".bin"))  # weights first
    os.replace(tmp_xml, out_xml)
    return {"quantizer": "nncf", "check_psnr_db": round(float(psnr), 2),
            "check_frames": int(len(check)), "fp32_convs": kept,
            "quantized_convs": len(convs) - kept, "min_psnr_db": min_psnr}
