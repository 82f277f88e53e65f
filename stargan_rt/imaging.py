"""Image files and model framing (numpy + OpenCV only; no torch)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


def read_image(path: str | os.PathLike) -> np.ndarray:
    """BGR uint8 (H, W, 3). Raises UserError naming the file when it cannot be decoded."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: cannot decode as an image (expected PNG/JPEG/BMP/WebP/TIFF); "
                        "check the file is a complete, uncorrupted image")
    return image


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the file suffix and write atomically."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise UserError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
    write_atomic(path, encoded.tobytes())


def fit_to_model(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, then resize to size x size.

    A CelebA 178x218 photo gives exactly the official CenterCrop(178) framing; an image already at
    the model's size passes through unchanged.
    """
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interp)


def bgr_to_unit_nchw(batch: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) BGR -> float32 (N, 3, H, W) RGB in [-1, 1] (the models' input)."""
    rgb = batch[..., ::-1].astype(np.float32)
    return np.ascontiguousarray((rgb / 127.5 - 1.0).transpose(0, 3, 1, 2))


def unit_nchw_to_bgr(batch: np.ndarray) -> np.ndarray:
    """float (N, 3, H, W) RGB in [-1, 1] -> uint8 (N, H, W, 3) BGR, rounded and clamped."""
    scaled = (np.asarray(batch, dtype=np.float32) + 1.0) * 127.5
    rgb = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(0, 2, 3, 1)[..., ::-1])


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
