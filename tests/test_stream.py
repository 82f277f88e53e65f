"""Live runtime: sources, faces, pipeline, recording, stats, source failures, memory soak."""
from __future__ import annotations

import json
import os
import threading
import time

import cv2
import numpy as np
import pytest

from stargan_rt.errors import UserError
from stargan_rt.stream.contracts import Sink, SourceNeed
from stargan_rt.stream.faces import (SCAN_STEP, FaceStage, FaceTracker, HaarDetector, Paster,
                                     _iou, _matrix, extract_crops, feather_mask, square_bounds,
                                     square_for)
from stargan_rt.stream.pipeline import DropQueue, Pipeline
from stargan_rt.stream.sinks import CallbackSink, RecordSink, handle_key
from stargan_rt.stream.sources import SAMPLE_VIDEO, open_source
from stargan_rt.stream.stats import LatencyHistogram, rss_mb
from stargan_rt.stream.synthetic import write_video
from stargan_rt.stream.web import parse_serve

from stream_testlib import (FakeTranslator, ListSource, count_video_frames, face_frames, run_cli,
                            tiny_v1_bundle)

N_FRAMES = 30


@pytest.fixture(scope="module")
def frames():
    return face_frames(N_FRAMES)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, frames):
    path = tmp_path_factory.mktemp("video") / "faces.mp4"
    assert write_video(path, frames, fps=20.0) == N_FRAMES
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_v1_bundle(tmp_path_factory.mktemp("model") / "tiny-v1")


class Keep(Sink):
    """Sink keeping (result, source, squares) of every frame."""
    needs_source = SourceNeed.ALWAYS

    def __init__(self):
        self.items = []

    def write(self, result, source, packet, pipeline):
        self.items.append((result.copy(), source.copy(), [f.square for f in packet.faces]))


# -- units ------------------------------------------------------------------------------------
def test_drop_queue_drops_oldest_and_keeps_end_marker():
    stop = threading.Event()
    q = DropQueue(1, lossy=True, stop=stop)
    for i in range(5):
        q.put(i)
    assert q.dropped == 4 and q.get() == 4 and q.get(0.01) is None
    blocking = DropQueue(1, lossy=False, stop=stop)
    blocking.put("a")
    stop.set()
    assert blocking.put("b") is False and blocking.dropped == 0  # waits, never drops


def test_latency_histogram_percentiles():
    h = LatencyHistogram()
    values = np.random.default_rng(0).uniform(1, 100, 5000)
    for v in values:
        h.add(float(v))
    for p in (50, 95):
        assert abs(h.percentile(p) - np.percentile(values, p)) / np.percentile(values, p) < 0.02


def test_parse_serve_defaults_to_loopback():
    assert parse_serve("8080") == ("127.0.0.1", 8080)
    assert parse_serve(":9000") == ("127.0.0.1", 9000)
    assert parse_serve("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(UserError):
        parse_serve("localhost:http")


def test_feather_mask_is_zero_at_border():
    m = feather_mask(64)
    assert m[0].max() == 0 and m[:, -1].max() == 0 and m[32, 32] > 0.99


def test_sample_video_ships_with_a_face():
    assert SAMPLE_VIDEO.is_file() and SAMPLE_VIDEO.stat().st_size < 500_000
    source = open_source("sample")
    stage = FaceStage(64)
    found = n = 0
    while (frame := source.read()) is not None:
        n += 1
        found += bool(stage.crops(frame)[0])
    assert n >= 60 and found >= 0.9 * n


# -- end to end on a real photograph turned into video ----------------------------------------
def test_faces_translated_and_everything_else_untouched(face_video):
    translator = FakeTranslator()
    keep = Keep()
    pipeline = Pipeline(open_source(str(face_video)), translator, FaceStage(64), [keep],
                        domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0
    s = pipeline.summary()
    assert s["frames_in"] == s["frames_out"] == N_FRAMES == len(keep.items)
    assert s["frames_dropped"] == 0 and s["stop_reason"] == "end of source"
    assert s["frames_with_faces"] >= 0.9 * N_FRAMES and s["max_faces_in_frame"] == 1
    assert all(b == 1 for b in translator.batch_sizes)
    for result, source, squares in keep.items:
        inside = np.zeros(result.shape[:2], bool)
        for square in squares:
            x0, y0, x1, y1 = square_bounds(square, result.shape)
            inside[y0:y1, x0:x1] = True
        assert np.array_equal(result[~inside], source[~inside])  # outside the faces: untouched
        for x0, y0, side, _ in squares:  # the face centre is translated (inverted)
            cx, cy, r = int(x0 + side / 2), int(y0 + side / 2), int(side / 6)
            diff = np.abs(result[cy - r:cy + r, cx - r:cx + r].astype(int) -
                          source[cy - r:cy + r, cx - r:cx + r].astype(int)).mean()
            assert diff > 40


def test_crop_framing_follows_the_face(frames):
    stage = FaceStage(64)
    faces, crops = stage.crops(frames[0])
    assert len(faces) == 1 and crops.shape == (1, 64, 64, 3)
    x, y, w, h = faces[0].box
    x0, y0, side, _ = square_for(faces[0].box, stage.framing)
    assert side == pytest.approx(2.2 * w) and x0 < x and y0 < y  # CelebA-like: face + hair


def test_crops_are_levelled_like_celeba_aligned_photos():
    from stream_testlib import astronaut_bgr
    photo = astronaut_bgr()
    upright = FaceStage(128, every=1, align=False).crops(photo)[1][0].astype(float)
    turned = cv2.warpAffine(photo, cv2.getRotationMatrix2D((225, 115), -10, 1.0), (512, 512),
                            borderMode=cv2.BORDER_REFLECT)
    aligned = FaceStage(128, every=1)
    for _ in range(6):
        faces, crops = aligned.crops(turned)
    plain = FaceStage(128, every=1, align=False).crops(turned)[1][0].astype(float)
    assert 5 < faces[0].square[3] < 15  # the roll the eyes show
    assert np.abs(crops[0] - upright).mean() < 0.7 * np.abs(plain - upright).mean()
    # pasting a turned crop back touches nothing outside its turned square
    out = aligned.paste(turned.copy(), faces, crops, 255 - crops)
    x0, y0, x1, y1 = square_bounds(faces[0].square, turned.shape)
    outside = np.ones(turned.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], turned[outside])


class CountingDetector(HaarDetector):
    """Counts whole-frame scans and keeps their size steps and images."""
    scans = 0

    def __init__(self):
        super().__init__()
        self.steps, self.greys = [], []

    def detect_weighted(self, grey, scale, step=SCAN_STEP):
        self.scans += 1
        self.steps.append(step)
        self.greys.append(grey)
        return super().detect_weighted(grey, scale, step)


def test_tracked_faces_are_detected_again_in_their_region(frames):
    # a moving, zooming, rolling face: searched only around its track, it gives the same boxes
    # as scanning the whole frame every time, with one whole-frame scan (the first)
    detector = CountingDetector()
    regional = FaceTracker(detector, every=1, scan_every=1000)
    whole = FaceTracker(every=1, scan_every=1)
    for frame in frames:
        near, full = regional.update(frame), whole.update(frame)
        assert len(near) == len(full) == 1
        assert _iou(near[0][0], full[0][0]) > 0.8
    assert detector.scans == 1


def test_a_face_lost_from_its_region_falls_back_to_a_whole_frame_scan(frames):
    detector = CountingDetector()
    tracker = FaceTracker(detector, every=1, scan_every=1000)
    assert len(tracker.update(frames[0])) == 1
    shifted = np.roll(frames[0], frames[0].shape[1] // 2, axis=1)  # the face jumps away
    tracker.update(shifted)
    assert detector.scans == 2
    assert detector.steps == [1.1, 1.1]  # finding a face: the fine size steps


def test_crops_of_large_faces_are_not_aliased():
    # 1-pixel stripes seen 3-5x smaller are a flat grey when averaged (an antialiased
    # reduction, as the training photos had); sampled by a bilinear warp alone they beat
    # into coarse stripes (moire)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, ::2] = 255
    for square in [(20.0, -60.0, 600.0, 0.0), (150.0, 60.0, 400.0, 5.0)]:
        crop = extract_crops(frame, [square], 128)[0].astype(float)
        assert abs(crop.mean() - 127.5) < 3 and crop.std() < 12, square


def test_a_close_up_s_feather_is_capped_in_frame_pixels():
    paster = Paster(128)
    typical, typical_inset = paster._mask_for(348.0)  # the sample's square: the usual feather
    assert np.array_equal(typical, feather_mask(128))
    close, close_inset = paster._mask_for(700.0)  # a close-up's: about half as wide a band
    assert close_inset < 0.6 * typical_inset
    assert (close == 0).any() and close.max() > 0.999  # still 0 at the border, 1 inside
    assert paster._mask_for(700.0)[0] is close  # made once


def test_the_paste_mask_made_at_half_resolution_matches_the_full_warp():
    paster = Paster(128)
    # regions of 2.3x, 3.3x (and clipped by the frame's top) and 1.2x the crop's size
    for square in [(100.3, 50.7, 300.2, 12.0), (10.5, -20.2, 420.0, -5.0), (200.0, 90.0, 150.0,
                                                                          0.0)]:
        x0, y0, x1, y1 = square_bounds(square, (480, 640))
        m = _matrix(square, 128, offset=(x0, y0))
        full = cv2.warpAffine(paster.mask, m, (x1 - x0, y1 - y0),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        half = paster._alpha(paster.mask, m, (x1 - x0, y1 - y0))
        assert half.shape == full.shape and half.dtype == np.float32
        assert np.abs(half - full).mean() < 1e-3 and np.abs(half - full).max() < 0.06
        assert half.max() > 0.99 and half.min() == 0.0


def test_a_covered_face_in_place_is_followed_without_a_whole_frame_scan(frames):
    # eyes covered: the cascade sees no face, but the face's template is still where it was,
    # so the tracker follows it (a miss) instead of scanning the whole frame
    detector = CountingDetector()
    tracker = FaceTracker(detector, every=1, scan_every=1000)
    (box, _, ident), = tracker.update(frames[0])
    x, y, w, h = box.astype(int)
    covered = frames[0].copy()
    covered[y + h // 5:y + h * 11 // 20, x:x + w] = 128
    grey, scale = detector.small_grey(covered)
    for fine in (False, True):  # invisible to the cascade
        assert not any(_iou(b, box) > 0.25 for b, _ in detector.detect_near(grey, scale, box,
                                                                            fine))
    detector.scans, detector.steps = 0, []
    (kept, _, same), = tracker.update(covered)
    assert detector.scans == 0 and same == ident
    assert _iou(kept, box) > 0.8 and tracker.tracks[0].misses == 1


def test_a_face_missed_at_the_region_s_coarse_scale_is_looked_for_finer(frames):
    detector = CountingDetector()
    # the region shrunk so far that no face fits the cascade's window: only the finer second
    # look can find it
    detector.near_px, detector.fine_factor = 10.0, 3.0
    tracker = FaceTracker(detector, every=1, scan_every=1000)
    first = tracker.update(frames[0])
    for frame in frames[1:6]:
        assert len(tracker.update(frame)) == 1
    assert detector.scans == 1 and tracker.tracks[0].misses == 0
    assert _iou(tracker.tracks[0].raw, first[0][0]) > 0.3


def test_a_rolling_head_stays_tracked_by_turning_its_region_upright(frames):
    # the frontal cascade loses faces rolled past ~20 degrees (here at 24 without the turn);
    # searched upright at the track's measured roll, the face stays found up to 30 degrees
    detector = CountingDetector()
    tracker = FaceTracker(detector, every=1, scan_every=1000)
    (box, _, _), = tracker.update(frames[0])
    centre = (box[0] + box[2] / 2.0, box[1] + box[3] / 2.0)
    for angle in [a for a in range(3, 31, 3) for _ in range(3)]:
        turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
        rolled = cv2.warpAffine(frames[0], turn, frames[0].shape[1::-1],
                                borderMode=cv2.BORDER_REFLECT101)
        (found, roll, _), = tracker.update(rolled)
        assert tracker.tracks[0].misses == 0, angle
    assert detector.scans == 1
    assert roll < -15  # the eyes' roll (the image turned the other way) levels the next crops
    assert _iou(found, box) > 0.6  # the box turned back: the same face centre and size


def test_the_scan_for_new_faces_finds_a_newcomer_and_leaves_tracked_faces_to_their_regions(
        frames):
    detector = CountingDetector()
    detector.max_side = 480  # the two-face frames at full size, like the one-face ones
    tracker = FaceTracker(detector, every=1, scan_every=2)
    alone = np.hstack([frames[0], np.full_like(frames[0], 128)])
    together = np.hstack([frames[0], frames[0][:, ::-1]])  # a second face comes in on the right
    (box, _, first), = tracker.update(alone)
    tracker.update(together)  # a region search only: the newcomer is not looked for yet
    assert len(tracker.tracks) == 1
    for _ in range(4):
        faces = tracker.update(together)
        assert len(faces) == 2  # found at the next scan, and never twice
    idents = {ident for _, _, ident in faces}
    assert first in idents and len(idents) == 2  # the tracked face kept its track
    assert any(_iou(found, box) > 0.8 for found, _, _ in faces)
    assert detector.steps == [SCAN_STEP] + [tracker.new_face_step] * 2
    # the scans for new faces saw the tracked face blanked out (it was measured in its region)
    x, y, w, h = (int(v) for v in box)
    for grey in detector.greys[1:]:
        assert np.ptp(grey[y:y + h, x:x + w]) == 0


def test_the_periodic_scan_for_new_faces_is_coarser(frames):
    detector = CountingDetector()
    tracker = FaceTracker(detector, every=1, scan_every=3)
    for frame in frames[:7]:
        assert len(tracker.update(frame)) == 1
    # the first scan finds the face; the later ones, while it is tracked, only look for others
    assert detector.steps == [1.1, tracker.new_face_step, tracker.new_face_step]
    assert tracker.new_face_step > 1.1


def test_boxes_are_smooth_on_a_still_face(frames):
    stage = FaceStage(64, every=1)
    assert stage.tracker.scan_every < 15  # whole-frame scans among the region scans below
    boxes = [stage.crops(frames[0])[0][0].box for _ in range(30)]
    # the first box is the whole-frame scan's; the region's measurement may settle it once,
    # then no jitter on identical frames, whole-frame scans included
    assert np.ptp(np.array(boxes[1:]), axis=0).max() < 0.5
    assert np.abs(np.array(boxes[1]) - boxes[0]).max() < 0.05 * boxes[0][2]


def test_no_face_translates_the_whole_frame(frames):
    keep = Keep()
    pipeline = Pipeline(ListSource(frames[:5]), FakeTranslator(), FaceStage(64, no_face=True),
                        [keep], domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0 and len(keep.items) == 5
    result, source, _ = keep.items[0]
    assert result.shape == source.shape
    assert np.abs(result.astype(int) - (255 - source.astype(int))).mean() < 30


def test_live_source_drops_oldest_and_bounds_latency(frames):
    source = ListSource(frames, live=True, fps=200, repeat=4)  # 120 frames at 200 fps
    pipeline = Pipeline(source, FakeTranslator(delay=0.03), FaceStage(64), [],
                        domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0
    s = pipeline.summary()
    assert s["mode"].startswith("live")
    assert s["frames_in"] == 120 and 3 <= s["frames_out"] < s["frames_in"]
    assert s["frames_dropped"] == s["frames_in"] - s["frames_out"]
    # newest frame wins: latency stays near a few frames' work, not the whole backlog (~3.6 s)
    assert s["latency_ms"]["end_to_end"]["p95"] < 1500


class JitterTranslator(FakeTranslator):
    """Calls take 0-20 ms at random, so that with several streams frames finish out of order."""

    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.lock = threading.Lock()
        self.active = self.most_active = 0

    def __call__(self, crops):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            delay = float(self.rng.uniform(0, 0.02))
        time.sleep(delay)
        try:
            return super().__call__(crops)
        finally:
            with self.lock:
                self.active -= 1


class Order(Sink):
    def __init__(self):
        self.indices, self.results = [], []

    def write(self, result, source, packet, pipeline):
        self.indices.append(packet.index)
        self.results.append(result.copy())


def test_streams_keep_every_frame_in_order(frames):
    runs = {}
    for streams in (1, 3):
        translator, sink = JitterTranslator(), Order()
        pipeline = Pipeline(ListSource(frames), translator, FaceStage(64), [sink],
                            domain="Invert", log=lambda m: None, streams=streams)
        assert pipeline.run() == 0
        s = pipeline.summary()
        assert s["frames_out"] == N_FRAMES and s["frames_dropped"] == 0
        assert sink.indices == list(range(N_FRAMES))   # put back in order
        runs[streams] = (sink.results, translator.most_active)
    assert runs[3][1] > 1 and runs[1][1] == 1           # frames really were in flight at once
    for one, three in zip(runs[1][0], runs[3][0]):
        np.testing.assert_array_equal(one, three)


class OrderedFaces(FaceStage):
    """Records which frame each detection saw and whether two ever ran at once."""

    def __init__(self, frames):
        super().__init__(64)
        self.index_of = {frame.tobytes(): i for i, frame in enumerate(frames)}
        self.seen, self.busy, self.overlapped = [], threading.Lock(), False

    def crops(self, frame):
        if not self.busy.acquire(blocking=False):
            self.overlapped = True
            self.busy.acquire()
        try:
            self.seen.append(self.index_of[frame.tobytes()])
            time.sleep(0.002)  # room for another thread to overlap, if one could
            return super().crops(frame)
        finally:
            self.busy.release()


def test_detections_come_one_at_a_time_in_frame_order(frames):
    # the tracker follows faces from one frame to the next: with several streams in flight
    # the detections must still come one at a time, in the source's order
    faces = OrderedFaces(frames)
    translator = JitterTranslator()
    pipeline = Pipeline(ListSource(frames), translator, faces, [Order()], domain="Invert",
                        log=lambda m: None, streams=3)
    assert pipeline.run() == 0
    assert faces.seen == list(range(N_FRAMES)) and not faces.overlapped
    assert translator.most_active > 1


def test_live_streams_never_show_an_older_frame(frames):
    sink = Order()
    pipeline = Pipeline(ListSource(frames, live=True, fps=100, repeat=4), JitterTranslator(),
                        FaceStage(64), [sink], domain="Invert", log=lambda m: None, streams=2)
    assert pipeline.run() == 0
    s = pipeline.summary()
    assert sink.indices == sorted(set(sink.indices)) and len(sink.indices) >= 2
    assert s["frames_dropped"] == s["frames_in"] - s["frames_out"]


def test_realtime_paces_a_file(face_video):
    t = time.perf_counter()
    pipeline = Pipeline(open_source(str(face_video)), FakeTranslator(), FaceStage(64), [],
                        realtime=True, max_frames=12, domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0
    assert time.perf_counter() - t >= 11 / 20.0 - 0.05  # 20 fps file


def test_source_dying_mid_stream_stops_cleanly(frames, tmp_path):
    out = tmp_path / "rec.mp4"
    source = ListSource(frames, die_after=8)
    pipeline = Pipeline(source, FakeTranslator(), FaceStage(64), [RecordSink(out)],
                        domain="Invert", log=lambda m: None)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "pipeline hung after the source died"
    s = pipeline.summary()
    assert s["exit_code"] == 1 and "camera unplugged" in s["error"]
    assert s["frames_out"] == 8 and source.closed
    assert count_video_frames(out) == 8  # the recording was finalised


def test_keys_and_live_domain_switch(frames):
    translator = FakeTranslator()
    seen = []

    def on_frame(result, source, packet, pipeline):
        seen.append(pipeline.target.domain)
        if packet.index == 3:
            assert handle_key(pipeline, "d")          # next domain
            pipeline.view["overlay"] = True
        if packet.index == 12:
            return handle_key(pipeline, "q")           # quit
    pipeline = Pipeline(ListSource(frames), translator, FaceStage(64), [CallbackSink(on_frame)],
                        domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0
    assert pipeline.stop_reason == "quit" and len(seen) == 13
    assert seen[0] == "Invert" and seen[-1] == "Dark" and translator.domain == "Dark"


def test_memory_flat_over_a_soak(frames):
    small = [cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in frames]
    marks = {}

    def on_frame(result, source, packet, pipeline):
        if packet.index in (500, 2999):
            marks[packet.index] = rss_mb()
    pipeline = Pipeline(ListSource(small, repeat=100), FakeTranslator(), FaceStage(64),
                        [CallbackSink(on_frame)], domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0
    s = pipeline.summary()
    assert s["frames_out"] == 3000 and s["frames_with_faces"] > 2000
    assert marks[2999] - marks[500] < 15, marks  # MB between frame 500 and 3000


# -- the command line, with the real engine path (OpenVINO / ONNX Runtime) --------------------
def test_webcam_command_records_and_writes_stats(bundle, face_video, tmp_path):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    r = run_cli("webcam", "--model", bundle, "--domain", "Blond_Hair", "--source", face_video,
                "--headless", "--record", out, "--stats", stats, "--parity-every", 10,
                "--cache-dir", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads(stats.read_text())
    assert s["frames_in"] == s["frames_out"] == N_FRAMES and s["frames_dropped"] == 0
    assert s["frames_with_faces"] >= 0.9 * N_FRAMES and s["domain"] == "Blond_Hair"
    assert s["streams"] == (2 if (os.cpu_count() or 1) >= 2 else 1)  # --streams auto, a file
    for stage in ("capture", "detect", "infer", "paste", "end_to_end"):
        assert s["latency_ms"][stage]["p50"] <= s["latency_ms"][stage]["p95"]
    assert s["parity"]["checks"] == 3 and s["parity"]["passed"], s["parity"]
    assert s["parity"]["max_abs_err"] <= 2
    assert count_video_frames(out) == N_FRAMES
    assert not list(tmp_path.glob(".*partial*"))  # no temp file left behind


def test_streams_auto_is_one_for_live_frames_and_two_for_a_file(monkeypatch):
    from stargan_rt.stream.app import _streams
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert _streams("auto", live=True) == 1 and _streams("auto", live=False) == 2
    assert _streams(3, live=True) == 3 and _streams(1, live=False) == 1  # asked for: kept
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert _streams("auto", live=False) == 1
    import argparse

    from stargan_rt.options import streams_option
    assert streams_option("Auto") == "auto" and streams_option("2") == 2
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to 16.*or auto"):
        streams_option("0")


def test_webcam_image_folder_dying_mid_stream(bundle, frames, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:16]):
        cv2.imwrite(str(folder / f"{i:04d}.png"), frame)
    (folder / "0010.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "rec.mp4"
    r = run_cli("webcam", "--model", bundle, "--domain", "Smiling", "--source",
                folder / "%04d.png", "--headless", "--record", out,
                "--cache-dir", tmp_path / "cache")
    assert r.returncode == 1, r.stderr
    assert "source died" in r.stderr and "0010.png" in r.stderr and "Traceback" not in r.stderr
    assert count_video_frames(out) == 10


@pytest.mark.parametrize("case", ["camera", "garbage", "missing", "domain", "truncated"])
def test_webcam_bad_sources_fail_clearly(bundle, face_video, tmp_path, case):
    args = ["webcam", "--model", bundle, "--headless", "--cache-dir", tmp_path / "cache"]
    if case == "camera":
        args += ["--source", "37"]
        expect = "no camera at index 37"
    elif case == "garbage":
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"not a video at all" * 100)
        args += ["--source", bad]
        expect = "bad.mp4: cannot"
    elif case == "truncated":
        cut = tmp_path / "cut.mp4"
        cut.write_bytes(face_video.read_bytes()[:5000])
        args += ["--source", cut]
        expect = "cut.mp4: cannot"
    elif case == "missing":
        args += ["--source", tmp_path / "nope.mp4"]
        expect = "no such file"
    else:
        args += ["--source", face_video, "--domain", "purple"]
        expect = "unknown domain"
    r = run_cli(*args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert expect in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) > 20


def test_v2_style_keys_seed_and_face_reference(frames):
    class FakeV2(FakeTranslator):
        arch = "v2"

        def __init__(self):
            super().__init__(("neutral", "smiling"))
            self.styles = []

        def set_style(self, seed=None, ref_bgr=None, psi=1.0):
            self.styles.append((seed, None if ref_bgr is None else ref_bgr.shape, psi))

    translator = FakeV2()

    def on_frame(result, source, packet, pipeline):
        if packet.index == 2:
            handle_key(pipeline, "n")   # new random style
        if packet.index == 6:
            handle_key(pipeline, "r")   # the current face becomes the reference
    pipeline = Pipeline(ListSource(frames[:12]), translator, FaceStage(64, arch="v2"),
                        [CallbackSink(on_frame)], domain="smiling", seed=5, psi=0.7,
                        log=lambda m: None)
    assert pipeline.run() == 0
    assert translator.styles[0] == (5, None, 0.7)
    assert translator.styles[1][0] != 5 and translator.styles[1][1] is None
    assert translator.styles[-1][1] == (64, 64, 3)  # a face crop at the model's framing
    assert pipeline.summary()["style"]["reference"] is True


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_finalises_recording_and_stats(bundle, tmp_path, sig):
    import signal
    import subprocess
    import sys
    out, stats = tmp_path / "out.mp4", tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "stargan_rt.cli", "webcam", "--model",
                             str(bundle), "--domain", "Smiling", "--source", "sample", "--loop",
                             "--headless", "--realtime", "--record", str(out), "--stats",
                             str(stats), "--cache-dir", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.parent / ".out.partial.mp4").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    s = json.loads(stats.read_text())
    assert s["stop_reason"].startswith("interrupted" if sig == "SIGINT" else "terminated")
    assert s["frames_out"] > 5
    # live mode: dropped frames are filled, so the recording keeps the source's timing
    assert s["frames_out"] <= count_video_frames(out) <= s["frames_in"]


def test_all_faces_of_a_frame_go_in_one_batch(frames):
    two = [np.hstack([f, f[:, ::-1]]) for f in frames[:6]]  # two faces side by side
    translator = FakeTranslator()
    keep = Keep()
    pipeline = Pipeline(ListSource(two), translator, FaceStage(64), [keep], domain="Invert",
                        log=lambda m: None)
    assert pipeline.run() == 0
    assert max(translator.batch_sizes) == 2 and pipeline.summary()["max_faces_in_frame"] == 2
    result, source, squares = keep.items[-1]
    assert len(squares) == 2 and {int(sq[0] < 240) for sq in squares} == {0, 1}


def test_colour_matching_hides_the_seam(frames):
    from stargan_rt.stream.faces import Paster
    stage = FaceStage(64)
    faces, crops = stage.crops(frames[0])
    tinted = np.clip(crops.astype(int) + [40, -20, 30], 0, 255).astype(np.uint8)  # colour cast
    x0, y0, x1, y1 = square_bounds(faces[0].square, frames[0].shape)
    ring = np.zeros(frames[0].shape[:2], bool)
    ring[y0:y1, x0:x1] = True
    inner = square_bounds((faces[0].square[0] + faces[0].square[2] * 0.15,
                           faces[0].square[1] + faces[0].square[2] * 0.15,
                           faces[0].square[2] * 0.7, faces[0].square[3]), frames[0].shape)
    ring[inner[1]:inner[3], inner[0]:inner[2]] = False  # the outer band, where the seam is

    def seam_error(colour_match):
        out = Paster(64, colour_match).paste(frames[0].copy(), [f.square for f in faces],
                                             crops, tinted)
        return np.abs(out[ring].astype(int) - frames[0][ring].astype(int)).mean()
    assert seam_error(True) < 0.5 * seam_error(False)


def test_a_reused_paste_mask_pastes_like_a_fresh_one(frames):
    from stargan_rt.stream.faces import Paster
    stage = FaceStage(64)
    faces, crops = stage.crops(frames[0])
    squares = [f.square for f in faces]
    kept = Paster(64)
    for translated in (255 - crops, crops // 2):  # the second paste reuses the warped mask
        fresh = Paster(64).paste(frames[0].copy(), squares, crops, translated)
        assert np.array_equal(kept.paste(frames[0].copy(), squares, crops, translated), fresh)
    assert len(kept._alphas) == 1
    moved = [(sq[0] + 3.0, *sq[1:]) for sq in squares]  # a moved face warps its mask again
    assert np.array_equal(kept.paste(frames[0].copy(), moved, crops, crops),
                          Paster(64).paste(frames[0].copy(), moved, crops, crops))
    assert len(kept._alphas) == 2


def test_truncated_video_is_reported_not_taken_as_the_end(frames, tmp_path):
    full = tmp_path / "full.avi"
    write_video(full, frames, fps=20.0, fourcc="MJPG")
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:int(len(data) * 0.6)])  # the index says 30 frames; ~18 remain
    out = tmp_path / "rec.mp4"
    pipeline = Pipeline(open_source(str(cut)), FakeTranslator(), FaceStage(64),
                        [RecordSink(out)], domain="Invert", log=lambda m: None)
    assert pipeline.run() == 1
    s = pipeline.summary()
    assert "truncated" in s["error"] and 5 < s["frames_out"] < N_FRAMES
    assert count_video_frames(out) == s["frames_out"]


def test_mirror_flips_frames_at_capture(frames):
    keep = Keep()
    pipeline = Pipeline(ListSource(frames[:3]), FakeTranslator(), FaceStage(64, no_face=True),
                        [keep], domain="Invert", log=lambda m: None)
    assert handle_key(pipeline, "m") and pipeline.view["mirror"]
    assert pipeline.run() == 0
    assert np.array_equal(keep.items[0][1], frames[0][:, ::-1])


def test_live_parity_warns_below_the_precision_threshold(frames):
    class Noisy(FakeTranslator):
        def __call__(self, crops):
            out = super().__call__(crops).astype(int)
            noise = np.random.default_rng(0).integers(-20, 21, out.shape)
            return np.clip(out + noise, 0, 255).astype(np.uint8)  # ~27 dB: below int8's 30 dB

    logs = []
    pipeline = Pipeline(ListSource(frames[:12]), FakeTranslator(), FaceStage(64), [],
                        domain="Invert", parity_every=3, reference_factory=Noisy,
                        precision="int8", log=logs.append)
    assert pipeline.run() == 0
    p = pipeline.summary()["parity"]
    assert p["checks"] == 4 and p["failed_checks"] == 4 and p["passed"] is False
    assert p["threshold"] == {"metric": "psnr_db", "value": 30.0} and p["psnr_db"]["mean"] < 30
    assert any("WARNING parity below the int8 threshold" in line for line in logs)
    clean = Pipeline(ListSource(frames[:6]), FakeTranslator(), FaceStage(64), [],
                     domain="Invert", parity_every=2, reference_factory=FakeTranslator,
                     precision="fp32", log=lambda m: None)
    assert clean.run() == 0
    p = clean.summary()["parity"]
    assert p["passed"] and p["max_abs_err"] == 0 and p["psnr_db"]["min"] == 100.0


def test_measure_framing_recovers_the_crop_geometry():
    from stargan_rt.stream.faces import measure_framing
    for arch in ("v1", "v2"):
        stage = FaceStage(128, arch=arch, align=False)
        crops = [stage.crops(f)[1][0] for f in face_frames(6, size=(480, 360))]
        got = measure_framing(crops)
        assert got["detected"] == 1.0
        assert got["crop_scale"] == pytest.approx(stage.framing[0], rel=0.08)
        assert got["crop_shift"] == pytest.approx(stage.framing[1], abs=0.04)
    with pytest.raises(UserError):
        measure_framing([np.zeros((64, 64, 3), np.uint8)])


def test_stream_url_source_is_live_and_hides_credentials(frames, tmp_path):
    import functools
    import http.server

    write_video(tmp_path / "clip.avi", frames[:10], fps=20.0, fourcc="MJPG")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.avi")
        assert source.live
        pipeline = Pipeline(source, FakeTranslator(), FaceStage(64), [], domain="Invert",
                            log=lambda m: None)
        pipeline.run()
        assert pipeline.summary()["frames_in"] == 10  # then the stream ends: reported, no hang
        with pytest.raises(UserError) as info:
            open_source(f"http://user:secret@127.0.0.1:{server.server_address[1]}/nope.avi")
        assert "secret" not in str(info.value) and "***" in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_v1_domain_rule_without_discriminator(tmp_path):
    """The translators own the v1 target rule (bundle.v1_target_labels): an attribute model
    without its discriminator refuses --domain before the source opens and takes --labels; a
    class model (RaFD-style) needs no discriminator: --domain X is X on, the others off."""
    attrs = tiny_v1_bundle(tmp_path / "noD", discriminator=False)
    cache = tmp_path / "cache"
    r = run_cli("webcam", "--model", attrs, "--domain", "Smiling", "--source", "sample",
                "--headless", "--max-frames", 6, "--cache-dir", cache)
    assert r.returncode == 2, r.stderr
    assert "no discriminator" in r.stderr and "--labels" in r.stderr
    assert "Traceback" not in r.stderr and "out 6" not in r.stderr
    r = run_cli("webcam", "--model", attrs, "--labels", "Black_Hair=0,Blond_Hair=1,Smiling=1",
                "--source", "sample", "--headless", "--max-frames", 6, "--cache-dir", cache)
    assert r.returncode == 0 and "out 6" in r.stderr, r.stderr

    from stargan_rt.runtime import Translator
    classes = tiny_v1_bundle(tmp_path / "classes", discriminator=False, labels="classes")
    engine = Translator.create(classes, target="onnxruntime", cache_dir=cache, log=lambda m: None)
    engine.set_domain("smiling")
    crops = np.zeros((2, 64, 64, 3), np.uint8)
    assert engine.feeds(crops)["labels"].tolist() == [[0, 0, 1], [0, 0, 1]]
    r = run_cli("webcam", "--model", classes, "--domain", "Blond_Hair", "--source", "sample",
                "--headless", "--max-frames", 6, "--cache-dir", cache)
    assert r.returncode == 0 and "out 6" in r.stderr, r.stderr


def _landmarks_from(eyes, mouth_corners) -> np.ndarray:
    """98 WFLW points with the eye contours and mouth corners at the given places."""
    points = np.zeros((98, 3))
    points[:, 2] = 0.9  # heatmap peaks
    points[60:68, :2], points[68:76, :2] = eyes
    points[76, :2], points[82, :2] = mouth_corners
    return points


def test_fan_landmarks_align_the_next_crops(frames):
    """v2 with a FAN: the landmarks found on a face's crop give its next crops the CelebA-HQ
    alignment (faces.aligned_square), kept relative to the tracked box; weak or implausible
    landmarks are ignored and counted."""
    from stargan_rt.stream.faces import _matrix, aligned_square

    frame = frames[0]
    stage = FaceStage(64, "v2")
    faces, _ = stage.crops(frame)
    assert faces, "the test frame should show a face"
    x, y, w, h = faces[0].box
    # ground truth in frame pixels: a face rolled by 12 degrees about the box centre
    theta = np.radians(12.0)
    turn = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = np.array([x + w / 2, y + h / 2])
    local = np.array([[-0.2 * w, -0.1 * h], [0.2 * w, -0.1 * h],
                      [-0.15 * w, 0.25 * h], [0.15 * w, 0.25 * h]])
    eye_a, eye_b, mouth_a, mouth_b = local @ turn.T + centre
    truth = _landmarks_from((eye_a, eye_b), (mouth_a, mouth_b))
    want = aligned_square(truth)
    assert abs(want[3] - 12.0) < 1e-6

    for _ in range(10):
        faces, crops = stage.crops(frame)
        m = _matrix(faces[0].square, 64)
        in_crop = truth.copy()
        in_crop[:, :2] = truth[:, :2] @ m[:, :2].T + m[:, 2]
        stage.observe(faces, in_crop[None])
    square = stage.crops(frame)[0][0].square
    side = want[2]
    assert abs(square[2] - side) < 0.03 * side
    assert np.hypot(square[0] - want[0], square[1] - want[1]) < 0.03 * side
    assert abs(square[3] - 12.0) < 0.5
    assert stage.landmark_stats["observed"] == 10 and stage.landmark_stats["rejected"] == 0
    assert stage.landmark_stats["aligned_crops"] >= 10

    weak = truth.copy()
    weak[:, 2] = 0.05
    fresh, control = FaceStage(64, "v2"), FaceStage(64, "v2")
    faces, _ = fresh.crops(frame)
    control.crops(frame)
    fresh.observe(faces, weak[None])
    squashed = _landmarks_from((centre, centre + 1), (centre, centre))  # eyes 1 px apart
    fresh.observe(faces, squashed[None])
    assert fresh.landmark_stats == {"observed": 2, "rejected": 2, "aligned_crops": 0}
    assert fresh.crops(frame)[0][0].square == control.crops(frame)[0][0].square


def test_pipeline_feeds_fan_landmarks_back(frames):
    """The inference stage hands the landmarks of a locating translator to the face stage; the
    stats report the alignment."""
    class Locating(FakeTranslator):
        arch = "v2"
        locates_landmarks = True

        def translate_and_locate(self, crops):
            # the points of a face already aligned in this crop: the framing settles at once
            points = _landmarks_from(((23.5, 29.9), (39.5, 29.9)), ((25.5, 45.9), (37.5, 45.9)))
            return self(crops), np.repeat(points[None], len(crops), axis=0)

    sink = Keep()
    pipeline = Pipeline(ListSource(frames[:12]), Locating(), FaceStage(64, "v2"), [sink],
                        domain="Invert", log=lambda m: None)
    assert pipeline.run() == 0
    summary = pipeline.summary()
    assert summary["frames_out"] == 12
    assert summary["alignment"].startswith("FAN landmarks")
    marks = summary["landmarks"]
    assert marks["observed"] >= 10 and marks["rejected"] == 0 and marks["aligned_crops"] >= 8


def test_demo_bundles_carry_their_crop_framing(tmp_path):
    """The framing of the synthetic faces travels in the manifest: a copy of a demo bundle
    elsewhere is framed the same (no code looks at a model's path)."""
    import shutil

    from stargan_rt.bundle import Bundle
    from stargan_rt.defaults import DEMO_MODELS
    from stargan_rt.stream.faces import framing_for
    from stargan_rt.synth import HAAR_FRAMING

    for name, path in DEMO_MODELS.items():
        copy = shutil.copytree(path, tmp_path / name)
        manifest = Bundle.open(copy).manifest
        assert framing_for(manifest.arch, manifest.config) == (HAAR_FRAMING["crop_scale"],
                                                               HAAR_FRAMING["crop_shift"])
