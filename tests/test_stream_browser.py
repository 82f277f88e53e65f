"""The served page in real headless Chromium, the HTTP API, and the OpenCV window under Xvfb."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from stargan_rt.stream.faces import FaceStage
from stargan_rt.stream.pipeline import Pipeline
from stargan_rt.stream.web import HttpSink

from stream_testlib import FakeTranslator, ListSource, face_frames, tiny_v1_bundle

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
INSTALL = "run scripts/install-test-deps.sh (Debian packages chromium, chromium-driver, xvfb)"


@pytest.fixture(scope="module")
def served():
    """A looping face video served on an ephemeral loopback port, run in a thread."""
    translator = FakeTranslator()
    sink = HttpSink("127.0.0.1", 0)
    source = ListSource(face_frames(20), live=True, fps=25, repeat=10_000)
    pipeline = Pipeline(source, translator, FaceStage(64), [sink], domain="Invert",
                        log=lambda m: None)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    deadline = time.time() + 20
    while (sink.server is None or pipeline.stats.frames_out < 3) and time.time() < deadline:
        time.sleep(0.05)
    assert pipeline.stats.frames_out >= 3, pipeline.error
    yield pipeline, sink, translator
    pipeline.stop("stopped")
    worker.join(10)
    assert not worker.is_alive()


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _post(url, body, ctype="application/json"):
    """A POST as the page sends it: same origin (other clients need the token)."""
    origin = "/".join(url.split("/")[:3])
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": ctype, "Origin": origin})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_http_api(served):
    pipeline, sink, _ = served
    assert sink.host == "127.0.0.1" and sink.url.startswith("http://127.0.0.1:")
    status, ctype, body = _get(sink.url + "api/stats")
    stats = json.loads(body)
    assert status == 200 and stats["domain"] == "Invert" and stats["domains"] == ["Invert", "Dark"]
    assert stats["frames_out"] >= 3 and "infer" in stats["stage_ms"]
    status, ctype, body = _get(sink.url + "snapshot.jpg")
    assert status == 200 and ctype == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (180, 240, 3)
    assert _post(sink.url + "api/domain", {"domain": "purple"})[0] == 400
    assert _post(sink.url + "api/domain", {"domain": "Dark"}, "text/plain")[0] == 415
    assert _post(sink.url + "api/style", {})[0] == 400  # v1 model: no styles
    assert _get(sink.url)[0] == 200
    # the MJPEG stream sends JPEG parts
    with urllib.request.urlopen(sink.url + "stream.mjpg", timeout=10) as r:
        assert r.headers.get("Content-Type").startswith("multipart/x-mixed-replace")
        chunk = r.read(4096)
    assert b"--frame" in chunk and b"image/jpeg" in chunk


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=f"chromium absent: {INSTALL}")
def test_page_in_headless_chromium_shows_stream_and_switches_domain(served, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (test extra) missing")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pipeline, sink, translator = served
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,900"):
        options.add_argument(flag)
    options.page_load_strategy = "eager"  # the MJPEG image never finishes loading
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(sink.url)
        wait = WebDriverWait(driver, 20)
        # the stream is showing: the <img> decoded real frames of the source's size
        wait.until(lambda d: d.execute_script(
            "return document.getElementById('stream').naturalWidth") == 240)
        wait.until(lambda d: d.find_element(By.ID, "current-domain").text == "Invert")
        shot = driver.find_element(By.ID, "stream").screenshot_as_png
        img = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.std() > 20  # a picture, not a blank box
        before = translator.calls
        driver.find_element(By.CSS_SELECTOR, "button.domain[data-domain='Dark']").click()
        wait.until(lambda d: d.find_element(By.ID, "current-domain").text == "Dark")
        wait.until(lambda d: "active" in d.find_element(
            By.CSS_SELECTOR, "button.domain[data-domain='Dark']").get_attribute("class"))
        assert pipeline.target.domain == "Dark" and translator.domain == "Dark"
        deadline = time.time() + 10
        while translator.calls < before + 3 and time.time() < deadline:
            time.sleep(0.05)
        assert translator.domains_used[-1] == "Dark"  # frames after the click use it
        stats = json.loads(driver.find_element(By.ID, "stats").text)
        assert stats["domain"] == "Dark" and stats["fps"] is None or stats["fps"] > 0
        driver.find_element(By.ID, "side-by-side").click()
        wait.until(lambda d: d.execute_script(
            "return document.getElementById('stream').naturalWidth") == 480)
    finally:
        driver.quit()


@pytest.mark.skipif(not shutil.which("Xvfb"), reason=f"Xvfb absent: {INSTALL}")
def test_window_under_xvfb(tmp_path):
    """The real window on a virtual display; with xdotool, real key presses switch the domain
    and quit (otherwise the run stops at --max-frames)."""
    from stargan_rt.stream.sinks import gui_available
    display = f":{70 + os.getpid() % 200}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = None
    try:
        time.sleep(1.0)
        assert xvfb.poll() is None, "Xvfb did not start"
        env = dict(os.environ, DISPLAY=display)
        old = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = display
        try:
            why = gui_available()
        finally:
            if old is None:
                os.environ.pop("DISPLAY")
            else:
                os.environ["DISPLAY"] = old
        if why:
            pytest.skip(f"OpenCV has no window support here: {why}")
        bundle = tiny_v1_bundle(tmp_path / "tiny-v1")
        stats = tmp_path / "s.json"
        xdotool = shutil.which("xdotool")
        cmd = [sys.executable, "-m", "stargan_rt.cli", "webcam", "--model", str(bundle),
               "--domain", "Smiling", "--source", "sample", "--side-by-side",
               "--stats", str(stats), "--cache-dir", str(tmp_path / "cache")]
        cmd += ["--loop", "--max-frames", "5000"] if xdotool else ["--max-frames", "25"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        if xdotool:
            def x(*args):
                return subprocess.run([xdotool, *args], env=env, capture_output=True, text=True,
                                      timeout=30).stdout.split()
            window = []
            deadline = time.time() + 60
            while not window and time.time() < deadline and proc.poll() is None:
                time.sleep(0.5)
                window = x("search", "--name", "stargan-rt")
            assert window, "the window never appeared"
            time.sleep(1.0)
            x("key", "--window", window[0], "d")   # next domain: Smiling -> Black_Hair
            time.sleep(1.5)
            x("key", "--window", window[0], "q")   # quit
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert "no window" not in err and "keys: q/Esc quit" in err and "Traceback" not in err
        s = json.loads(stats.read_text())
        if xdotool:
            assert "now translating to domain Black_Hair" in err
            assert s["stop_reason"] == "quit" and s["domain"] == "Black_Hair"
        else:
            assert s["frames_out"] == 25
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        xvfb.terminate()
        xvfb.wait(10)


def test_webcam_serve_command_end_to_end(tmp_path):
    """The real command with the engine: --serve on an ephemeral loopback port, switch the
    domain over HTTP, stop with SIGTERM; the stats file records the switch."""
    import re
    import signal
    bundle = tiny_v1_bundle(tmp_path / "tiny-v1")
    stats = tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "stargan_rt.cli", "webcam", "--model",
                             str(bundle), "--domain", "Smiling", "--source", "sample", "--loop",
                             "--realtime", "--headless", "--serve", "127.0.0.1:0", "--stats",
                             str(stats), "--cache-dir", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, lines = None, []
        deadline = time.time() + 90
        while url is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"serving the live page on (http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        deadline = time.time() + 30
        while json.loads(_get(url + "api/stats")[2])["frames_out"] < 5:
            assert time.time() < deadline
            time.sleep(0.2)
        assert _post(url + "api/domain", {"domain": "Black_Hair"})[0] == 200
        deadline = time.time() + 30
        while json.loads(_get(url + "api/stats")[2])["domain"] != "Black_Hair":
            assert time.time() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    s = json.loads(stats.read_text())
    assert s["domain"] == "Black_Hair" and s["stop_reason"].startswith("terminated")
    assert s["frames_out"] >= 5 and s["engine"] != "fake"
