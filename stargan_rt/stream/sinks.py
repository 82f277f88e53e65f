"""Outputs: OpenCV window with overlay and keys, video recording, virtual camera, progress lines,
callbacks. Each is a ``stream.contracts.Sink``; the browser page is in ``stream.web``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.stream.contracts import Sink, SourceNeed

KEY_HELP = ("keys: q/Esc quit | d/D next/previous domain | 1-9 domain by number | n new style (v2) "
            "| r current face as style reference (v2) | o overlay | s side-by-side | m mirror")


def compose(result: np.ndarray, source: np.ndarray, side_by_side: bool) -> np.ndarray:
    if not side_by_side or source is result:
        return result
    if source.shape != result.shape:
        source = cv2.resize(source, (result.shape[1], result.shape[0]))
    return np.hstack([source, result])


def overlay_lines(pipeline) -> list[tuple[str, tuple[int, int, int]]]:
    live = pipeline.stats.live()
    ms = live["stage_ms"]
    fps = live["fps"]
    dropped = sum(v for k, v in pipeline.dropped().items() if k != "parity_skipped")

    def f(name):
        return "-" if ms.get(name) is None else f"{ms[name]:.1f}"
    white, red, green = (255, 255, 255), (60, 60, 255), (120, 255, 120)
    target = pipeline.target.domain or "labels"
    if pipeline.arch == "v2":
        target += " ref-face" if pipeline.target.ref_bgr is not None else \
            f" seed {pipeline.target.seed}"
    lines = [
        (f"{'-' if fps is None else f'{fps:.1f}'} FPS   in {live['frames_in']} out "
         f"{live['frames_out']} dropped {dropped}", white),
        (f"ms cap {f('capture')} det {f('detect')} inf {f('infer')} paste {f('paste')} "
         f"out {f('output')} | e2e {f('end_to_end')}", white),
        (f"{target} | {pipeline.engine} | {pipeline.precision}", white),
    ]
    parity = live["parity"]
    if parity:
        if parity.get("error"):
            lines.append((f"parity error: {parity['error'][:60]}", red))
        elif parity["checks"]:
            bad = parity["failed"] > 0
            lines.append((f"parity PSNR {parity['psnr_db']:.1f} dB max err "
                          f"{parity['max_abs_err']} ({parity['checks']} checks"
                          f"{', BELOW THRESHOLD' if bad else ''})", red if bad else green))
    return lines


def draw_overlay(image: np.ndarray, lines) -> np.ndarray:
    scale = max(0.35, min(0.7, image.shape[1] / 1100))
    thickness = 1
    line_h = int(22 * scale / 0.6)
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]
                for t, _ in lines) + 12
    height = line_h * len(lines) + 8
    box = image[:min(height, image.shape[0]), :min(width, image.shape[1])]
    box[:] = (box * 0.45).astype(np.uint8)
    for i, (text, colour) in enumerate(lines):
        cv2.putText(image, text, (6, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                    thickness, cv2.LINE_AA)
    return image


def gui_available() -> str | None:
    """None when an OpenCV window can be shown, else why not."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                 os.environ.get("WAYLAND_DISPLAY")):
        return "no display ($DISPLAY is not set)"
    info = cv2.getBuildInformation()
    gui = [line for line in info.splitlines() if line.strip().startswith("GUI:")]
    if gui and "NONE" in gui[0].upper():
        return "this OpenCV build has no GUI (opencv-python-headless?)"
    return None


# ---------------------------------------------------------------------------------------------
class WindowSink(Sink):
    needs_source = SourceNeed.SIDE_BY_SIDE

    def __init__(self, title: str = "stargan-rt"):
        self.title = title
        self.keys_seen: list[int] = []

    def open(self, pipeline) -> None:
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
        except cv2.error as exc:
            raise UserError(f"cannot open a window ({exc}); run with --headless") from None
        self.shown = False
        pipeline.log(KEY_HELP)

    def write(self, result, source, packet, pipeline):
        image = compose(result, source, pipeline.view["side_by_side"])
        if pipeline.view["overlay"]:
            image = draw_overlay(image.copy() if image is result else image,
                                 overlay_lines(pipeline))
        if not self.shown:  # start at the frame's own size (at most 1280 px wide)
            scale = min(1.0, 1280 / image.shape[1])
            try:
                cv2.resizeWindow(self.title, int(image.shape[1] * scale),
                                 int(image.shape[0] * scale))
            except cv2.error:
                pass
        cv2.imshow(self.title, image)
        self.shown = True
        return self._keys(pipeline, cv2.waitKey(1))

    def idle(self, pipeline):
        return self._keys(pipeline, cv2.waitKey(1)) if self.shown else True

    def _keys(self, pipeline, key: int):
        if self.shown:
            try:
                if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    return False  # the window was closed
            except cv2.error:
                return False
        if key < 0:
            return True
        key &= 0xFF
        self.keys_seen.append(key)
        return handle_key(pipeline, chr(key) if key < 128 else "", key)

    def close(self, pipeline) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


def handle_key(pipeline, char: str, code: int = 0) -> bool:
    """Apply one key press; False means quit."""
    domains = pipeline.domains
    if char in ("q", "Q") or code == 27:
        return False
    if char in ("d", "D", "]", "[") and domains:
        current = pipeline.target.domain
        i = domains.index(current) if current in domains else -1
        step = -1 if char in ("D", "[") else 1
        pipeline.request("domain", domains[(i + step) % len(domains)])
    elif char.isdigit() and char != "0" and int(char) <= len(domains):
        pipeline.request("domain", domains[int(char) - 1])
    elif char == "n":
        pipeline.request("style", None)
    elif char == "r":
        pipeline.request("ref_face", None)
    elif char == "o":
        pipeline.view["overlay"] = not pipeline.view["overlay"]
    elif char == "s":
        pipeline.view["side_by_side"] = not pipeline.view["side_by_side"]
    elif char == "m":
        pipeline.view["mirror"] = not pipeline.view["mirror"]
    elif char == "h":
        pipeline.log(KEY_HELP)
    return True


# ---------------------------------------------------------------------------------------------
class RecordSink(Sink):
    """Writes the result video to a temp file beside OUT, renamed to OUT when the run stops.

    In live mode (camera, --realtime) frames dropped to keep latency low are filled by
    repeating the last result, so the recording keeps the real duration at the source's FPS."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower() or ".mp4"
        self.fourcc = "MJPG" if suffix == ".avi" else "mp4v"
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        self.fps = fps
        self.writer = None
        self.size = None
        self.frames = 0
        self.last_index: int | None = None
        self.written = False  # True once the recording was verified and renamed into place

    def open(self, pipeline) -> None:
        folder = self.path.parent
        if self.path.is_dir():
            raise UserError(f"--record {self.path}: that is a directory; give a file name "
                            "such as out.mp4")
        if not folder.is_dir():
            raise UserError(f"--record {self.path}: the folder {folder} does not exist; create "
                            "it or record elsewhere")
        if not os.access(folder, os.W_OK):
            raise UserError(f"--record {self.path}: the folder {folder} is not writable")
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov", ".avi"):
            raise UserError(f"--record {self.path}: use a .mp4 (mp4v) or .avi (MJPG) file name")
        self.fps = self.fps or pipeline.source.fps or 25.0

    def write(self, result, source, packet, pipeline):
        if self.writer is None:
            self.size = (result.shape[1], result.shape[0])
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc),
                                          float(self.fps), self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise UserError(f"--record {self.path}: OpenCV cannot write {self.fourcc} video "
                                "here; try an .avi file name")
        if (result.shape[1], result.shape[0]) != self.size:
            result = cv2.resize(result, self.size)
        repeat = 1
        if pipeline.lossy and self.last_index is not None:
            repeat = max(1, min(packet.index - self.last_index, int(2 * self.fps) + 1))
        self.last_index = packet.index
        for _ in range(repeat):
            self.writer.write(result)
            self.frames += 1
        return True

    def close(self, pipeline) -> None:
        if self.writer is None:
            pipeline.log(f"recording: no frames, {self.path} not written")
            return
        self.writer.release()
        self.writer = None
        try:
            self.verify()
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            self.tmp.unlink(missing_ok=True)  # never leave a partial recording behind
            if isinstance(exc, OSError):
                raise UserError(f"--record {self.path}: cannot write the recording "
                                f"({exc.strerror or exc}); nothing was kept") from None
            raise
        self.written = True
        pipeline.log(f"recorded {self.frames} frames to {self.path} "
                     f"({self.size[0]}x{self.size[1]} @ {self.fps:g} fps)")

    def verify(self) -> None:
        """Reopen what was written: the container must list every frame and its first frame
        must decode. OpenCV's writer reports no write errors, so a full disk shows up here
        (no moov atom, too few frames)."""
        size = self.tmp.stat().st_size if self.tmp.is_file() else 0
        cap = cv2.VideoCapture(str(self.tmp)) if size else None
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap and cap.isOpened() else 0
            first = cap.read()[0] if count else False
        finally:
            if cap is not None:
                cap.release()
        # fewer frames than written is a failed file; one more than counted is a frame an
        # interrupt (SIGINT) landed on between writing it and counting it: the file is the truth
        if count < self.frames or not first:
            raise UserError(f"--record {self.path}: the recording failed: {self.frames} frames "
                            f"were written but the file ({size} bytes) holds "
                            f"{count if first else 0} readable ones (disk full or a size "
                            "limit?); nothing was kept: free space or record elsewhere")
        self.frames = count


# ---------------------------------------------------------------------------------------------
class VirtualCameraSink(Sink):
    """Sends the result to a virtual camera (pyvirtualcam: v4l2loopback on Linux, OBS on
    Windows / macOS), so video-call apps can use it as a webcam."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.cam = None
        self.size = None

    def open(self, pipeline) -> None:
        import importlib.util
        if "pyvirtualcam" not in sys.modules and importlib.util.find_spec("pyvirtualcam") is None:
            raise UserError("--virtual-cam needs pyvirtualcam: pip install 'stargan-rt[virtualcam]'"
                            " (on Linux also the v4l2loopback module: sudo modprobe v4l2loopback "
                            "devices=1 exclusive_caps=1)")

    def write(self, result, source, packet, pipeline):
        import pyvirtualcam
        if self.cam is None:
            self.size = (result.shape[1], result.shape[0])
            try:
                self.cam = pyvirtualcam.Camera(self.size[0], self.size[1],
                                               float(pipeline.source.fps or 30.0),
                                               fmt=pyvirtualcam.PixelFormat.BGR,
                                               device=self.device)
            except Exception as exc:  # noqa: BLE001 - the backends raise RuntimeError & co
                raise UserError(f"--virtual-cam: no virtual camera could be opened ({exc}); on "
                                "Linux load v4l2loopback (sudo modprobe v4l2loopback devices=1 "
                                "exclusive_caps=1), on Windows / macOS install OBS") from None
            pipeline.log(f"virtual camera: {self.cam.device} ({self.size[0]}x{self.size[1]})")
        if (result.shape[1], result.shape[0]) != self.size:
            result = cv2.resize(result, self.size)
        self.cam.send(np.ascontiguousarray(result))
        return True

    def close(self, pipeline) -> None:
        if self.cam is not None:
            self.cam.close()
            self.cam = None


# ---------------------------------------------------------------------------------------------
class ProgressSink(Sink):
    """Headless runs: one status line every ``interval`` seconds (FPS, frames, stage ms)."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self.next = None

    def open(self, pipeline) -> None:
        import time
        self.clock = time.perf_counter
        self.next = self.clock() + self.interval

    def write(self, result, source, packet, pipeline):
        now = self.clock()
        if now >= self.next:
            self.next = now + self.interval
            pipeline.log("  " + " | ".join(text for text, _ in overlay_lines(pipeline)))
        return True


# ---------------------------------------------------------------------------------------------
class CallbackSink(Sink):
    """Calls ``fn(result, source, packet, pipeline)`` per frame (tests, embedding)."""

    def __init__(self, fn):
        self.fn = fn

    def write(self, result, source, packet, pipeline):
        return self.fn(result, source, packet, pipeline)
