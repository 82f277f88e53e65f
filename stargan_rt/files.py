"""Writing files so that a crash, a full disk or Ctrl-C never leaves half a file behind: the one
atomic write every writer of the package uses (engines, ONNX graphs, images, reports, stats,
data sets, checkpoints)."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Union

from stargan_rt.errors import UserError

# bytes or text to write, or a function that writes the temporary file at the path it is given
Content = Union[bytes, bytearray, memoryview, str, Callable[[Path], None]]


def _new_file_mode() -> int:
    """The mode a plain open() would give a new file (0o666 less the umask)."""
    try:
        status = Path("/proc/self/status").read_text()
        mask = int(re.search(r"^Umask:\s*([0-7]+)", status, re.M).group(1), 8)
    except (OSError, AttributeError, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def cannot_write(path: Path, exc: OSError) -> UserError:
    return UserError(f"{path}: cannot write ({exc.strerror or exc}); check that the folder is "
                     "writable and the disk has space")


def write_atomic(path: str | os.PathLike, content: Content,
                 on_error: Callable[[Path, OSError], Exception] = cannot_write) -> Path:
    """Write ``path`` through a temporary file in the same folder, flushed to disk and renamed
    over ``path``: readers see the old file or the new one, never a part. The folder is created
    when missing. An OSError removes the temporary file and raises ``on_error(path, exc)`` (a
    UserError by default)."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            os.fchmod(fd, _new_file_mode())
            if callable(content):
                content(tmp)
                with open(tmp, "rb") as written:
                    os.fsync(written.fileno())
            else:
                data = content.encode() if isinstance(content, str) else bytes(content)
                with os.fdopen(fd, "wb") as handle:
                    fd = -1
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
        finally:
            if fd >= 0:
                os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise on_error(path, exc) from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
    return path
