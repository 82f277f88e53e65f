"""Shared helpers for tests/test_stream*.py (not a test module)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stargan_rt.errors import UserError
from stargan_rt.stream.sources import Source, SourceDied

REPO = Path(__file__).resolve().parent.parent


def astronaut_bgr() -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) is needed for "
                                                      "the real-photo stream tests")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_frames(count: int, size=(240, 180)) -> list[np.ndarray]:
    """A real photograph (NASA, public domain) seen by a panning / zooming / rolling camera."""
    from stargan_rt.stream.synthetic import moving_photo_frames
    scale = 0.72 * size[0] / 320
    return list(moving_photo_frames(astronaut_bgr(), count, size=size, scale=scale,
                                    pan=24.0))


class FakeTranslator:
    """Engine stand-in: the first domain inverts colours, the second darkens to a quarter."""

    image_size = 64
    arch = "v1"

    def __init__(self, domains=("Invert", "Dark"), delay: float = 0.0):
        self.domains = list(domains)
        self.domain = None
        self.delay = delay
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.domains_used: list[str] = []

    def set_domain(self, name: str) -> None:
        match = next((d for d in self.domains if d.lower() == name.lower()), None)
        if match is None:
            raise UserError(f"unknown domain {name!r}; known: {', '.join(self.domains)}")
        self.domain = match

    def set_labels(self, labels) -> None:
        pass

    def set_style(self, seed=None, ref_bgr=None, psi=1.0) -> None:
        pass

    def set_style_vector(self, style) -> None:
        pass

    def style(self) -> np.ndarray:
        return np.zeros((1, 1), np.float32)

    locates_landmarks = False

    def translate_and_locate(self, crops: np.ndarray):
        return self(crops), None

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        size = self.image_size
        assert crops.dtype == np.uint8 and crops.shape[1:] == (size, size, 3)
        if self.delay:
            time.sleep(self.delay)
        self.calls += 1
        self.batch_sizes.append(len(crops))
        self.domains_used.append(self.domain)
        return 255 - crops if self.domain == self.domains[0] else crops // 4

    def describe(self) -> str:
        return "fake"


class ListSource(Source):
    """In-memory frames; ``live`` paces like a camera; ``die_after`` raises SourceDied."""

    def __init__(self, frames, live: bool = False, fps: float = 25.0, repeat: int = 1,
                 die_after: int | None = None):
        self.frames = frames
        self.live = live
        self.fps = fps
        self.total = len(frames) * repeat
        self.frame_count = self.total
        self.die_after = die_after
        self.i = 0
        self.description = f"list ({self.total} frames)"
        self.closed = False

    def read(self):
        if self.die_after is not None and self.i >= self.die_after:
            raise SourceDied("camera unplugged (test)")
        if self.i >= self.total:
            return None
        if self.live:
            time.sleep(1.0 / self.fps)
        frame = self.frames[self.i % len(self.frames)].copy()
        self.i += 1
        return frame

    def close(self):
        self.closed = True


def run_cli(*args, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "stargan_rt.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=full_env)


def tiny_v1_bundle(path: Path, discriminator: bool = True, labels: str = "attributes") -> Path:
    """A random-weight v1 bundle at 64 px (engine path checks, not image quality)."""
    torch = pytest.importorskip("torch")
    from stargan_rt.bundle import Domain, Manifest, write_bundle
    from stargan_rt.models.v1 import DiscriminatorV1, GeneratorV1

    torch.manual_seed(0)
    manifest = Manifest(arch="v1", image_size=64,
                        domains=[Domain("Black_Hair"), Domain("Blond_Hair"), Domain("Smiling")],
                        config={"conv_dim": 8, "c_dim": 3, "repeat_num": 2, "d_conv_dim": 8,
                                "d_repeat_num": 3, "labels": labels}, name="tiny-v1")
    nets = {"generator": GeneratorV1(8, 3, 2).state_dict()}
    if discriminator:
        nets["discriminator"] = DiscriminatorV1(64, 8, 3, 3).state_dict()
    write_bundle(path, manifest, nets)
    return path


def count_video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n
