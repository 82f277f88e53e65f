"""Moving videos made from one still photograph (the shipped sample video, tests, demos)."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np


def moving_photo_frames(photo: np.ndarray, count: int, size=(320, 240),
                        centre=(225.0, 172.0), scale: float = 0.72, pan: float = 28.0,
                        zoom: float = 0.12, angle: float = 7.0):
    """Yield ``count`` BGR frames of ``size`` viewing ``photo`` through a camera that pans
    (``pan`` source pixels), zooms (+-``zoom``) and rolls (+-``angle`` degrees) smoothly around
    ``centre``; ``scale`` = output pixels per photo pixel at rest."""
    w, h = size
    for i in range(count):
        t = 2 * math.pi * i / max(count, 1)
        cx = centre[0] + pan * math.sin(t)
        cy = centre[1] + 0.4 * pan * math.sin(2 * t)
        s = scale * (1.0 + zoom * math.sin(t + 1.0))
        a = angle * math.sin(t * 1.5)
        m = cv2.getRotationMatrix2D((cx, cy), a, s)
        m[0, 2] += w / 2 - cx
        m[1, 2] += h / 2 - cy
        yield cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)


def write_video(path: str | Path, frames, fps: float = 20.0, fourcc: str = "mp4v") -> int:
    """Write frames to a video file (temp + rename); returns the frame count."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = None
    n = 0
    try:
        for frame in frames:
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"cannot write {fourcc} video to {tmp}")
            writer.write(frame)
            n += 1
    finally:
        if writer is not None:
            writer.release()
    tmp.replace(path)
    return n
