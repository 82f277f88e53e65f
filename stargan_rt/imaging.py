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


# Largest image decoded (width x height): 50 MP, e.g. 8660 x 5773, about 150 MB as BGR. A
# 20000 x 20000 PNG is a few hundred KB on disk but 1.2 GB decoded; such files are refused
# from their header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 50_000_000


def read_image(path: str | os.PathLike) -> np.ndarray:
    """BGR uint8 (H, W, 3). Raises UserError naming the file when it cannot be decoded or is
    larger than MAX_IMAGE_PIXELS."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, path)


def decode_image(data: np.ndarray, where) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8, refusing images over MAX_IMAGE_PIXELS."""
    check_pixels(bytes(data[:1 << 16]), where)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as exc:  # OpenCV's own size limit (OPENCV_IO_MAX_IMAGE_PIXELS) and such
        first = (str(exc).strip().splitlines() or [""])[-1][:120]
        raise UserError(f"{where}: cannot decode as an image ({first}); check the file is a "
                        "complete image of at most "
                        f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels") from None
    if image is None:
        raise UserError(f"{where}: cannot decode as an image (expected PNG/JPEG/BMP/WebP/TIFF); "
                        "check the file is a complete, uncorrupted image")
    return image


def check_pixels(head: bytes, where) -> None:
    size = image_dimensions(head)
    if size and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise UserError(f"{where}: {size[0]}x{size[1]} pixels is more than the "
                        f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels an input may have; scale it "
                        "down first (the models work on small face crops)")


def image_dimensions(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, GIF, WebP or TIFF file; None when
    the format is not one of these or the header is cut short (the decoder then decides)."""
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head[:2] == b"BM" and len(head) >= 26:
            return (abs(int.from_bytes(head[18:22], "little", signed=True)),
                    abs(int.from_bytes(head[22:26], "little", signed=True)))
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_dimensions(head)
        if head[:2] == b"\xff\xd8":
            return _jpeg_dimensions(head)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_dimensions(head)
    except (IndexError, ValueError):
        return None
    return None


def _webp_dimensions(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        return (int.from_bytes(head[24:27], "little") + 1,
                int.from_bytes(head[27:30], "little") + 1)
    if chunk == b"VP8 ":
        return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                int.from_bytes(head[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_dimensions(head: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(head[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return (int.from_bytes(head[pos + 7:pos + 9], "big"),
                    int.from_bytes(head[pos + 5:pos + 7], "big"))
        pos += 2 + length
    return None


def _tiff_dimensions(head: bytes) -> tuple[int, int] | None:
    order = "little" if head[:2] == b"II" else "big"
    offset = int.from_bytes(head[4:8], order)
    count = int.from_bytes(head[offset:offset + 2], order)
    found = {}
    for i in range(count):
        entry = head[offset + 2 + 12 * i:offset + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, kind = int.from_bytes(entry[:2], order), int.from_bytes(entry[2:4], order)
        if tag in (256, 257):
            found[tag] = int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


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


def box_iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0
