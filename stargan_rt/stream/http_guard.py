"""Who and what the served page (`webcam --serve`) answers: the rules, apart from the server.

- Host allow-list (DNS rebinding): only requests whose Host is the bound address, localhost,
  127.0.0.1 or ::1 are answered (403 otherwise); a server bound to a wildcard address also
  accepts IP literals and this machine's own names, which a rebinding page cannot send.
- Token: bound beyond loopback, every request needs it; on loopback, state-changing requests
  (POST) need it unless the page itself sent them (same-origin: the browser's Origin header or
  Sec-Fetch-Site). It is taken from ``?token=``, ``Authorization: Bearer`` or the cookie the
  server sets when the page is opened with ``?token=``.
- Bodies: JSON only, Content-Length required (411 when missing, negative or not a number), at
  most MAX_BODY bytes (413), refused without reading.
- Slow clients: every socket read or write times out after SOCKET_TIMEOUT s, and a request must
  arrive in full (line, headers, body) within REQUEST_DEADLINE s of the connection becoming
  ready for it; a watchdog shuts the socket of one that does not.
- Capacity: at most MAX_CONNECTIONS connections are handled at once (more are answered 503 and
  closed), of which at most MAX_VIEWERS stream MJPEG.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import threading
import time
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from stargan_rt.errors import UserError

MAX_BODY = 4096            # bytes of JSON a control request may carry
SOCKET_TIMEOUT = 10.0      # s per read / write on a connection
REQUEST_DEADLINE = 15.0    # s for a whole request (line, headers, body) to arrive
MAX_CONNECTIONS = 32       # connections handled at once
MAX_VIEWERS = 8            # of which MJPEG viewers
TOKEN_COOKIE = "stargan_rt_token"
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def check_token(token: str) -> str:
    """A --token given by the user: long enough and URL-safe."""
    if len(token) < MIN_TOKEN_LENGTH or not all(c.isalnum() or c in "-_.~" for c in token):
        raise UserError(f"--token: expected at least {MIN_TOKEN_LENGTH} letters, digits or "
                        "-_.~ characters; leave it out to have one generated")
    return token


class Guard:
    """The admission rules for one server (bound host and port, token)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self.token = host, port, token
        self.loopback = is_loopback(host)
        names = {"localhost", "127.0.0.1", "::1"}
        if not is_wildcard(host):
            names.add(host.strip("[]").lower())
        else:  # the names this machine goes by; IP literals are accepted separately
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    names.add(name.lower())
        self.names = names

    # -- Host ------------------------------------------------------------------------------------
    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False
        name, port = split_host(header)
        if name is None or (port is not None and port != self.port):
            return False
        if name in self.names:
            return True
        if is_wildcard(self.host):
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    def allowed_hosts_text(self) -> str:
        shown = sorted(n if ":" not in n else f"[{n}]" for n in self.names)
        extra = " or an IP address of this machine" if is_wildcard(self.host) else ""
        return ", ".join(shown) + extra

    # -- token and origin ------------------------------------------------------------------------
    def token_from(self, path: str, headers) -> str | None:
        query = parse_qs(urlsplit(path).query)
        if query.get("token"):
            return query["token"][0]
        auth = headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        try:
            cookie = SimpleCookie(headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel.value if morsel else None

    def token_ok(self, path: str, headers) -> bool:
        given = self.token_from(path, headers)
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def same_origin(self, headers) -> bool:
        """The page itself sent the request: the Origin is this server as the browser knows it
        (an allowed Host), or the browser says so in Sec-Fetch-Site."""
        site = headers.get("Sec-Fetch-Site")
        if site is not None:
            return site == "same-origin"
        origin = headers.get("Origin")
        if not origin:
            return False
        parts = urlsplit(origin)
        return parts.scheme == "http" and self.host_allowed(parts.netloc) and \
            parts.netloc.lower() == (headers.get("Host") or "").lower()

    def admit(self, method: str, path: str, headers) -> tuple[int, str] | None:
        """None to go on, else (status, why) to refuse with."""
        if not self.host_allowed(headers.get("Host")):
            return 403, (f"Host {headers.get('Host')!r} is not allowed (DNS rebinding "
                         f"protection); this server answers to {self.allowed_hosts_text()}")
        if not self.loopback and not self.token_ok(path, headers):
            return 403, ("a token is required: open the URL printed when the server started "
                         "(.../?token=...) or send Authorization: Bearer TOKEN")
        if method == "POST" and not (self.token_ok(path, headers) or self.same_origin(headers)):
            return 403, ("state-changing requests need the token (Authorization: Bearer "
                         "TOKEN) unless the page itself sends them")
        return None


def split_host(header: str) -> tuple[str | None, int | None]:
    """'name:port' / '[v6]:port' / 'name' -> (lower-case name, port or None); (None, None) when
    malformed."""
    header = header.strip().lower()
    port = None
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None, None
        name, rest = header[1:end], header[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None, None
            port = rest[1:]
    elif header.count(":") == 1:
        name, port = header.split(":")
    elif ":" in header:
        return None, None  # a bare IPv6 address must be bracketed
    else:
        name = header
    if port is not None:
        if not port.isdigit() or len(port) > 5:
            return None, None
        port = int(port)
    if not name:
        return None, None
    return name, port


def body_length(headers) -> tuple[int, str] | int:
    """The declared body length, or (status, why) to refuse the request with unread."""
    if headers.get("Transfer-Encoding"):
        return 411, "send the body with a Content-Length (no chunked transfer encoding)"
    text = headers.get("Content-Length")
    if text is None:
        return 411, "Content-Length required"
    text = text.strip()
    if not text.isdigit():
        return 411, f"Content-Length {text[:20]!r} is not a non-negative whole number"
    if len(text) > 12 or int(text) > MAX_BODY:
        return 413, f"body too large: at most {MAX_BODY} bytes of JSON"
    return int(text)


class Deadlines:
    """Shuts the socket of a connection whose request has not fully arrived in time, which
    ends a blocked read in its handler thread."""

    def __init__(self, deadline: float = REQUEST_DEADLINE):
        self.deadline = deadline
        self.lock = threading.Lock()
        self.pending: dict[socket.socket, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="stargan-http-deadlines",
                                       daemon=True)
        self.thread.start()

    def start(self, sock: socket.socket) -> None:
        with self.lock:
            self.pending[sock] = time.monotonic() + self.deadline

    def done(self, sock: socket.socket) -> None:
        with self.lock:
            self.pending.pop(sock, None)

    def stop(self) -> None:
        self.stopped.set()

    def _watch(self) -> None:
        while not self.stopped.wait(0.5):
            now = time.monotonic()
            with self.lock:
                late = [s for s, due in self.pending.items() if due < now]
                for sock in late:
                    del self.pending[sock]
            for sock in late:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# -- server and handler bases ----------------------------------------------------------------------
class GuardedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, request deadlines and quiet disconnects.
    ``guard`` (a Guard) must be set before serving; ``log`` gets one line per unexpected error."""

    daemon_threads = True
    allow_reuse_address = True
    guard: Guard
    log = staticmethod(lambda message: None)

    def __init__(self, *args, **kwargs):
        self.active = 0
        self.viewers = 0
        self.count_lock = threading.Lock()
        self.deadlines = Deadlines()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self.count_lock:
            full = self.active >= MAX_CONNECTIONS
            if not full:
                self.active += 1
        if full:  # answer at once and close: no thread, nothing read
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain"
                                b"\r\nContent-Length: 27\r\nConnection: close\r\n\r\n"
                                b"too many connections; retry")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self.count_lock:
                self.active -= 1
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.deadlines.done(request)
            with self.count_lock:
                self.active -= 1

    def handle_error(self, request, client_address):
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return  # a client that went away or was too slow: not worth a line
        self.log(f"http: {type(exc).__name__} while answering {client_address[0]}: {exc}")

    def server_close(self):
        self.deadlines.stop()
        super().server_close()

    def viewer_slot(self) -> bool:
        with self.count_lock:
            if self.viewers >= MAX_VIEWERS:
                return False
            self.viewers += 1
            return True

    def viewer_done(self) -> None:
        with self.count_lock:
            self.viewers -= 1


class GuardedHandler(BaseHTTPRequestHandler):
    """Applies the Guard once the headers are in; helpers to answer and to read JSON bodies."""

    server: GuardedServer
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the pipeline has its own log
        pass

    def handle_one_request(self):
        self.server.deadlines.start(self.connection)  # the next request must arrive in time
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        refusal = self.server.guard.admit(self.command, self.path, self.headers)
        if refusal:
            self.send_plain(*refusal, close=True)
            return False
        if self.command != "POST":
            self.server.deadlines.done(self.connection)  # a stream may run for hours
            if self.headers.get("Content-Length") not in (None, "0") or \
                    self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # a body we will not read: do not reuse
        return True

    def send_plain(self, status: int, text: str, close: bool = False,
                   ctype: str = "text/plain; charset=utf-8", headers: dict | None = None):
        body = text.encode() if isinstance(text, str) else text
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_json(self) -> dict | None:
        """The request's JSON object body, or None after answering 411/413/415/400."""
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self.send_plain(415, "send application/json", close=True)
            return None
        length = body_length(self.headers)
        if isinstance(length, tuple):
            self.send_plain(*length, close=True)
            return None
        data = self.rfile.read(length) if length else b""
        self.server.deadlines.done(self.connection)
        if len(data) != length:
            self.close_connection = True
            return None  # the client went away or was too slow
        try:
            body = json.loads(data or b"{}")
        except (ValueError, UnicodeDecodeError):
            self.send_plain(400, "bad JSON body: expected a JSON object")
            return None
        if not isinstance(body, dict):
            self.send_plain(400, "bad JSON body: expected a JSON object, e.g. {\"domain\": ...}")
            return None
        return body

    def token_cookie(self) -> dict:
        """Set-Cookie for a page opened with a valid ?token=, so its own requests carry it."""
        query = parse_qs(urlsplit(self.path).query)
        token = self.server.guard.token
        if query.get("token") and hmac.compare_digest(query["token"][0].encode(), token.encode()):
            return {"Set-Cookie": f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"}
        return {}
