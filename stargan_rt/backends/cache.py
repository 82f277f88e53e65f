"""Engine cache: built engines keyed by ONNX hash, precision, target, runtime version and device.

Layout under the root (``--cache-dir``, else ``$STARGAN_RT_CACHE``, else ``~/.cache/stargan-rt``)::

    onnx/<bundle hash>/<io>/<network>.<precision>.onnx     exported / converted graphs
    engines/<target>/<network>-<precision>-<key>.<ext>     built engines
    engines/<target>/<network>-<precision>-<key>.<ext>.json  their key, size and sha256
    tensorrt/timing-<trt version>-<gpu>.cache               TensorRT timing cache

Every file is written to a temp file in the same directory and renamed into place, engine first,
then its metadata: an interrupted build leaves an engine without metadata, which the next lookup
treats as absent and rebuilds. A lookup verifies the engine's size and sha256 against the
metadata, so a truncated or corrupted file is never loaded. A read-only or full disk raises a
UserError (exit 2) and leaves the cache as it was.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from stargan_rt.bundle import sha256_file  # noqa: F401 (one definition; re-exported)
from stargan_rt import files
from stargan_rt.errors import UserError

# Revision of the exported graphs (export/contract.py): bumped whenever they change, so caches
# holding older exports export again. 2: the fan graph gained its landmarks output; 3: its masks
# summed part by part (the same values; the FAN a fifth to a quarter faster).
ONNX_REVISION = 3

CACHE_ENV = "STARGAN_RT_CACHE"
KEY_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stargan-rt"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60] or "unknown"


def disk_error(path: Path, exc: OSError, root: Path) -> UserError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "it is read-only or not writable"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full"
    else:
        why = "the write failed"
    return UserError(f"cannot write {path} in the engine cache {root}: {why} ({reason}); free "
                     f"space or point the cache elsewhere with --cache-dir DIR or {CACHE_ENV}=DIR "
                     "(nothing half-written was left behind)")


def write_atomic(path: Path, write: Callable[[Path], None] | bytes,
                 root: Path | None = None) -> None:
    """``files.write_atomic`` with the engine cache's error (where to point the cache instead)."""
    files.write_atomic(path, write, lambda where, exc: disk_error(where, exc, root or path.parent))


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    precision: str
    target: str
    runtime_version: str
    device: str
    options: str = ""          # target-specific build options (e.g. OpenVINO's precision hint)

    @property
    def digest(self) -> str:
        text = json.dumps({"v": KEY_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Lookup:
    path: Path
    hit: bool
    reason: str = ""           # why it is not usable (when hit is False and the file exists)


class EngineCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    # -- paths ---------------------------------------------------------------------------------
    def onnx_dir(self, bundle_hash: str, io: str) -> Path:
        return self.root / "onnx" / f"{bundle_hash[:16]}-r{ONNX_REVISION}" / io

    def engine_path(self, key: EngineKey, network: str, suffix: str) -> Path:
        return (self.root / "engines" / key.target
                / f"{network}-{key.precision}-{key.digest}{suffix}")

    def aux_path(self, *parts: str) -> Path:
        return self.root.joinpath(*(_slug(p) if i == len(parts) - 1 else p
                                    for i, p in enumerate(parts)))

    @staticmethod
    def meta_path(engine: Path) -> Path:
        return engine.with_name(engine.name + ".json")

    # -- lookup / store ------------------------------------------------------------------------
    def lookup(self, key: EngineKey, network: str, suffix: str) -> Lookup:
        path = self.engine_path(key, network, suffix)
        if not path.exists():
            return Lookup(path, False)
        meta_file = self.meta_path(path)
        try:
            meta = json.loads(meta_file.read_text())
        except FileNotFoundError:
            return Lookup(path, False, "it has no metadata (an interrupted build?)")
        except (OSError, ValueError) as exc:
            return Lookup(path, False, f"its metadata is unreadable ({exc})")
        if meta.get("key") != asdict(key):
            return Lookup(path, False, "its metadata belongs to another build key")
        size = path.stat().st_size
        if size != meta.get("size"):
            return Lookup(path, False, f"it is truncated or changed ({size} bytes, "
                                       f"{meta.get('size')} expected)")
        if sha256_file(path) != meta.get("sha256"):
            return Lookup(path, False, "it is corrupt (sha256 differs from when it was built)")
        return Lookup(path, True)

    def store(self, key: EngineKey, network: str, suffix: str,
              write: Callable[[Path], None] | bytes, extra: dict | None = None) -> Path:
        path = self.engine_path(key, network, suffix)
        write_atomic(path, write, self.root)
        meta = {"key": asdict(key), "network": network, "size": path.stat().st_size,
                "sha256": sha256_file(path), **(extra or {})}
        write_atomic(self.meta_path(path), (json.dumps(meta, indent=2) + "\n").encode(), self.root)
        return path

    def invalidate(self, path: Path) -> None:
        """Remove a bad entry (metadata first, so a half-removed entry reads as absent)."""
        for victim in (self.meta_path(path), path):
            try:
                victim.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise disk_error(victim, exc, self.root) from None
