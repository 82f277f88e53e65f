"""Engines for every target behind one interface (see base.py), built once and cached (cache.py).

``get_engine(target, onnx_path, network, precision, cache)`` returns a loaded engine and a
``BuildInfo`` saying whether it was built now or reused, where it lives, its size and build time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from stargan_rt.backends.base import (INSTALL_HINTS, PRECISIONS, TARGETS, Engine, TensorSpec,
                                      backend_module)
from stargan_rt.backends.cache import EngineCache, EngineKey, sha256_file
from stargan_rt.errors import UserError

__all__ = ["Engine", "TensorSpec", "TARGETS", "PRECISIONS", "INSTALL_HINTS", "BuildInfo",
           "get_engine", "engine_key", "backend_module"]


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
    module = backend_module(target)
    return EngineKey(onnx_sha256=sha256_file(onnx_path), precision=precision, target=target,
                     runtime_version=module.runtime_version(), device=module.device_name(),
                     options=module.build_options(precision))


def get_engine(target: str, onnx_path: Path, network: str, precision: str,
               cache: EngineCache, log=print, rebuild: bool = False) -> tuple[Engine, BuildInfo]:
    """Load the cached engine for (ONNX, precision, target, runtime, device) or build it."""
    module = backend_module(target)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file; run `stargan-rt build` with the bundle "
                        "to export it")
    key = engine_key(target, onnx_path, precision)
    found = cache.lookup(key, network, module.SUFFIX)
    note = ""
    if found.hit and not rebuild:
        start = time.perf_counter()
        try:
            engine = module.load(found.path, precision)
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
    extra = {}
    if target == "tensorrt":
        timing = cache.aux_path("tensorrt", f"timing-{key.runtime_version}-{key.device}.cache")
        path = cache.store(key, network, module.SUFFIX,
                           lambda tmp: module.compile_to(onnx_path, precision, tmp, log, timing))
    else:
        path = cache.store(key, network, module.SUFFIX,
                           lambda tmp: module.compile_to(onnx_path, precision, tmp, log),
                           extra)
    seconds = time.perf_counter() - start
    engine = module.load(path, precision)
    return engine, BuildInfo(network, target, precision, path, path.stat().st_size, seconds, True,
                             note)
