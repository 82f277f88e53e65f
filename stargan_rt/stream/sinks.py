"""Outputs: OpenCV window with overlay and keys, video recording, HTTP page with an MJPEG stream.

A sink has ``needs_source`` (True: ``source`` must be the untouched frame; "side_by_side": only
while that view is on; False: never), ``open(pipeline)``,
``write(result, source, packet, pipeline) -> False to quit``,
optional ``idle(pipeline)`` (called while no frame is ready) and ``close(pipeline)``, which must
finalise whatever it wrote on every stop path.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from stargan_rt.errors import UserError

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
class WindowSink:
    needs_source = "side_by_side"

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
class RecordSink:
    """Writes the result video to a temp file beside OUT, renamed to OUT when the run stops.

    In live mode (camera, --realtime) frames dropped to keep latency low are filled by
    repeating the last result, so the recording keeps the real duration at the source's FPS."""

    needs_source = False

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

    def open(self, pipeline) -> None:
        folder = self.path.parent
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
        self.frames += repeat
        return True

    def close(self, pipeline) -> None:
        if self.writer is None:
            pipeline.log(f"recording: no frames, {self.path} not written")
            return
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)
        pipeline.log(f"recorded {self.frames} frames to {self.path} "
                     f"({self.size[0]}x{self.size[1]} @ {self.fps:g} fps)")


# ---------------------------------------------------------------------------------------------
class VirtualCameraSink:
    """Sends the result to a virtual camera (pyvirtualcam: v4l2loopback on Linux, OBS on
    Windows / macOS), so video-call apps can use it as a webcam."""

    needs_source = False

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
class ProgressSink:
    """Headless runs: one status line every ``interval`` seconds (FPS, frames, stage ms)."""

    needs_source = False

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

    def close(self, pipeline) -> None:
        pass


# ---------------------------------------------------------------------------------------------
class CallbackSink:
    """Calls ``fn(result, source, packet, pipeline)`` per frame (tests, embedding)."""

    needs_source = False

    def __init__(self, fn):
        self.fn = fn

    def open(self, pipeline) -> None:
        pass

    def write(self, result, source, packet, pipeline):
        return self.fn(result, source, packet, pipeline)

    def close(self, pipeline) -> None:
        pass


# ---------------------------------------------------------------------------------------------
def parse_serve(value: str) -> tuple[str, int]:
    """``PORT``, ``:PORT`` or ``HOST:PORT``; the host defaults to 127.0.0.1 (never all
    interfaces unless asked)."""
    value = value.strip()
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise UserError(f"--serve {value!r}: expected PORT or HOST:PORT, e.g. 127.0.0.1:8080") \
            from None
    return host, number


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stargan-rt live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:1em}
#stream{max-width:100%;border:1px solid #444;background:#000;min-height:120px}
button{margin:.2em;padding:.4em .8em;border-radius:4px;border:1px solid #666;background:#333;
color:#eee;cursor:pointer}button.active{background:#2a6;border-color:#2a6}
pre{background:#1b1b1b;padding:.6em;font-size:.85em;overflow:auto}
.warn{color:#f66}
</style></head><body>
<h1>stargan-rt live</h1>
<div><img id="stream" src="stream.mjpg" alt="live stream"></div>
<p>Domain: <b id="current-domain">?</b> &middot; <span id="engine"></span>
 &middot; <span id="fps">-</span> FPS &middot; <span id="parity"></span></p>
<div id="domains"></div>
<div id="controls">
<button id="side-by-side">side by side</button>
<button id="mirror">mirror</button>
<button id="new-style" class="v2">new style</button>
<button id="ref-face" class="v2">use current face as style</button>
</div>
<pre id="stats">loading...</pre>
<script>
const domains = __DOMAINS__;
const arch = __ARCH__;
async function post(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
                               body: JSON.stringify(body || {})});
  if (!r.ok) { alert(await r.text()); }
  refresh();
}
const box = document.getElementById('domains');
domains.forEach((name) => {
  const b = document.createElement('button');
  b.textContent = name; b.className = 'domain'; b.dataset.domain = name;
  b.onclick = () => post('api/domain', {domain: name});
  box.appendChild(b);
});
document.getElementById('side-by-side').onclick = () => post('api/view', {toggle: 'side_by_side'});
document.getElementById('mirror').onclick = () => post('api/view', {toggle: 'mirror'});
document.getElementById('new-style').onclick = () => post('api/style', {});
document.getElementById('ref-face').onclick = () => post('api/ref', {});
if (arch !== 'v2') document.querySelectorAll('.v2').forEach((b) => b.style.display = 'none');
async function refresh() {
  try {
    const s = await (await fetch('api/stats')).json();
    document.getElementById('current-domain').textContent = s.domain;
    document.getElementById('engine').textContent = s.engine + ' ' + s.precision;
    document.getElementById('fps').textContent = s.fps === null ? '-' : s.fps.toFixed(1);
    const p = s.parity;
    const pe = document.getElementById('parity');
    pe.textContent = p && p.checks ? ('parity PSNR ' + p.psnr_db.toFixed(1) + ' dB, max err '
      + p.max_abs_err + (p.failed ? ' (BELOW THRESHOLD)' : '')) : '';
    pe.className = p && p.failed ? 'warn' : '';
    document.querySelectorAll('button.domain').forEach((b) =>
      b.classList.toggle('active', b.dataset.domain === s.domain));
    document.getElementById('stats').textContent = JSON.stringify(s, null, 1);
  } catch (e) { document.getElementById('stats').textContent = 'stream ended'; }
}
setInterval(refresh, 500); refresh();
</script></body></html>
"""


class HttpSink:
    """A page with the live MJPEG stream, the stats and buttons; served from its own thread."""

    needs_source = "side_by_side"

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, quality: int = 80):
        self.host, self.port, self.quality = host, port, quality
        self.cond = threading.Condition()
        self.latest: np.ndarray | None = None
        self.seq = 0
        self.closing = False
        self.server = None
        self.pipeline = None
        self.clients = 0
        self.encode_lock = threading.Lock()
        self.encoded: tuple[int, bytes] = (-1, b"")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def open(self, pipeline) -> None:
        self.pipeline = pipeline
        sink = self

        class Handler(_Handler):
            owner = sink

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        try:
            self.server = Server((self.host, self.port), Handler)
        except OSError as exc:
            raise UserError(f"--serve {self.host}:{self.port}: cannot listen ({exc.strerror or exc});"
                            " pick another port, e.g. --serve 127.0.0.1:8081") from None
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="stargan-http",
                         kwargs={"poll_interval": 0.2}, daemon=True).start()
        pipeline.log(f"serving the live page on {self.url}")
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            pipeline.log(f"note: {self.host} is reachable from other machines; anyone who can "
                         "reach it can watch the stream and switch the domain")

    def write(self, result, source, packet, pipeline):
        image = compose(result, source, pipeline.view["side_by_side"])
        with self.cond:
            self.latest = image
            self.seq += 1
            self.cond.notify_all()
        return True

    def jpeg(self, image: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return data.tobytes() if ok else b""

    def latest_jpeg(self, seq: int, image: np.ndarray) -> bytes:
        """Encode each frame once, however many browsers watch."""
        with self.encode_lock:
            if self.encoded[0] != seq:
                self.encoded = (seq, self.jpeg(image))
            return self.encoded[1]

    def stats(self) -> dict:
        p = self.pipeline
        live = p.stats.live()
        live.update(domain=p.target.domain, domains=p.domains, arch=p.arch, engine=p.engine,
                    precision=p.precision, view=dict(p.view), source=p.source.description,
                    dropped=p.dropped(), faces_found=p.stats.faces_found,
                    frames_with_faces=p.stats.frames_with_faces, running=not self.closing,
                    style=({"seed": p.target.seed, "reference": p.target.ref_bgr is not None}
                           if p.arch == "v2" else None))
        return live

    def close(self, pipeline) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: HttpSink
    server_version = "stargan-rt"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the pipeline has its own log
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self):  # noqa: N802 - http.server API
        sink = self.owner
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            page = PAGE.replace("__DOMAINS__", json.dumps(sink.pipeline.domains)) \
                       .replace("__ARCH__", json.dumps(sink.pipeline.arch))
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/api/stats":
            self._json(200, sink.stats())
        elif path == "/snapshot.jpg":
            with sink.cond:
                image = sink.latest
            if image is None:
                self._send(503, b"no frame yet", "text/plain")
            else:
                self._send(200, sink.jpeg(image), "image/jpeg")
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(404, b"not found", "text/plain")

    def _stream(self) -> None:
        sink = self.owner
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seen = -1
        sink.clients += 1
        try:
            while True:
                with sink.cond:
                    while sink.seq == seen and not sink.closing:
                        sink.cond.wait(1.0)
                    if sink.closing and sink.seq == seen:
                        return
                    image, seen = sink.latest, sink.seq
                if image is None:
                    continue
                data = sink.latest_jpeg(seen, image)
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " +
                                 str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                self.wfile.flush()
                if sink.closing:
                    return
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
        finally:
            sink.clients -= 1

    def do_POST(self):  # noqa: N802
        sink = self.owner
        p = sink.pipeline
        # JSON only: a cross-site form cannot send it without a CORS preflight we never answer
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._send(415, b"send application/json", "text/plain")
        try:
            length = min(int(self.headers.get("Content-Length") or 0), 65536)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except (ValueError, json.JSONDecodeError):
            return self._send(400, b"bad JSON body", "text/plain")
        path = self.path.split("?", 1)[0]
        if path == "/api/domain":
            name = str(body.get("domain", ""))
            match = next((d for d in p.domains if d.lower() == name.lower()), None)
            if match is None:
                return self._send(400, f"unknown domain {name!r}; known: "
                                       f"{', '.join(p.domains)}".encode(), "text/plain")
            p.request("domain", match)
            return self._json(200, {"ok": True, "domain": match})
        if path in ("/api/style", "/api/ref"):
            if p.arch != "v2":
                return self._send(400, b"styles apply to StarGAN v2 models only", "text/plain")
            if path == "/api/ref":
                p.request("ref_face", None)
            else:
                seed = body.get("seed")
                p.request("style", None if seed is None else int(seed))
            return self._json(200, {"ok": True})
        if path == "/api/view":
            key = body.get("toggle")
            if key not in p.view:
                return self._send(400, b"toggle one of: side_by_side, overlay, mirror", "text/plain")
            p.view[key] = not p.view[key]
            return self._json(200, {"ok": True, "view": p.view})
        self._send(404, b"not found", "text/plain")
