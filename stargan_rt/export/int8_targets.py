"""Which int8 graph each target runs, and making it.

  tensorrt     the Q/DQ ONNX of export/precision.py: symmetric int8 activations and weights,
               Q/DQ only in front of convolutions (what TensorRT's explicit quantization wants);
  openvino     NNCF's int8 OpenVINO IR (export/int8_nncf.py), when NNCF is installed, else the
               Q/DQ ONNX above (said when built);
  onnxruntime  ONNX Runtime's U8S8 QDQ graph (export/int8_ort.py) on the CPU provider; with a
               GPU provider (onnxruntime-gpu) the Q/DQ ONNX above.

The choice follows `stargan-rt bench` on the StarGAN generators: for OpenVINO NNCF's graph was
faster than the TensorRT-form Q/DQ graph, and in ONNX Runtime the TensorRT form ran no faster
than fp32 while the U8S8 form runs as integer convolutions (figures in the README).
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

FORMS = {"qdq": ".onnx", "nncf": ".xml", "u8s8": ".onnx"}


def int8_form(target: str) -> str:
    if target == "openvino":
        from stargan_rt.export.int8_nncf import nncf_available

        with hidden_torch():
            return "nncf" if nncf_available() is None else "qdq"
    if target == "onnxruntime":
        from stargan_rt.backends.onnxruntime import providers

        return "u8s8" if providers() == ["CPUExecutionProvider"] else "qdq"
    return "qdq"


@contextlib.contextmanager
def hidden_torch():
    """NNCF imports torch whenever it is installed (for its torch tensor functions; it skips
    them when torch is absent). An OpenVINO model needs none of it, and the runtime path never
    loads torch, so NNCF is imported and run with torch marked absent (``sys.modules["torch"] = None``,
    Python's own way to say a module cannot be imported) unless torch is already loaded."""
    if sys.modules.get("torch") is not None:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def convert_int8(target: str, form: str, source: Path, out: Path, frames, log=print,
                 float_precision: str = "fp32") -> dict:
    """Write the ``form`` int8 graph of the fp32 export ``source`` to ``out``; returns its info.
    ``float_precision``: what the engine runs the graph's float parts at (nncf: bf16 or fp32);
    the accuracy guard checks the graph at the same."""
    from stargan_rt.export.onnx_io import save_model, set_metadata

    if form == "nncf":
        from stargan_rt.export.int8_nncf import to_openvino_int8

        with hidden_torch():  # nncf.quantize also tries torch to tell the model's framework
            return to_openvino_int8(source, out, frames, log=log, float_precision=float_precision)
    if form == "u8s8":
        import onnx

        from stargan_rt.export.int8_ort import to_onnxruntime_int8
        from stargan_rt.export.onnx_io import load_model

        model = load_model(source)
        converted, info = to_onnxruntime_int8(source, model, frames, log=log)
        set_metadata(converted, precision="int8", calibration_frames=str(len(frames)), int8=info)
        onnx.checker.check_model(converted)
        save_model(converted, out)
        return info
    raise ValueError(f"int8 form {form!r} is made by export.precision.prepare_graph")
