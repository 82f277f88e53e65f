"""Precision lives in the graph: fp32 (as exported), fp16, int8 with explicit Q/DQ.

``to_precision`` turns an exported fp32 graph into the graph of a precision: fp16 in
``export/fp16.py`` (convolutions in fp16; normalisation statistics, reductions and frame I/O in
fp32), int8 in ``export/int8.py`` (symmetric Q/DQ on the convolutions, calibrated on real frames,
with a guard that returns convolutions to fp32 until the graph is within INT8_MIN_PSNR of fp32).
``prepare_graph`` also fuses AdaIN, in the order that works for each precision: quantize the
unfused graph (ONNX Runtime has to run it to calibrate), then fuse; fp16 the other way round.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.export.contract import PRECISIONS
from stargan_rt.export.fp16 import to_fp16_model
from stargan_rt.export.int8 import INT8_MIN_PSNR, check_calibration_frames, to_int8_model
from stargan_rt.export.onnx_io import get_metadata, load_model, save_model, set_metadata

__all__ = ["INT8_MIN_PSNR", "prepare_graph", "to_precision"]


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
        check_calibration_frames(calib_frames, model, src)
        converted, info = to_int8_model(src, model, calib_frames, calib_inputs, min_psnr)
        set_metadata(converted, calibration_frames=str(len(calib_frames)), int8=info)
    set_metadata(converted, precision=precision)
    import onnx

    onnx.checker.check_model(converted)
    return save_model(converted, out_path)


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
