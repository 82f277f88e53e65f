"""The browser view (``webcam --serve``): a page with the live MJPEG stream, the stats and buttons
that switch the domain, the style and the view. The page is ``page.html`` beside this module."""
from __future__ import annotations

import json
import socket
import threading
from importlib import resources

import cv2
import numpy as np

from stargan_rt import options
from stargan_rt.errors import UserError
from stargan_rt.stream import http_guard
from stargan_rt.stream.http_guard import GuardedHandler, GuardedServer
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
    """A page with the live MJPEG stream, the stats and buttons; served from its own thread.

    Who may ask what is decided by http_guard: the Host allow-list, the token (required beyond
    loopback, and for state-changing requests unless the page itself sends them), body limits,
    slow-client deadlines, connection and viewer caps. Every control parameter is validated
    here, so no request can stop or crash the pipeline."""

    needs_source = SourceNeed.SIDE_BY_SIDE

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, quality: int = 80,
                 token: str | None = None):
        self.host, self.port, self.quality = host, port, quality
        self.token = http_guard.check_token(token) if token else http_guard.new_token()
        self.token_given = token is not None
        self.cond = threading.Condition()
        self.latest: np.ndarray | None = None
        self.seq = 0
        self.closing = False
        self.server = None
        self.pipeline = None
        self.encode_lock = threading.Lock()
        self.encoded: tuple[int, bytes] = (-1, b"")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def clients(self) -> int:
        """MJPEG viewers right now."""
        return self.server.viewers if self.server is not None else 0

    def open(self, pipeline) -> None:
        self.pipeline = pipeline
        sink = self

        class Handler(_Handler):
            owner = sink

        class Server(GuardedServer):
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        try:
            self.server = Server((self.host, self.port), Handler)
        except OSError as exc:
            raise UserError(f"--serve {self.host}:{self.port}: cannot listen ({exc.strerror or exc});"
                            " pick another port, e.g. --serve 127.0.0.1:8081") from None
        self.port = self.server.server_address[1]
        self.server.guard = http_guard.Guard(self.host, self.port, self.token)
        self.server.log = pipeline.log
        threading.Thread(target=self.server.serve_forever, name="stargan-http",
                         kwargs={"poll_interval": 0.2}, daemon=True).start()
        if self.server.guard.loopback:
            pipeline.log(f"serving the live page on {self.url} (this machine only; API clients "
                         f"other than the page send Authorization: Bearer {self.token})")
        else:
            pipeline.log(f"serving the live page on {self.url}?token={self.token}")
            pipeline.log(f"note: {self.host} is reachable from other machines; every request "
                         "needs the token in that URL" + ("" if self.token_given else
                                                         " (generated; set one with --token)"))
        pipeline.log(f"http: at most {http_guard.MAX_VIEWERS} viewers and "
                     f"{http_guard.MAX_CONNECTIONS} connections at once")

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
                    viewers=self.clients,
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


# What each control request may carry: {path: {field: description}}; anything else is a 400.
API_FIELDS = {"/api/domain": {"domain": "one of the model's domains"},
              "/api/style": {"seed": "an integer from 0 to 2**63-1, or null for a random one"},
              "/api/ref": {},
              "/api/view": {"toggle": "side_by_side, overlay or mirror"}}


class _Handler(GuardedHandler):
    owner: HttpSink
    server_version = "stargan-rt"

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_plain(status, body, ctype=ctype)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _bad(self, text: str) -> None:
        self.send_plain(400, text)

    def do_GET(self):  # noqa: N802 - http.server API
        sink = self.owner
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            page = page_template().replace("__DOMAINS__", json.dumps(sink.pipeline.domains)) \
                       .replace("__ARCH__", json.dumps(sink.pipeline.arch))
            self.send_plain(200, page, ctype="text/html; charset=utf-8",
                            headers={"X-Frame-Options": "DENY", **self.token_cookie()})
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
        sink, server = self.owner, self.server
        if not server.viewer_slot():
            return self.send_plain(503, f"viewer limit reached ({http_guard.MAX_VIEWERS} "
                                        "viewers at once); try again later", close=True)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seen = -1
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
        except OSError:  # the viewer went away or stopped reading (timeout): not an error
            return
        finally:
            server.viewer_done()

    def do_POST(self):  # noqa: N802
        p = self.owner.pipeline
        path = self.path.split("?", 1)[0]
        allowed = API_FIELDS.get(path)
        if allowed is None:
            return self.send_plain(404, "not found", close=True)
        body = self.read_json()  # answers 411/413/415/400 itself
        if body is None:
            return
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            fields = "; ".join(f"{k}: {v}" for k, v in allowed.items()) or "none"
            return self._bad(f"unknown field(s) {', '.join(map(str, unknown))[:80]} for {path}; "
                             f"allowed: {fields}")
        if path == "/api/domain":
            name = body.get("domain")
            match = None
            if isinstance(name, str):
                match = next((d for d in p.domains if d.lower() == name.lower()), None)
            if match is None:
                return self._bad(f"domain must be one of: {', '.join(p.domains)} "
                                 f"(got {json.dumps(name)[:60]})")
            p.request("domain", match)
            return self._json(200, {"ok": True, "domain": match})
        if path in ("/api/style", "/api/ref"):
            if p.arch != "v2":
                return self._bad("styles apply to StarGAN v2 models only")
            if path == "/api/ref":
                p.request("ref_face", None)
                return self._json(200, {"ok": True})
            seed = body.get("seed")
            if seed is not None:
                try:
                    seed = options.SEED.check(seed, "seed")
                except UserError as exc:
                    return self._bad(str(exc))
            p.request("style", seed)
            return self._json(200, {"ok": True})
        key = body.get("toggle")
        if not isinstance(key, str) or key not in p.view:
            return self._bad(f"toggle must be one of: {', '.join(p.view)} "
                             f"(got {json.dumps(key)[:60]})")
        p.view[key] = not p.view[key]
        return self._json(200, {"ok": True, "view": p.view})
