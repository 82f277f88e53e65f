"""Reading and writing ONNX files with clear errors and atomic writes (numpy + onnx only)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import onnx

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic
from stargan_rt.export.contract import META_PREFIX


def load_model(path: str | os.PathLike, check: bool = True) -> onnx.ModelProto:
    """Load and (by default) check an ONNX file; any failure is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file; export one with `stargan-rt export`")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not an ONNX model; re-run `stargan-rt export`")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserError(f"{path}: not a readable ONNX model (truncated or corrupt: "
                        f"{type(exc).__name__}: {exc}); delete it and re-run `stargan-rt export`")
    if not model.graph.node:
        raise UserError(f"{path}: the ONNX model has no nodes (truncated or not an ONNX file); "
                        "delete it and re-run `stargan-rt export`")
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise UserError(f"{path}: the ONNX checker rejects the model ({exc}); "
                            "delete it and re-run `stargan-rt export`")
    return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write atomically (``files.write_atomic``)."""
    def error(where: Path, exc: OSError) -> UserError:
        return UserError(f"{where}: cannot write the ONNX file ({exc.strerror or exc}); "
                         "check the directory is writable and the disk has space")
    return write_atomic(path, model.SerializeToString(), error)


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """stargan_rt.* metadata_props without the prefix."""
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(META_PREFIX)}


def set_metadata(model: onnx.ModelProto, **values) -> None:
    """Set stargan_rt.* metadata_props (dicts / lists are stored as JSON)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        full = META_PREFIX + key
        if full in existing:
            existing[full].value = text
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = full, text
