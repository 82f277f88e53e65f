"""The engine targets, registered in ``auto``'s order of preference, and the engine cache.

Adding a target: a module here with a ``Backend`` subclass (see base.py) and one line in
``BACKENDS``. ``get_engine(target, onnx_path, network, precision, cache)`` returns a loaded
engine and a ``BuildInfo`` saying whether it was built now or reused, where it lives, its size
and build time.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from stargan_rt.backends import onnxruntime, openvino, tensorrt
from stargan_rt.backends.base import (PRECISIONS, Backend, Engine, GraphChoice, TargetStatus,
                                      TensorSpec)
from stargan_rt.backends.cache import EngineCache, EngineKey, sha256_file
from stargan_rt.errors import UserError

# The registry, in `--target auto`'s order of preference: the NVIDIA GPU engine, the fast CPU
# engine, then the portable fallback.
BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    tensorrt.BACKEND,
    openvino.BACKEND,
    onnxruntime.BACKEND,
)}
TARGETS = tuple(BACKENDS)

__all__ = ["BACKENDS", "TARGETS", "PRECISIONS", "Backend", "BuildInfo", "Engine", "GraphChoice",
           "TargetStatus", "TensorSpec", "engine_key", "get_backend", "get_engine"]


def get_backend(target: str) -> Backend:
    try:
        return BACKENDS[target]
    except KeyError:
        raise UserError(f"unknown target {target!r}; expected one of auto, "
                        f"{', '.join(TARGETS)}") from None


@dataclass
class BuildInfo:
    network: str
    target: str
    precision: str
    path: Path
    size: int
    seconds: float
    built: bool                 # False: reused from the cache
    note: str = ""              # why a cached engine was rebuilt, precision hint, ...


def engine_key(target: str, onnx_path: Path, precision: str) -> EngineKey:
    backend = get_backend(target)
    digest = sha256_file(onnx_path)
    weights = Path(onnx_path).with_suffix(".bin")
    if Path(onnx_path).suffix == ".xml" and weights.is_file():  # an OpenVINO IR (NNCF's int8)
        digest = hashlib.sha256((digest + sha256_file(weights)).encode()).hexdigest()
    return EngineKey(onnx_sha256=digest, precision=precision, target=target,
                     runtime_version=backend.runtime_version(), device=backend.device_name(),
                     options=backend.build_options(precision))


def get_engine(target: str, onnx_path: Path, network: str, precision: str,
               cache: EngineCache, log=print, rebuild: bool = False,
               streams: int = 1) -> tuple[Engine, BuildInfo]:
    """Load the cached engine for (ONNX, precision, target, runtime, device) or build it;
    ``streams``: concurrent calls it serves (``Backend.load``)."""
    backend = get_backend(target)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file; run `stargan-rt build` with the bundle "
                        "to export it")
    key = engine_key(target, onnx_path, precision)
    found = cache.lookup(key, network, backend.suffix)
    note = ""
    if found.hit and not rebuild:
        start = time.perf_counter()
        try:
            engine = backend.load(found.path, precision, streams)
            return engine, BuildInfo(network, target, precision, found.path,
                                     found.path.stat().st_size, time.perf_counter() - start, False)
        except UserError as exc:
            note = f"cached engine {found.path.name} failed to load ({exc}); rebuilt"
    elif found.reason:
        note = f"cached engine {found.path.name} was unusable: {found.reason}; rebuilt"
    if note:
        log(f"{target}: {note}")
        cache.invalidate(found.path)
    start = time.perf_counter()
    path = cache.store(key, network, backend.suffix,
                       lambda tmp: backend.compile(onnx_path, precision, tmp, log, cache))
    seconds = time.perf_counter() - start
    engine = backend.load(path, precision, streams)
    return engine, BuildInfo(network, target, precision, path, path.stat().st_size, seconds, True,
                             note)
