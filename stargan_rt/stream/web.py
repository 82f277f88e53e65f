"""The browser view (``webcam --serve``): a page with the live MJPEG stream, the stats and buttons
that switch the domain, the style and the view. The page is ``page.html`` beside this module."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.stream.contracts import Sink, SourceNeed
from stargan_rt.stream.sinks import compose


def page_template() -> str:
    """The page, with ``__DOMAINS__`` and ``__ARCH__`` to fill in."""
    return resources.files("stargan_rt.stream").joinpath("page.html").read_text(encoding="utf-8")


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


class HttpSink(Sink):
    """A page with the live MJPEG stream, the stats and buttons; served from its own thread."""

    needs_source = SourceNeed.SIDE_BY_SIDE

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
            page = page_template().replace("__DOMAINS__", json.dumps(sink.pipeline.domains)) \
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
