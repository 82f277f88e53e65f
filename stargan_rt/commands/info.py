"""`stargan-rt info`: versions and the engine targets this machine can (and cannot) use."""
from __future__ import annotations

import importlib
import platform
import sys

from stargan_rt import __version__
from stargan_rt.targets import PREFERENCE, probe_all


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions and available engine targets")
    parser.set_defaults(func=run)


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except ImportError:
        return "not installed"


def run(args) -> int:
    print(f"stargan-rt {__version__}  python {sys.version.split()[0]}  "
          f"{platform.system()} {platform.machine()}")
    for module in ("numpy", "cv2", "onnx", "onnxruntime", "openvino", "torch", "tensorrt",
                   "pycuda"):
        print(f"  {module:<12} {_version(module)}")
    print("engine targets (auto picks the first available of "
          f"{', '.join(PREFERENCE)}):")
    statuses = probe_all()
    for status in statuses:
        mark = "yes" if status.available else "no "
        print(f"  {status.name:<12} {mark}  {status.version:<12} {status.detail}")
    best = next((s.name for s in statuses if s.available), "none")
    print(f"auto target: {best}")
    from stargan_rt.stream import blazeface

    home = blazeface.detector_home()
    print("face detector (webcam default blazeface): " + (
        f"installed in {home}" if blazeface.installed() else
        "not installed: run `stargan-rt pull face-detector`, or pass --detector haar"))
    return 0
