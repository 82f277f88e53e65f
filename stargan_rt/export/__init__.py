"""torch -> ONNX export, graph passes (AdaIN fusion) and precision graphs (fp16, int8 Q/DQ).

    export_bundle(bundle_path, out_dir, io="uint8"|"float", networks=None) -> {network: fp32 path}
    fuse_adain(onnx_in, onnx_out) -> number of AdaIN nodes fused
    to_precision(onnx_fp32, out, "fp32"|"fp16"|"int8", calib_frames=None) -> out path
    prepare_graph(onnx_fp32, out, precision, fuse=False, calib_frames=None) -> (path, fused)
    load_calibration_frames(DIR|VIDEO|None, size, count=256) -> uint8 (N, S, S, 3) BGR
    CONTRACT / io_spec: every graph's I/O names, dtypes and shapes (stargan_rt.export.contract)

Only export_bundle needs torch (imported when it runs); the rest needs numpy, onnx,
onnxruntime and OpenCV, so a device can make its precision graph from an exported fp32 ONNX.
"""
from __future__ import annotations

from stargan_rt.export.calibration import MIN_CALIBRATION_FRAMES, load_calibration_frames
from stargan_rt.export.contract import CONTRACT, DEFAULT_NETWORKS, IO_VARIANTS, PRECISIONS, io_spec
from stargan_rt.export.exporter import export_bundle, onnx_file_name
from stargan_rt.export.fusion import ADAIN_DOMAIN, ADAIN_OP, adain_reference, fuse_adain
from stargan_rt.export.onnx_io import get_metadata, load_model, save_model, set_metadata
from stargan_rt.export.precision import prepare_graph, to_precision

__all__ = ["ADAIN_DOMAIN", "ADAIN_OP", "CONTRACT", "DEFAULT_NETWORKS", "IO_VARIANTS",
           "MIN_CALIBRATION_FRAMES", "PRECISIONS", "adain_reference", "export_bundle",
           "fuse_adain", "get_metadata", "io_spec", "load_calibration_frames", "load_model",
           "onnx_file_name", "prepare_graph", "save_model", "set_metadata", "to_precision"]
