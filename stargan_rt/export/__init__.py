"""torch -> ONNX export, graph passes (AdaIN fusion) and precision graphs (fp16, int8 Q/DQ).

Only ``export_bundle`` needs torch (imported when called); fusion, precision and calibration
need numpy, onnx, onnxruntime and OpenCV only, so a device can turn an exported fp32 ONNX into
its precision graph without torch.
"""
from __future__ import annotations

from stargan_rt.export.contract import CONTRACT, DEFAULT_NETWORKS, IO_VARIANTS, PRECISIONS, io_spec
from stargan_rt.export.onnx_io import get_metadata, load_model, save_model, set_metadata

from stargan_rt.export.exporter import export_bundle, onnx_file_name

__all__ = ["CONTRACT", "DEFAULT_NETWORKS", "IO_VARIANTS", "PRECISIONS", "io_spec", "export_bundle",
           "onnx_file_name", "get_metadata", "load_model", "save_model", "set_metadata"]
