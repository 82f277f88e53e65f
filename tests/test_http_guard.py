"""The served page's admission rules (stream/http_guard.py) on their own: Host allow-list, token,
same-origin, declared body lengths (issue #11)."""
from __future__ import annotations

import pytest

from stargan_rt.errors import UserError
from stargan_rt.stream import http_guard
from stargan_rt.stream.http_guard import Guard, body_length, split_host

TOKEN = "k" * 32


@pytest.mark.parametrize("header,expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("LocalHost", ("localhost", None)),
    ("[::1]:8080", ("::1", 8080)), ("[::1]", ("::1", None)), ("::1", (None, None)),
    ("a:b:c", (None, None)), ("host:port", (None, None)), ("[::1]x", (None, None)),
    (":80", (None, None)), ("evil.example:123456", (None, None)),
])
def test_split_host(header, expected):
    assert split_host(header) == expected


def test_loopback_server_answers_its_own_names_only():
    guard = Guard("127.0.0.1", 8080, TOKEN)
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1", "LOCALHOST"):
        assert guard.host_allowed(host), host
    for host in ("evil.example", "evil.example:8080", "127.0.0.1:8081", "192.0.2.1:8080",
                 "127.0.0.1.nip.io:8080", "", None, "localhost:80:80"):
        assert not guard.host_allowed(host), host
    refusal = guard.admit("GET", "/", {"Host": "evil.example:8080"})
    assert refusal[0] == 403 and "DNS rebinding" in refusal[1] and "127.0.0.1" in refusal[1]
    assert guard.admit("GET", "/api/stats", {"Host": "localhost:8080"}) is None


def test_wildcard_server_accepts_ip_literals_not_names():
    guard = Guard("0.0.0.0", 8080, TOKEN)
    assert guard.host_allowed("192.0.2.7:8080") and guard.host_allowed("[2001:db8::1]:8080")
    assert not guard.host_allowed("evil.example:8080")


def test_post_needs_same_origin_or_token_on_loopback():
    guard = Guard("127.0.0.1", 8080, TOKEN)
    host = {"Host": "127.0.0.1:8080"}
    assert guard.admit("POST", "/api/domain", host)[0] == 403
    assert guard.admit("POST", "/api/domain", {**host, "Origin": "http://evil.example"})[0] == 403
    assert guard.admit("POST", "/api/domain", {**host, "Origin": "http://127.0.0.1:9999"})[0] \
        == 403
    assert guard.admit("POST", "/api/domain", {**host, "Origin": "null"})[0] == 403
    assert guard.admit("POST", "/api/domain", {**host, "Sec-Fetch-Site": "same-site",
                                               "Origin": "http://127.0.0.1:8080"})[0] == 403
    assert guard.admit("POST", "/api/domain", {**host, "Origin": "http://127.0.0.1:8080"}) is None
    assert guard.admit("POST", "/api/domain", {**host, "Sec-Fetch-Site": "same-origin"}) is None
    assert guard.admit("POST", "/api/domain", {**host, "Authorization": f"Bearer {TOKEN}"}) \
        is None
    assert guard.admit("POST", "/api/domain", {**host, "Authorization": "Bearer " + "x" * 32})[0] \
        == 403


def test_token_beyond_loopback_from_query_header_or_cookie():
    guard = Guard("192.0.2.7", 8080, TOKEN)
    host = {"Host": "192.0.2.7:8080"}
    assert guard.admit("GET", "/", host)[0] == 403
    assert guard.admit("GET", "/api/stats?token=nope", host)[0] == 403
    assert guard.admit("GET", f"/?token={TOKEN}", host) is None
    assert guard.admit("GET", "/stream.mjpg", {**host, "Cookie": f"a=b; stargan_rt_token={TOKEN}"}) \
        is None
    assert guard.admit("GET", "/", {**host, "Cookie": "stargan_rt_token=\"bad"})[0] == 403
    # the page's own POST carries the cookie and its origin
    assert guard.admit("POST", "/api/view", {**host, "Cookie": f"stargan_rt_token={TOKEN}",
                                             "Origin": "http://192.0.2.7:8080"}) is None


@pytest.mark.parametrize("headers,expected", [
    ({}, 411), ({"Content-Length": "-1"}, 411), ({"Content-Length": "1e12"}, 411),
    ({"Content-Length": " 12 "}, 12), ({"Content-Length": "0"}, 0),
    ({"Content-Length": "1000000000000"}, 413),
    ({"Content-Length": str(http_guard.MAX_BODY + 1)}, 413),
    ({"Content-Length": "5", "Transfer-Encoding": "chunked"}, 411),
])
def test_body_length(headers, expected):
    got = body_length(headers)
    assert (got[0] if isinstance(got, tuple) else got) == expected


def test_user_token_must_be_long_and_url_safe():
    assert http_guard.check_token("a" * 16) == "a" * 16
    for bad in ("short", "a" * 15, "x" * 20 + " y", "x" * 20 + "&"):
        with pytest.raises(UserError, match="--token"):
            http_guard.check_token(bad)
    assert len(http_guard.new_token()) >= http_guard.MIN_TOKEN_LENGTH
