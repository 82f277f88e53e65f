"""Which engine targets this machine can run, and for each one it cannot, why.

`--target auto` walks PREFERENCE and takes the first available one. Probing imports the runtime
libraries lazily so a device only needs the one it uses.
"""
from __future__ import annotations

import importlib
import shutil
import subprocess
from dataclasses import dataclass

PREFERENCE = ("tensorrt", "openvino", "onnxruntime")


@dataclass
class TargetStatus:
    name: str
    available: bool
    version: str = ""
    detail: str = ""  # devices / providers when available, the reason when not


def _nvidia_gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def probe_tensorrt() -> TargetStatus:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        reason = ("not installed (pip install 'stargan-rt[tensorrt]' on a machine with an NVIDIA "
                  "GPU; the wheels come from NVIDIA's package index)")
        if "libnvinfer" in str(exc):
            reason = f"Python bindings present but the TensorRT libraries are missing ({exc})"
        return TargetStatus("tensorrt", False, detail=reason)
    gpus = _nvidia_gpu_names()
    if not gpus:
        return TargetStatus("tensorrt", False, trt.__version__, "no NVIDIA GPU found (nvidia-smi)")
    return TargetStatus("tensorrt", True, trt.__version__, ", ".join(gpus))


def probe_openvino() -> TargetStatus:
    try:
        import openvino as ov
    except ImportError:
        return TargetStatus("openvino", False, detail="not installed (pip install openvino)")
    devices = ov.Core().available_devices
    if "CPU" not in devices:
        return TargetStatus("openvino", False, ov.__version__, f"no CPU device (found {devices})")
    return TargetStatus("openvino", True, ov.__version__, ", ".join(devices))


def probe_onnxruntime() -> TargetStatus:
    try:
        import onnxruntime as ort
    except ImportError:
        return TargetStatus("onnxruntime", False, detail="not installed (pip install onnxruntime)")
    return TargetStatus("onnxruntime", True, ort.__version__,
                        ", ".join(ort.get_available_providers()))


PROBES = {"tensorrt": probe_tensorrt, "openvino": probe_openvino, "onnxruntime": probe_onnxruntime}


def probe_all() -> list[TargetStatus]:
    return [PROBES[name]() for name in PREFERENCE]
