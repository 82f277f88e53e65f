"""Camera source logic against a stand-in for cv2.VideoCapture (no camera on CI machines):
MJPG / size / FPS requests, the measured FPS, busy, unplugged and hung devices."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from stargan_rt.errors import UserError
from stargan_rt.stream import sources
from stargan_rt.stream.faces import FaceStage
from stargan_rt.stream.pipeline import Pipeline
from stargan_rt.stream.sources import CameraSource

from stream_testlib import FakeTranslator


class FakeCapture:
    behaviour = "ok"      # ok | busy | unplug | hang
    fps = 30.0
    instances: list = []

    def __init__(self, index, api=None):
        self.index = index
        self.props = {}
        self.reads = 0
        self.released = False
        FakeCapture.instances.append(self)

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.behaviour != "busy"

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        if prop == cv2.CAP_PROP_FPS:
            return 60.0  # what drivers often claim
        return self.props.get(prop, 0)

    def read(self):
        self.reads += 1
        if self.behaviour == "unplug" and self.reads > 40:
            return False, None
        if self.behaviour == "hang" and self.reads > 40:
            time.sleep(3600)
        time.sleep(1.0 / self.fps)
        return True, np.full((120, 160, 3), self.reads % 255, np.uint8)

    def release(self):
        self.released = True


@pytest.fixture
def fake_camera(monkeypatch):
    FakeCapture.instances = []
    FakeCapture.behaviour = "ok"
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(CameraSource, "_check_device", staticmethod(lambda index: None))
    return FakeCapture


def test_camera_requests_mjpg_size_fps_and_measures_real_fps(fake_camera):
    cam = CameraSource(0, width=1280, height=720, fps=30)
    props = fake_camera.instances[0].props
    assert props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert props[cv2.CAP_PROP_FRAME_WIDTH] == 1280 and props[cv2.CAP_PROP_FRAME_HEIGHT] == 720
    assert cam.live and cam.driver_fps == 60.0
    for _ in range(CameraSource.MEASURE_FRAMES + 2):
        cam.read()
    assert cam.measured_fps == pytest.approx(30.0, rel=0.25)  # the real rate, not the claim
    assert cam.info()["measured_fps"] == pytest.approx(30.0, rel=0.25)
    cam.close()
    assert fake_camera.instances[0].released


def test_busy_camera_is_a_clear_error(fake_camera):
    fake_camera.behaviour = "busy"
    with pytest.raises(UserError, match="busy"):
        CameraSource(0)


def test_missing_camera_lists_what_exists():
    with pytest.raises(UserError, match="no camera at index 63"):
        sources.open_source("63")


@pytest.mark.parametrize("behaviour,words", [("unplug", "stopped delivering"),
                                             ("hang", "no frame for")])
def test_camera_dying_mid_stream_stops_the_pipeline(fake_camera, behaviour, words):
    fake_camera.behaviour = behaviour
    cam = CameraSource(0, read_timeout=0.5)
    pipeline = Pipeline(cam, FakeTranslator(), FaceStage(64), [], domain="Invert",
                        log=lambda m: None)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the pipeline hung on a dead camera"
    s = pipeline.summary()
    assert s["exit_code"] == 1 and words in s["error"] and s["frames_in"] == 40
    assert s["mode"].startswith("live")


def test_virtual_camera_sink_with_a_stand_in(monkeypatch, tmp_path):
    """--virtual-cam sends BGR frames of a constant size; a missing backend is a clear error."""
    import sys
    import types

    from stargan_rt.stream.sinks import VirtualCameraSink
    from stream_testlib import ListSource, face_frames

    sent = []

    class Camera:
        def __init__(self, width, height, fps, fmt=None, device=None):
            if fake.fail:
                raise RuntimeError("'v4l2loopback' backend: no device found")
            self.width, self.height, self.fmt, self.device = width, height, fmt, "/dev/video9"

        def send(self, frame):
            assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
            sent.append(self.fmt)

        def close(self):
            sent.append("closed")

    fake = types.SimpleNamespace(Camera=Camera, PixelFormat=types.SimpleNamespace(BGR="BGR"),
                                 fail=False)
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    frames = face_frames(5)
    pipeline = Pipeline(ListSource(frames), FakeTranslator(), FaceStage(64),
                        [VirtualCameraSink()], domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0
    assert sent == ["BGR"] * 5 + ["closed"]
    fake.fail = True
    pipeline = Pipeline(ListSource(frames), FakeTranslator(), FaceStage(64),
                        [VirtualCameraSink()], domain="Invert", log=lambda m: None)
    assert pipeline.run() == 2 and "v4l2loopback" in pipeline.summary()["error"]
