"""Frame sources: camera index, video file, image folder or printf pattern, the shipped sample.

Every source has ``read() -> frame | None`` (None = the source ended normally) and raises
:class:`SourceDied` when it fails after it was opened (camera unplugged, corrupt frame in a
folder). Opening problems raise :class:`~stargan_rt.errors.UserError` with the fix.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

# FFmpeg's own log lines ("moov atom not found") would precede our one-line errors
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from stargan_rt.errors import UserError
from stargan_rt.imaging import IMAGE_SUFFIXES, read_image

SAMPLE_VIDEO = Path(__file__).resolve().parent.parent / "assets" / "sample.mp4"


class SourceDied(RuntimeError):  # noqa: N818 - reads as the event it reports
    """The source failed mid-stream; the message says what happened."""


class Source:
    live = False            # a camera: frames must be dropped, never queued up
    fps: float = 25.0       # nominal frames per second (for pacing and recordings)
    description = "source"
    frame_count: int | None = None

    def read(self) -> np.ndarray | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def info(self) -> dict:
        return {"description": self.description, "live": self.live, "fps": round(self.fps, 3),
                "frame_count": self.frame_count}


# ---------------------------------------------------------------------------------------------
# camera
# ---------------------------------------------------------------------------------------------
def _read_with_timeout(cap: cv2.VideoCapture, timeout: float):
    """cap.read() in a helper thread: some drivers block forever on a dead device."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(cap.read()), daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        return None  # timed out
    return box[0]


class CameraSource(Source):
    live = True
    MEASURE_FRAMES = 30

    def __init__(self, index: int, width: int | None = None, height: int | None = None,
                 fps: float | None = None, mjpg: bool = True, open_timeout: float = 8.0,
                 read_timeout: float = 5.0):
        self.index = index
        self.read_timeout = read_timeout
        self.description = f"camera {index}"
        self._check_device(index)
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(index, api)
        if not cap.isOpened():
            cap.release()
            raise UserError(f"camera {index} exists but could not be opened: it is probably busy "
                            "in another application (close it) or not a capture device; try "
                            "another index with --source N")
        if mjpg:  # raw YUYV modes are slow at high resolutions; MJPG where the camera offers it
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        self.requested = {"width": width, "height": height, "fps": fps, "mjpg": mjpg}
        first = _read_with_timeout(cap, open_timeout)
        if first is None or not first[0] or first[1] is None:
            cap.release()
            why = "did not deliver a frame within %.0f s" % open_timeout if first is None else \
                "delivered no frame"
            raise UserError(f"camera {index} {why}: it may be busy in another application, "
                            "covered by a privacy switch, or not permitted (check camera "
                            "permissions); try another index with --source N")
        self._cap = cap
        self._pending = first[1]
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        self.fourcc = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)) if fourcc else "?"
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or 30.0
        self.driver_fps = self.fps
        self.measured_fps: float | None = None
        self._stamps: list[float] = []
        h, w = first[1].shape[:2]
        self.size = (w, h)
        self.description = f"camera {index} ({w}x{h} {self.fourcc}, driver says {self.fps:g} fps)"

    @staticmethod
    def _check_device(index: int) -> None:
        if not sys.platform.startswith("linux"):
            return
        dev = Path(f"/dev/video{index}")
        if not dev.exists():
            found = sorted(p.name for p in Path("/dev").glob("video*"))
            raise UserError(f"no camera at index {index} ({dev} does not exist; cameras here: "
                            f"{', '.join(found) or 'none'}); pick one with --source N, or stream "
                            "a file with --source FILE (--source sample plays the shipped video)")
        if not os.access(dev, os.R_OK | os.W_OK):
            raise UserError(f"camera {index}: permission denied on {dev}; add your user to the "
                            "'video' group (sudo usermod -aG video $USER, then log in again)")

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            got = _read_with_timeout(self._cap, self.read_timeout)
            if got is None:
                raise SourceDied(f"{self.description}: no frame for {self.read_timeout:.0f} s "
                                 "(unplugged or taken by another application?)")
            ok, frame = got
            if not ok or frame is None:
                raise SourceDied(f"{self.description}: the camera stopped delivering frames "
                                 "(unplugged?)")
        if self.measured_fps is None:
            self._stamps.append(time.perf_counter())
            if len(self._stamps) > self.MEASURE_FRAMES:
                span = self._stamps[-1] - self._stamps[1]  # the first read includes start-up
                if span > 0:
                    self.measured_fps = (len(self._stamps) - 2) / span
                    self.fps = self.measured_fps
                self._stamps = []
        return frame

    def close(self) -> None:
        # a dead device can block release() too: never let it hang the stop
        worker = threading.Thread(target=self._cap.release, daemon=True)
        worker.start()
        worker.join(2.0)

    def info(self) -> dict:
        d = super().info()
        d.update(requested=self.requested, fourcc=self.fourcc, driver_fps=self.driver_fps,
                 measured_fps=None if self.measured_fps is None else round(self.measured_fps, 2))
        return d


# ---------------------------------------------------------------------------------------------
# network stream (rtsp://, http://...): live like a camera
class StreamSource(Source):
    live = True

    def __init__(self, url: str, open_timeout: float = 10.0, read_timeout: float = 5.0):
        self.url = url
        self.read_timeout = read_timeout
        shown = re.sub(r"//[^@/]*@", "//***@", url)  # never print credentials
        self.description = f"stream {shown}"
        holder: list = []
        worker = threading.Thread(target=lambda: holder.append(cv2.VideoCapture(url)),
                                  daemon=True)
        worker.start()
        worker.join(open_timeout)
        cap = holder[0] if holder else None
        if cap is None or not cap.isOpened():
            raise UserError(f"{shown}: cannot open the stream (unreachable, wrong URL, or a "
                            "protocol this OpenCV build lacks; the pip wheels have FFmpeg, not "
                            "GStreamer)")
        first = _read_with_timeout(cap, open_timeout)
        if first is None or not first[0]:
            cap.release()
            raise UserError(f"{shown}: the stream opened but sent no frame")
        self._cap, self._pending = cap, first[1]
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or 25.0
        if not (0 < self.fps < 1000):
            self.fps = 25.0

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        got = _read_with_timeout(self._cap, self.read_timeout)
        if got is None:
            raise SourceDied(f"{self.description}: no frame for {self.read_timeout:.0f} s")
        ok, frame = got
        if not ok or frame is None:
            raise SourceDied(f"{self.description}: the stream ended or broke off")
        return frame

    def close(self) -> None:
        worker = threading.Thread(target=self._cap.release, daemon=True)
        worker.start()
        worker.join(2.0)


# ---------------------------------------------------------------------------------------------
# video file
# ---------------------------------------------------------------------------------------------
class VideoFileSource(Source):
    def __init__(self, path: str | os.PathLike, loop: bool = False):
        self.path = Path(path)
        self.loop = loop
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such video file (give a camera index, a video "
                            "file, an image folder or a pattern like frames/%04d.png)")
        if not os.access(self.path, os.R_OK):
            raise UserError(f"{self.path}: permission denied; make the file readable")
        self._cap = self._open()
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise UserError(f"{self.path}: cannot decode any video frame (not a video, corrupt, "
                            "or a codec this OpenCV lacks); re-encode it, e.g. "
                            "ffmpeg -i IN -c:v libx264 OUT.mp4")
        self._pending = frame
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0)
        if not (0 < self.fps < 1000):
            self.fps = 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        self.size = (frame.shape[1], frame.shape[0])
        self.frames_read = 0
        self.description = f"{self.path.name} ({self.size[0]}x{self.size[1]}, {self.fps:g} fps" + \
            (f", {self.frame_count} frames)" if self.frame_count else ")")

    def _open(self) -> cv2.VideoCapture:
        # one decoding thread: FFmpeg's default (a thread per core) spent ~0.4 ms more CPU per
        # 640x480 frame, taken from the engine; backends without the setting open as they are
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
        if not cap.isOpened():
            cap.release()
            cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise UserError(f"{self.path}: cannot open as a video (not a video, corrupt, or a "
                            "codec this OpenCV lacks)")
        return cap

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            self.frames_read += 1
            return frame
        ok, frame = self._cap.read()
        if ok and frame is not None:
            if frame.shape[1::-1] != self.size:
                raise SourceDied(f"{self.path}: frame {self.frames_read} changed size to "
                                 f"{frame.shape[1]}x{frame.shape[0]}")
            self.frames_read += 1
            return frame
        if self.frame_count and \
                self.frames_read < self.frame_count - max(2, self.frame_count // 50):
            # the container promised more frames than it delivered: truncated or corrupt
            raise SourceDied(f"{self.path}: the video ended after {self.frames_read} of "
                             f"{self.frame_count} frames (truncated or corrupt file)")
        if not self.loop:
            return None
        self._cap.release()
        self._cap = self._open()
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise SourceDied(f"{self.path}: cannot read the first frame again for --loop")
        self.frames_read = 1
        return frame

    def close(self) -> None:
        self._cap.release()


# ---------------------------------------------------------------------------------------------
# images: folder or printf-style pattern
# ---------------------------------------------------------------------------------------------
class ImageSequenceSource(Source):
    def __init__(self, files: list[Path], description: str, loop: bool = False,
                 fps: float = 25.0):
        if not files:
            raise UserError(f"{description}: no images found (expected "
                            f"{'/'.join(sorted(s.lstrip('.') for s in IMAGE_SUFFIXES))} files)")
        self.files = files
        self.loop = loop
        self.fps = fps
        self.frame_count = len(files)
        self._next = 0
        self.size = None
        self.description = f"{description} ({len(files)} images)"

    @classmethod
    def from_folder(cls, folder: Path, loop: bool = False) -> "ImageSequenceSource":
        if not os.access(folder, os.R_OK | os.X_OK):
            raise UserError(f"{folder}: permission denied reading the folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return cls(files, str(folder), loop)

    @classmethod
    def from_pattern(cls, pattern: str, loop: bool = False) -> "ImageSequenceSource":
        folder = Path(pattern).parent
        name = Path(pattern).name
        match = re.search(r"%(0?)(\d*)d", name)
        if not match or not folder.is_dir():
            raise UserError(f"{pattern}: not a usable image pattern (expected something like "
                            "frames/img_%04d.png in an existing folder)")
        width = match.group(2)
        digits = r"\d{%s}" % width if match.group(1) and width else r"\d+"
        regex = re.compile("^" + re.escape(name[:match.start()]) + f"({digits})" +
                           re.escape(name[match.end():]) + "$")
        numbered = []
        for p in folder.iterdir():
            m = regex.match(p.name)
            if m:
                numbered.append((int(m.group(1)), p))
        return cls([p for _, p in sorted(numbered)], pattern, loop)

    def read(self) -> np.ndarray | None:
        if self._next >= len(self.files):
            if not self.loop:
                return None
            self._next = 0
        path = self.files[self._next]
        self._next += 1
        try:
            frame = read_image(path)
        except UserError as exc:
            raise SourceDied(f"{exc} (image {self._next} of {len(self.files)})") from None
        if self.size is None:
            self.size = (frame.shape[1], frame.shape[0])
        elif (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        return frame


# ---------------------------------------------------------------------------------------------
def open_source(spec: str, loop: bool = False, width: int | None = None,
                height: int | None = None, fps: float | None = None) -> Source:
    """``0``/``1``... = camera index; ``sample`` = the shipped video; a video file; an image
    folder; a printf pattern such as ``frames/%04d.png``; a stream URL (rtsp://, http://)."""
    spec = str(spec).strip()
    if re.fullmatch(r"\d+", spec):
        return CameraSource(int(spec), width, height, fps)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        return StreamSource(spec)
    if spec == "sample":
        if not SAMPLE_VIDEO.is_file():
            raise UserError(f"the sample video is missing at {SAMPLE_VIDEO}; regenerate it with "
                            "python scripts/make_sample_video.py")
        return VideoFileSource(SAMPLE_VIDEO, loop)
    if "%" in spec:
        return ImageSequenceSource.from_pattern(spec, loop)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageSequenceSource.from_folder(path, loop)
    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
        return ImageSequenceSource([path], str(path), loop)
    if not path.exists():
        raise UserError(f"{spec}: no such file or folder (give a camera index like 0, a video "
                        "file, an image folder, a pattern like frames/%04d.png, or 'sample')")
    return VideoFileSource(path, loop)
