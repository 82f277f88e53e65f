"""`stargan-rt pull` and named models, against a local HTTP server on 127.0.0.1 that serves
official-format files (this project's networks, tiny, saved with the official key names and
zipped like the official archives) and injects faults. The real URLs are never contacted."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from stargan_rt import pull as pull_module
from stargan_rt.bundle import Bundle
from stargan_rt.catalogue import CATALOGUE_FILE, load_catalogue
from stargan_rt.models.fan import FAN
from stargan_rt.models.v1 import DiscriminatorV1, GeneratorV1
from stargan_rt.models.v2 import GeneratorV2, MappingNetwork, StyleEncoder

V1_ZIP = "celeba-128x128-5attrs.zip"
V1_URL = f"/s/7e966qq0nlxwte4/{V1_ZIP}"
AFHQ_URL = "/s/etwm810v25h42sn/100000_nets_ema.ckpt"


def _randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


def _saved(obj, legacy: bool = False) -> bytes:
    """torch.save bytes; ``legacy``: the pre-1.6 pickle format of the 2018-2020 releases."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def official():
    """The bytes of official-format files, tiny."""
    g = _randomise(GeneratorV1(conv_dim=8, c_dim=5, repeat_num=2), 1)
    d = _randomise(DiscriminatorV1(32, conv_dim=8, c_dim=5, repeat_num=5), 2)
    g_ckpt, d_ckpt = _saved(g.state_dict()), _saved(d.state_dict())
    v2 = {}
    for name, domains, w_hpf in (("afhq", 3, 0), ("celeba-hq", 2, 1)):
        gen = _randomise(GeneratorV2(64, style_dim=16, max_conv_dim=64, w_hpf=w_hpf,
                                     dim_in=16), 3)
        state = gen.state_dict()
        state.pop("hpf.filter", None)  # as the released CelebA-HQ file
        nets = {"generator": state,
                "mapping_network": _randomise(MappingNetwork(8, 16, domains, 32), 4).state_dict(),
                "style_encoder": _randomise(StyleEncoder(64, 16, domains, 64, 16), 5).state_dict()}
        v2[name] = _saved(nets, legacy=name == "afhq")
    npz = io.BytesIO()
    np.savez(npz, mean=np.zeros((98, 2), np.float32))
    return {"v1_zip": _zip({"200000-G.ckpt": g_ckpt, "200000-D.ckpt": d_ckpt}),
            "g": g_ckpt, "d": d_ckpt, "afhq": v2["afhq"], "celeba-hq": v2["celeba-hq"],
            "wing": _saved({"state_dict": _randomise(FAN(), 6).state_dict()}),
            "npz": npz.getvalue()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        state = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        state["requests"].append((path, self.headers.get("Range")))
        queue = state["faults"].get(path, [])
        fault = (queue.pop(0) if queue and not queue[0].get("always") else
                 queue[0] if queue else {})
        if "status" in fault:
            return self._send(fault["status"], b"server error\n", "text/plain")
        body = state["files"].get(path)
        if body is None:
            return self._send(404, b"not found\n", "text/plain")
        ctype = "application/octet-stream"
        if "body" in fault:
            body = fault["body"]
            ctype = fault.get("type", ctype)
        if fault.get("delay"):
            time.sleep(fault["delay"])
        start, status, headers = 0, 200, {}
        ranged = self.headers.get("Range")
        if ranged and not fault.get("ignore_range"):
            start = int(ranged.split("=", 1)[1].split("-", 1)[0])
            if start >= len(body):
                return self._send(416, b"", "text/plain",
                                  {"Content-Range": f"bytes */{len(body)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        chunk = body[start:]
        sent = chunk[:fault["drop_after"]] if "drop_after" in fault else chunk
        self._send(status, sent, ctype, headers, length=len(chunk))
        if len(sent) < len(chunk):
            self.close_connection = True

    def _send(self, status, body, ctype, headers=None, length=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        try:
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out tests)
            self.close_connection = True
            return
        if length is not None and length > len(body):
            self.close_connection = True


@pytest.fixture(scope="module")
def server(official):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = {"files": {}, "faults": {}, "requests": []}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def site(server, official, tmp_path, monkeypatch):
    """A fresh model home, and a catalogue whose entries point at the local server."""
    state = server.state
    state["faults"].clear()
    state["requests"].clear()
    state["files"].clear()
    state["files"].update({V1_URL: official["v1_zip"], AFHQ_URL: official["afhq"],
                           f"/mirror/{V1_ZIP}": official["v1_zip"],
                           "/mirror/afhq/100000_nets_ema.ckpt": official["afhq"]})
    base = f"http://127.0.0.1:{server.server_address[1]}"
    data = json.loads(CATALOGUE_FILE.read_text())
    for entry in data["models"].values():
        for spec in entry["files"]:
            spec["urls"] = [base + urllib.parse.urlsplit(u).path + "?dl=1" for u in spec["urls"]]
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps(data))
    home = tmp_path / "home"
    monkeypatch.setenv("STARGAN_RT_CATALOGUE", str(catalogue))
    monkeypatch.setenv("STARGAN_RT_HOME", str(home))

    class Site:
        pass
    s = Site()
    s.base, s.home, s.state, s.catalogue, s.data = base, home, state, catalogue, data
    s.fault = lambda path, *faults: state["faults"].setdefault(path, []).extend(faults)
    return s


def _leftovers(home: Path) -> list[str]:
    """Everything in the model home except finished bundles and resumable .part files."""
    if not home.exists():
        return []
    found = []
    for path in home.rglob("*"):
        rel = path.relative_to(home)
        if rel.parts[0] == ".downloads" and (path.suffix == ".part" or (
                path.is_dir() and any(p.suffix == ".part" for p in path.rglob("*")))):
            continue
        if not rel.parts[0].startswith(".") and (home / rel.parts[0] / "manifest.json").is_file():
            continue
        found.append(str(rel))
    return found


def _refused(result, code, *phrases, home=None):
    assert result.code == code, result
    lines = [line for line in result.err.splitlines() if line.startswith("stargan-rt ")]
    assert len(lines) == 1, result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    if home is not None:
        assert not (home / "celeba-128").exists()
        assert _leftovers(home) == []


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the catalogue ----------------------------------------------------------------------------
def test_builtin_catalogue_is_complete_and_urls_have_the_official_form():
    entries = load_catalogue()
    assert {"celeba-128", "celeba-256", "celeba-hq", "afhq"} <= set(entries)
    attrs = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    assert entries["celeba-128"].domains == attrs and entries["celeba-256"].domains == attrs
    assert entries["celeba-128"].image_size == 128 and entries["celeba-256"].image_size == 256
    assert entries["celeba-hq"].domains == ["female", "male"]
    assert entries["afhq"].domains == ["cat", "dog", "wild"]
    assert {f.name for f in entries["celeba-hq"].files} == {
        "100000_nets_ema.ckpt", "wing.ckpt", "celeba_lm_mean.npz"}
    assert entries["celeba-128"].files[0].members == ["200000-G.ckpt", "200000-D.ckpt"]
    for name in ("celeba-hq", "afhq"):
        assert "CC BY-NC 4.0" in entries[name].licence and entries[name].non_commercial
    assert not entries["celeba-128"].non_commercial
    for entry in entries.values():
        for spec in entry.files:
            assert spec.urls
            for url in spec.urls:
                parts = urllib.parse.urlsplit(url)
                assert parts.scheme == "https" and parts.netloc, url
                assert parts.path.endswith("/" + spec.name), url
                if parts.netloc.endswith("dropbox.com"):
                    assert urllib.parse.parse_qs(parts.query).get("dl") == ["1"], url


def test_bad_catalogue_file_is_one_clear_line(tmp_path, monkeypatch, cli):
    bad = tmp_path / "cat.json"
    bad.write_text(json.dumps({"models": {"x": {"title": "x", "arch": "v3", "image_size": 1,
                                                "domains": [], "licence": "", "files": [],
                                                "import": {}}}}))
    monkeypatch.setenv("STARGAN_RT_CATALOGUE", str(bad))
    _refused(cli("models"), 2, "catalogue entry 'x'", "fix the catalogue file")


# -- pulling ----------------------------------------------------------------------------------
def test_pull_v1_imports_records_provenance_and_the_name_works(site, official, tmp_path, cli):
    result = cli("pull", "celeba-128")
    assert result.code == 0, result
    assert "licence: MIT" in result.err and "installed celeba-128" in result.out
    assert "--model celeba-128" in result.out
    bundle = Bundle.open(site.home / "celeba-128")
    m = bundle.manifest
    assert m.arch == "v1" and m.domain_names[1] == "Blond_Hair" and bundle.has("discriminator")
    assert m.config["crop_scale"] == 2.2 and m.config["crop_shift"] == -0.15
    download = m.source["downloads"][0]
    assert download["sha256"] == _sha(official["v1_zip"]) and download["url"].endswith("dl=1")
    assert download["verified"] is False
    assert {f["name"] for f in m.source["files"]} == {"200000-G.ckpt", "200000-D.ckpt"}
    assert sorted(p.name for p in site.home.iterdir()) == ["celeba-128"]  # nothing else left

    listing = cli("models")
    assert listing.code == 0
    block = listing.out.split("\nceleba-128")[1].split("\n\n")[0]
    assert "installed:" in block and _sha(official["v1_zip"])[:16] in block
    assert "not installed: stargan-rt pull celeba-256" in listing.out

    face = tmp_path / "face.png"
    import cv2
    cv2.imwrite(str(face), np.full((40, 40, 3), 128, np.uint8))
    out = cli("translate", face, "--model", "celeba-128", "--domain", "blond",
              "--out", tmp_path / "out")
    assert out.code == 0, out
    assert (tmp_path / "out" / "face.png").is_file()

    requests = len(site.state["requests"])
    again = cli("pull", "celeba-128")
    assert again.code == 0 and "already installed" in again.out
    assert len(site.state["requests"]) == requests


def test_names_unknown_or_not_pulled_say_what_to_do(site, tmp_path, cli):
    r = cli("translate", tmp_path / "x.png", "--model", "celeba-256", "--out", tmp_path / "o")
    _refused(r, 2, "not installed", "stargan-rt pull celeba-256")
    r = cli("export", "--model", "no-such-model", "--out", tmp_path / "o")
    _refused(r, 2, "unknown model 'no-such-model'", "demo-v1", "celeba-hq (stargan-rt pull "
             "celeba-hq)")
    r = cli("pull", "no-such-model")
    _refused(r, 2, "unknown model", "celeba-128")


def test_dropped_connection_leaves_a_part_and_the_next_pull_resumes(site, official, cli):
    site.fault(V1_URL, {"drop_after": 5000})
    first = cli("pull", "celeba-128", "--retries", "0")
    _refused(first, 1, "connection", "run the same command again to resume")
    part = site.home / ".downloads" / "celeba-128" / f"{V1_ZIP}.part"
    assert part.stat().st_size == 5000
    assert not (site.home / "celeba-128").exists() and _leftovers(site.home) == []

    second = cli("pull", "celeba-128")
    assert second.code == 0, second
    assert site.state["requests"][-1] == (V1_URL, "bytes=5000-")
    assert "resuming" in second.err
    m = Bundle.open(site.home / "celeba-128").manifest
    assert m.source["downloads"][0]["sha256"] == _sha(official["v1_zip"])
    assert not part.exists()


def test_retry_within_one_pull_resumes_with_range(site, official, cli, monkeypatch):
    site.fault(V1_URL, {"drop_after": 3000}, {"status": 500})
    monkeypatch.setattr(pull_module, "BACKOFF_SECONDS", 0.01)
    result = cli("pull", "celeba-128", "--retries", "2")
    assert result.code == 0, result
    assert [r[1] for r in site.state["requests"]] == [None, "bytes=3000-", "bytes=3000-"]
    assert "retrying" in result.err


def test_server_ignoring_range_restarts_the_file(site, official, cli):
    site.fault(V1_URL, {"drop_after": 4000}, {"ignore_range": True})
    _refused(cli("pull", "celeba-128", "--retries", "0"), 1, "resume")
    result = cli("pull", "celeba-128")
    assert result.code == 0, result
    assert "ignored the resume request" in result.err
    m = Bundle.open(site.home / "celeba-128").manifest
    assert m.source["downloads"][0]["sha256"] == _sha(official["v1_zip"])


def test_body_shorter_than_its_length_then_complete_part_is_recognised(site, official, cli):
    # the server announces more than it sends (all of the file): the .part is complete, and the
    # next pull's Range request gets 416 "bytes */size", so nothing is downloaded twice
    body = official["v1_zip"]
    site.fault(V1_URL, {"body": body + b"\0" * 100, "drop_after": len(body)})
    _refused(cli("pull", "celeba-128", "--retries", "0"), 1, "connection closed",
             "run the same command again")
    result = cli("pull", "celeba-128")
    assert result.code == 0, result
    assert site.state["requests"][-1] == (V1_URL, f"bytes={len(body)}-")


@pytest.mark.parametrize("status,code,phrase", [(404, 2, "HTTP 404"), (500, 1, "HTTP 500"),
                                                (503, 1, "HTTP 503")])
def test_http_errors(site, cli, status, code, phrase):
    site.fault(V1_URL, {"status": status, "always": True})
    result = cli("pull", "celeba-128", "--retries", "0")
    _refused(result, code, phrase, home=site.home)
    assert ("--from" in result.err) if code == 2 else ("run the same command again" in result.err)
    assert not (site.home / ".downloads" / "celeba-128" / f"{V1_ZIP}.part").exists()


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_instead_of_the_file(site, cli, ctype):
    page = b"<!DOCTYPE html>\n<html><head><title>Dropbox</title></head><body>...</body></html>"
    site.fault(V1_URL, {"body": page, "type": ctype, "always": True})
    result = cli("pull", "celeba-128", "--retries", "0")
    _refused(result, 2, "received an HTML page instead of " + V1_ZIP, "dl=1", home=site.home)
    assert not (site.home / ".downloads" / "celeba-128").exists() or not any(
        (site.home / ".downloads" / "celeba-128").iterdir())


def test_non_zip_archive(site, cli):
    site.fault(V1_URL, {"body": bytes(range(256)) * 40, "always": True})
    _refused(cli("pull", "celeba-128"), 2, "binary data", "should be a zip archive",
             home=site.home)


def test_size_differs_from_the_catalogue(site, official, cli):
    site.data["models"]["celeba-128"]["files"][0]["size"] = len(official["v1_zip"]) + 10
    site.catalogue.write_text(json.dumps(site.data))
    _refused(cli("pull", "celeba-128"), 2, "the catalogue says", home=site.home)


def test_sha256_mismatch_and_match(site, official, cli):
    result = cli("pull", "celeba-128", "--sha256", "0" * 64)
    _refused(result, 2, "sha256", "expected " + "0" * 64, home=site.home)
    assert not (site.home / ".downloads" / "celeba-128" / f"{V1_ZIP}.part").exists()
    _refused(cli("pull", "celeba-128", "--sha256", "abc"), 2, "64 hexadecimal digits")
    good = cli("pull", "celeba-128", "--sha256", f"{V1_ZIP}={_sha(official['v1_zip'])}")
    assert good.code == 0, good
    assert "(verified)" in good.err
    assert Bundle.open(site.home / "celeba-128").manifest.source["downloads"][0]["verified"]


@pytest.mark.parametrize("member", ["../x.ckpt", "/tmp/stargan-rt-abs.ckpt",
                                    "models/../../x.ckpt"])
def test_archive_member_escaping_the_target_is_refused(site, official, tmp_path, cli, member):
    evil = _zip({"200000-G.ckpt": official["g"], "200000-D.ckpt": official["d"],
                 member: b"payload"})
    site.fault(V1_URL, {"body": evil, "always": True})
    _refused(cli("pull", "celeba-128"), 2, "escapes the target folder", home=site.home)
    assert not (site.home / "x.ckpt").exists() and not (tmp_path / "x.ckpt").exists()
    assert not Path("/tmp/stargan-rt-abs.ckpt").exists()


def test_archive_without_the_checkpoints_or_with_wrong_weights(site, official, cli):
    site.fault(V1_URL, {"body": _zip({"readme.txt": b"hello"})})
    _refused(cli("pull", "celeba-128"), 2, "lacks 200000-G.ckpt", home=site.home)
    wrong = _zip({"200000-G.ckpt": official["afhq"], "200000-D.ckpt": official["d"]})
    site.fault(V1_URL, {"body": wrong})
    _refused(cli("pull", "celeba-128"), 2, "do not import", home=site.home)
    assert not (site.home / ".downloads" / "celeba-128").exists()


def test_unwritable_model_home(site, tmp_path, monkeypatch, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("STARGAN_RT_HOME", str(blocker / "home"))
    _refused(cli("pull", "celeba-128"), 2, "cannot write", "STARGAN_RT_HOME")


def test_read_only_or_full_disk_while_writing(site, monkeypatch, cli):
    real_open = open
    injected = {}

    def failing_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part") and ("a" in mode or "w" in mode):
            raise OSError(injected["errno"], "injected")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(pull_module, "open", failing_open, raising=False)
    for code, phrase in ((errno.EROFS, "must be a writable folder"), (errno.ENOSPC, "disk full")):
        injected["errno"] = code
        _refused(cli("pull", "celeba-128"), 2, phrase, home=site.home)


def test_two_pulls_of_one_model_at_once(site, official, cli):
    site.fault(V1_URL, {"delay": 1.5})
    logs: list[str] = []
    outcome = {}

    def first():
        try:
            outcome["result"] = pull_module.pull("celeba-128", pull_module.PullOptions(),
                                                 log=logs.append)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    lock = site.home / ".celeba-128.lock"
    deadline = time.monotonic() + 10
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = cli("pull", "celeba-128")
    thread.join(30)
    _refused(second, 2, "another `stargan-rt pull celeba-128` is running", "wait for it")
    assert "error" not in outcome, outcome
    assert Bundle.open(site.home / "celeba-128").manifest.arch == "v1"
    assert not lock.exists() and _leftovers(site.home) == []


def test_from_a_folder_air_gapped(site, official, tmp_path, cli):
    empty = tmp_path / "usb"
    empty.mkdir()
    _refused(cli("pull", "celeba-128", "--from", empty), 2, f"{V1_ZIP}", "is not in",
             home=site.home)
    _refused(cli("pull", "celeba-128", "--from", tmp_path / "nowhere"), 2, "no such folder")
    (empty / V1_ZIP).write_bytes(official["v1_zip"])
    result = cli("pull", "celeba-128", "--from", empty)
    assert result.code == 0, result
    assert not site.state["requests"]  # nothing downloaded
    m = Bundle.open(site.home / "celeba-128").manifest
    assert m.source["downloads"][0]["from"] == str(empty / V1_ZIP)
    # the checkpoints already unpacked, in NAME/ beside other models' files
    unpacked = tmp_path / "usb2" / "celeba-128"
    unpacked.mkdir(parents=True)
    (unpacked / "200000-G.ckpt").write_bytes(official["g"])
    (unpacked / "200000-D.ckpt").write_bytes(official["d"])
    result = cli("pull", "celeba-128", "--from", tmp_path / "usb2", "--force")
    assert result.code == 0, result
    assert Bundle.open(site.home / "celeba-128").has("discriminator")


def test_from_a_mirror_url_and_v2_afhq(site, official, cli):
    result = cli("pull", "afhq", "--from", site.base + "/mirror")
    assert result.code == 0, result
    assert "CC BY-NC 4.0" in result.err
    assert site.state["requests"][0][0] == "/mirror/afhq/100000_nets_ema.ckpt"
    bundle = Bundle.open(site.home / "afhq")
    assert bundle.manifest.domain_names == ["cat", "dog", "wild"]
    assert bundle.manifest.config["w_hpf"] == 0 and bundle.manifest.config["framing"] == "whole"
    assert official["afhq"][:1] == b"\x80"  # the legacy format passes the payload check
    missing = cli("pull", "celeba-128", "--from", site.base + "/nothing-here")
    _refused(missing, 2, "no source worked", "HTTP 404")


def test_v2_celeba_hq_with_fan_and_landmark_mean(site, official, tmp_path, cli):
    folder = tmp_path / "usb"
    folder.mkdir()
    (folder / "100000_nets_ema.ckpt").write_bytes(official["celeba-hq"])
    (folder / "wing.ckpt").write_bytes(official["wing"])
    (folder / "celeba_lm_mean.npz").write_bytes(official["npz"])
    result = cli("pull", "celeba-hq", "--from", folder)
    assert result.code == 0, result
    assert "non-commercial" in result.out
    bundle = Bundle.open(site.home / "celeba-hq")
    m = bundle.manifest
    assert bundle.has("fan") and m.config["w_hpf"] == 1 and m.domain_names == ["female", "male"]
    assert (bundle.path / "celeba_lm_mean.npz").read_bytes() == official["npz"]
    assert m.source["licence"].startswith("CC BY-NC 4.0")
    assert any("hpf.filter" in note for note in m.source["notes"])


# -- names in the other verbs -----------------------------------------------------------------
@pytest.mark.parametrize("verb", ["translate", "export", "build", "parity", "webcam", "eval"])
def test_every_verb_taking_a_model_takes_names(site, tmp_path, cli, verb):
    image = tmp_path / "face.png"
    image.write_bytes(b"")
    extra = {"translate": [image, "--out", tmp_path / "o"], "export": ["--out", tmp_path / "o"],
             "webcam": ["--headless", "--source", "sample"], "eval": ["--data", tmp_path]}
    result = cli(verb, "--model", "celeba-256", *extra.get(verb, []))
    _refused(result, 2, "'celeba-256'", "not installed", "stargan-rt pull celeba-256")


def test_webcam_start_up_lines_for_demo_and_whole_frame_models(site, official, tmp_path, cli):
    missing = tmp_path / "nope.mp4"
    demo = cli("webcam", "--source", missing, "--headless")
    _refused(demo, 2, "no such file")
    assert demo.err.count("demo-v1 is a small demo trained on synthetic faces only") == 1
    assert "`stargan-rt pull celeba-128`, then --model celeba-128" in demo.err
    assert cli("pull", "afhq").code == 0
    afhq = cli("webcam", "--model", "afhq", "--source", missing, "--headless")
    _refused(afhq, 2, "no such file")
    assert "whole frame: this model was trained on subjects filling the picture" in afhq.err
    assert "small demo" not in afhq.err


def test_endless_body_is_cut_at_the_catalogue_size_and_stale_staging_goes(site, official, cli,
                                                                           monkeypatch):
    stale = site.home / ".celeba-128.pull-999999"
    (stale / "files").mkdir(parents=True)
    monkeypatch.setattr(pull_module, "MAX_DOWNLOAD_BYTES", 1 << 20)
    site.fault(V1_URL, {"body": official["v1_zip"] + b"\0" * (2 << 20), "always": True})
    _refused(cli("pull", "celeba-128"), 2, "more than the 1.0 MB allowed", home=site.home)
    assert not stale.exists()


def test_second_url_of_an_entry_is_a_mirror(site, official, cli):
    entry = site.data["models"]["celeba-128"]["files"][0]
    entry["urls"] = [site.base + "/dead/" + V1_ZIP, site.base + "/mirror/" + V1_ZIP]
    site.catalogue.write_text(json.dumps(site.data))
    result = cli("pull", "celeba-128")
    assert result.code == 0, result
    m = Bundle.open(site.home / "celeba-128").manifest
    assert m.source["downloads"][0]["url"] == site.base + "/mirror/" + V1_ZIP


def test_server_that_does_not_answer_times_out(site, cli):
    site.fault(V1_URL, {"delay": 2.0})
    started = time.monotonic()
    result = cli("pull", "celeba-128", "--timeout", "0.3", "--retries", "0")
    _refused(result, 1, "no answer within 0.3 s", "run the same command again", home=site.home)
    assert time.monotonic() - started < 2.0
    _refused(cli("pull", "celeba-128", "--timeout", "0"), 2, "--timeout must be")
