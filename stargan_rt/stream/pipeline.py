"""The threaded live pipeline: capture -> faces -> engine + paste-back -> sinks.

Capture and face detection each run in their own thread; inference runs in ``options.streams``
worker threads (frames in flight at once, put back in order before the sinks), and each worker
pastes its frame's translated faces back right after its engine call; the sinks run in the
calling (main) thread, where OpenCV's window must live. Paste-back is in the worker, not in a
thread of its own, because on a 2-core machine every thread that wakes beside the engine's
preempts it: the worker's own engine request is idle while it pastes, so the paste takes a core
while the other stream's call runs instead of waking a third thread beside both.
Stages are joined by small queues. For cameras and ``--realtime`` the queues hold one frame and
drop the OLDEST when full, so the newest frame always wins and latency stays bounded; a file
otherwise goes through frame by frame with blocking queues, none dropped, so a recording has
every frame.
"""
from __future__ import annotations

import collections
import dataclasses
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.stream.contracts import Sink, SourceNeed, StreamOptions, StreamTranslator, Target
from stargan_rt.stream.faces import FaceStage
from stargan_rt.stream.live_parity import LiveParity
from stargan_rt.stream.sources import Source, SourceDied
from stargan_rt.stream.stats import RunStats, rss_mb

# ---------------------------------------------------------------------------------------------
# queues
# ---------------------------------------------------------------------------------------------
_EOS = object()  # end of stream marker; never dropped


class DropQueue:
    """A small queue. ``lossy``: a put on a full queue drops the OLDEST item (newest wins);
    otherwise a put waits for room (or for the stop event).

    Getters and putters wait on separate conditions and each change wakes one waiter of the
    kind that can use it: with one condition woken for all, every frame woke both inference
    threads and the producers too, and on 2 cores each needless wakeup preempts the engine."""

    def __init__(self, maxsize: int, lossy: bool, stop: threading.Event):
        self.items: collections.deque = collections.deque()
        self.maxsize = maxsize
        self.lossy = lossy
        self.stop = stop
        lock = threading.Lock()
        self.not_empty = threading.Condition(lock)
        self.not_full = threading.Condition(lock)
        self.dropped = 0

    def put(self, item, final: bool = False) -> bool:
        with self.not_full:
            if not final:
                if self.lossy:
                    while len(self.items) >= self.maxsize:
                        old = self.items.popleft()
                        if old is _EOS:  # keep the end marker
                            self.items.appendleft(old)
                            break
                        self.dropped += 1
                else:
                    while len(self.items) >= self.maxsize:
                        if self.stop.is_set():
                            return False
                        self.not_full.wait(0.1)
            self.items.append(item)
            self.not_empty.notify()
            return True

    def get(self, timeout: float = 0.1):
        """The next item, ``_EOS``, or None on timeout."""
        with self.not_empty:
            if not self.items:
                self.not_empty.wait(timeout)
                if not self.items:
                    return None
            item = self.items.popleft()
            self.not_full.notify()
            return item


# ---------------------------------------------------------------------------------------------
@dataclass
class Packet:
    index: int
    frame: np.ndarray
    t0: float
    faces: list = field(default_factory=list)
    crops: np.ndarray | None = None
    translated: np.ndarray | None = None
    result: np.ndarray | None = None
    source: np.ndarray | None = None  # the frame before paste-back, for sinks that show it


class Pipeline:
    """``Pipeline(source, translator, faces, sinks, options)``; the options may also be given as
    keyword arguments of ``StreamOptions``' field names (they override ``options``')."""

    def __init__(self, source: Source, translator: StreamTranslator, faces: FaceStage,
                 sinks: Sequence[Sink] = (), options: StreamOptions | None = None, **fields):
        options = dataclasses.replace(options or StreamOptions(), **fields)
        self.options = options
        self.source = source
        self.translator = translator
        self.faces = faces
        self.sinks = list(sinks)
        self._source_needs = {sink.needs_source for sink in self.sinks}  # the sinks are fixed
        self.realtime = options.realtime
        self.lossy = source.live or options.realtime
        self.max_frames = options.max_frames
        self.parity_every = options.parity_every
        self.precision = options.precision
        self.log = options.log
        self.model_name = options.model_name
        self.arch = translator.arch
        self.domains = list(translator.domains)
        self.engine = options.engine_name or translator.describe()
        # v2 models with a FAN: its landmarks align the next crops (FaceStage.observe)
        self.locates_landmarks = bool(translator.locates_landmarks)
        self.stats = RunStats()
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self.error: str | None = None
        self.exit_code = 0
        self.streams = max(1, int(options.streams))
        depth = 1 if self.lossy else 2
        self.q_detect = DropQueue(depth, self.lossy, self.stop_event)
        self.q_infer = DropQueue(depth if self.lossy else depth + self.streams - 1, self.lossy,
                                 self.stop_event)
        self.q_out = DropQueue(2 + self.streams - 1, self.lossy, self.stop_event)
        self.out_of_order_dropped = 0
        self.q_parity = DropQueue(1 if self.lossy else 2, self.lossy, self.stop_event)
        self.commands: collections.deque = collections.deque()
        # window / web page toggles; mirror flips frames at capture (selfie view)
        self.view = {"side_by_side": options.side_by_side, "overlay": options.overlay,
                     "mirror": options.mirror}
        labels = tuple(options.labels) if options.labels is not None else None
        self.target = Target(domain=options.domain, labels=labels, seed=options.seed,
                             ref_bgr=options.ref_bgr, psi=options.psi)
        self.latest_crops: np.ndarray | None = None
        self.live_parity = LiveParity(options.parity_every, options.reference_factory,
                                      options.precision, self.stats.parity,
                                      self.stats.stages["parity"], self.log) \
            if options.parity_every else None
        self._threads: list[threading.Thread] = []
        self._parity_thread: threading.Thread | None = None
        self.started_at = time.time()
        self.duration = 0.0
        self._opencv_threads = cv2.getNumThreads()
        self.target.apply_to(self.translator)

    # -- control (any thread) ------------------------------------------------------------------
    def request(self, command: str, value=None) -> None:
        """Queue a live change for the inference thread: ("domain", name), ("style", seed),
        ("ref_face", None), ("labels", vector)."""
        self.commands.append((command, value))

    def stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = self.stop_reason or reason
            self.stop_event.set()

    @property
    def domain(self) -> str | None:
        return self.target.domain

    def _handle_commands(self) -> None:
        while self.commands:
            command, value = self.commands.popleft()
            new = Target(**{**self.target.__dict__})
            if command == "domain":
                new.domain, new.labels = str(value), None
            elif command == "style":
                new.seed = int(value) if value is not None else int(np.random.randint(2**31))
                new.ref_bgr = None
            elif command == "ref_face":
                if self.latest_crops is None or not len(self.latest_crops):
                    self.log("no face in view to take as the style reference")
                    continue
                new.ref_bgr = self.latest_crops[0].copy()
            elif command == "labels":
                new.labels = tuple(value)
            else:
                continue
            if command in ("style", "ref_face") and self.arch != "v2":
                self.log("styles apply to StarGAN v2 models only; this is a v1 model")
                continue
            try:
                new.apply_to(self.translator)
            except UserError as exc:
                self.log(f"cannot switch: {exc}")
                try:
                    self.target.apply_to(self.translator)
                except UserError:
                    pass
                continue
            new.version = self.target.version + 1
            self.target = new
            what = {"domain": f"domain {new.domain}", "style": f"style seed {new.seed}",
                    "ref_face": "style from the current face", "labels": f"labels {new.labels}"}
            self.log(f"now translating to {what[command]}")

    # -- threads -------------------------------------------------------------------------------
    def _guard(self, stage: str, body: Callable[[], None], downstream: DropQueue | None):
        def run():
            try:
                body()
            except SourceDied as exc:
                self.error = f"source died: {exc}"
                self.exit_code = 1
                self.stop_reason = self.stop_reason or "source died"
            except UserError as exc:  # bad input (2), or a remote engine's server failing (1)
                self.error = str(exc)
                self.exit_code = exc.exit_code
                self.stop(f"{stage} failed")
            except Exception as exc:  # noqa: BLE001 - reported, never a silent hang
                self.error = f"{stage} failed: {type(exc).__name__}: {exc}"
                self.exit_code = 1
                self.stop(f"{stage} failed")
            finally:
                if downstream is not None:
                    downstream.put(_EOS, final=True)
        thread = threading.Thread(target=run, name=f"stargan-{stage}", daemon=True)
        self._threads.append(thread)
        return thread

    def _capture(self) -> None:
        index = 0
        t_start = time.perf_counter()
        period = 1.0 / self.source.fps if self.realtime and not self.source.live and \
            self.source.fps > 0 else 0.0
        while not self.stop_event.is_set():
            if self.max_frames is not None and index >= self.max_frames:
                self.stop_reason = self.stop_reason or f"--max-frames {self.max_frames} reached"
                return
            if period:
                delay = t_start + index * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            t0 = time.perf_counter()
            frame = self.source.read()
            if frame is None:
                self.stop_reason = self.stop_reason or "end of source"
                return
            if self.view["mirror"]:
                frame = cv2.flip(frame, 1)
            self.stats.stages["capture"].add((time.perf_counter() - t0) * 1000)
            self.stats.frames_in += 1
            self.q_detect.put(Packet(index, frame, t0))
            index += 1

    def _items(self, queue: DropQueue, on_wake=None, shared: bool = False):
        """Items of a stage queue until the end marker or a stop; ``get`` returns None when it
        times out, which is when a stop is noticed (and ``on_wake`` runs, if given). ``shared``:
        several threads read the queue, so the end marker is put back for the others."""
        while True:
            item = queue.get()
            if on_wake is not None:
                on_wake()
            if item is None:
                if self.stop_event.is_set():
                    return
                continue
            if item is _EOS:
                if shared:
                    queue.put(_EOS, final=True)
                return
            yield item

    def _detect(self) -> None:
        for packet in self._items(self.q_detect):
            t = time.perf_counter()
            packet.faces, packet.crops = self.faces.crops(packet.frame)
            self.stats.stages["detect"].add((time.perf_counter() - t) * 1000)
            self.q_infer.put(packet)

    def _infer(self, worker: int = 0) -> None:
        # Live changes are applied by one worker; a frame already in another worker may still
        # be translated to the previous target.
        on_wake = self._handle_commands if worker == 0 else None
        for packet in self._items(self.q_infer, on_wake=on_wake, shared=self.streams > 1):
            if packet.crops is not None and len(packet.crops):
                t = time.perf_counter()
                if self.locates_landmarks:
                    packet.translated, landmarks = self.translator.translate_and_locate(
                        packet.crops)
                    self.faces.observe(packet.faces, landmarks)  # aligns the next crops
                else:
                    packet.translated = self.translator(packet.crops)
                self.stats.stages["infer"].add((time.perf_counter() - t) * 1000)
                self.latest_crops = packet.crops
                if self.live_parity is not None and self.live_parity.due(packet.index) and \
                        self._parity_thread is not None and self._parity_thread.is_alive():
                    style = None
                    if self.arch == "v2":
                        style = np.array(self.translator.style(), dtype=np.float32)
                    self.q_parity.put((packet.crops, packet.translated, self.target, style))
            self._paste(packet)
            self.q_out.put(packet)

    def _parity(self) -> None:
        for crops, engine_out, target, style in self._items(self.q_parity):
            if not self.live_parity.check(crops, engine_out, target, style):
                return

    def _paste(self, packet: Packet) -> None:
        """The translated faces blended into the frame (in place: the source frame is copied
        first for the sinks that show it)."""
        t = time.perf_counter()
        wants = self._source_needs
        need_source = SourceNeed.ALWAYS in wants or (SourceNeed.SIDE_BY_SIDE in wants and
                                                     self.view["side_by_side"])
        packet.source = packet.frame.copy() if need_source and not self.faces.no_face else \
            packet.frame
        if packet.translated is not None:
            packet.result = self.faces.paste(packet.frame, packet.faces, packet.crops,
                                             packet.translated)
        else:
            packet.result = packet.frame
        self.stats.stages["paste"].add((time.perf_counter() - t) * 1000)

    # -- main thread: sinks --------------------------------------------------------------------
    def _output(self, packet: Packet) -> None:
        n = 0 if self.faces.no_face else len(packet.faces)
        if n:
            self.stats.frames_with_faces += 1
            self.stats.faces_found += n
            self.stats.max_faces = max(self.stats.max_faces, n)
        t1 = time.perf_counter()
        for sink in self.sinks:
            if sink.write(packet.result, packet.source, packet, self) is False:
                self.stop("quit")
        t2 = time.perf_counter()
        self.stats.stages["output"].add((t2 - t1) * 1000)
        self.stats.stages["end_to_end"].add((t2 - packet.t0) * 1000)
        self.stats.frame_out()

    def _in_order(self):
        """Packets from the inference threads in frame order: with several streams a frame can
        finish before an earlier one. Every frame: wait for the next index. Live (lossy): a
        frame older than one already shown is dropped. Ends after every thread's end marker."""
        pending: dict[int, Packet] = {}
        ends, next_index, shown = 0, 0, -1   # every frame: capture numbers them from 0, no gaps
        while True:
            packet = self.q_out.get(0.1)
            if packet is _EOS:
                ends += 1
                if ends < self.streams:
                    continue
                yield from (pending[i] for i in sorted(pending))  # after an error or a stop
                yield _EOS
                return
            if packet is None or self.streams == 1:
                yield packet
                continue
            if self.lossy:
                if packet.index < shown:
                    self.out_of_order_dropped += 1
                    continue
                shown = packet.index
                yield packet
                continue
            pending[packet.index] = packet
            while next_index in pending:
                yield pending.pop(next_index)
                next_index += 1

    def run(self) -> int:
        """Run until the source ends, a sink quits, max-frames, Ctrl-C or an error."""
        # the parity thread starts first: an inference thread sends a frame for checking only
        # while it is alive, and frame 0 must not find it not started yet
        if self.live_parity is not None and self.options.reference_factory is not None:
            self._parity_thread = self._guard("parity", self._parity, None)
        self._guard("capture", self._capture, self.q_detect)
        self._guard("detect", self._detect, self.q_infer)
        infer_threads = [self._guard(f"infer{i}" if i else "infer",
                                     lambda i=i: self._infer(i), self.q_out)
                         for i in range(self.streams)]
        t_start = time.perf_counter()
        self._opencv_threads = cv2.getNumThreads()
        if self.options.opencv_threads is not None:
            cv2.setNumThreads(self.options.opencv_threads)
        try:
            for sink in self.sinks:
                sink.open(self)
            for thread in self._threads:
                thread.start()
            for packet in self._in_order():
                if packet is _EOS:
                    break
                if packet is None:
                    for sink in self.sinks:  # keep the window responsive while waiting
                        if sink.idle(self) is False:
                            self.stop("quit")
                    if self.stop_event.is_set() and not any(t.is_alive() for t in infer_threads):
                        break
                    continue
                try:
                    self._output(packet)
                except UserError as exc:  # e.g. the recorder or virtual camera cannot start
                    self.error, self.exit_code = str(exc), 2
                    self.stop("output failed")
                    break
                if self.stop_event.is_set() and self.stop_reason in ("quit", "stopped"):
                    break
        except KeyboardInterrupt:
            self.stop("interrupted (Ctrl-C)")
        finally:
            self._finish(t_start)
        return self.exit_code

    def _finish(self, t_start: float) -> None:
        previous = None
        try:  # a second Ctrl-C must not cut the recording's finalisation short
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
        try:
            if not self.stop_event.is_set() and self._parity_thread is not None:
                # a natural end: let the queued parity checks finish so the figures are complete
                self.q_parity.put(_EOS, final=True)
                self._parity_thread.join(timeout=120.0)
            self.stop(self.stop_reason or "end of source")
            for q in (self.q_detect, self.q_infer, self.q_out, self.q_parity):
                q.put(_EOS, final=True)
            for thread in self._threads:
                if thread.ident is not None:
                    thread.join(timeout=2.0)
            self.duration = time.perf_counter() - t_start
            for sink in self.sinks:
                try:
                    sink.close(self)
                except UserError as exc:  # e.g. a recording that failed its verification
                    if self.error:
                        self.log(f"error: {exc}")
                    else:
                        self.error = str(exc)
                    self.exit_code = 2
                except Exception as exc:  # noqa: BLE001 - close the others anyway
                    self.log(f"closing {type(sink).__name__} failed: {exc}")
                    self.exit_code = self.exit_code or 1
            try:
                self.source.close()
            except Exception:  # noqa: BLE001
                pass
        finally:
            cv2.setNumThreads(self._opencv_threads)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    # -- reporting -----------------------------------------------------------------------------
    def dropped(self) -> dict:
        return {"capture->detect": self.q_detect.dropped, "detect->infer": self.q_infer.dropped,
                "infer->output": self.q_out.dropped + self.out_of_order_dropped,
                "parity_skipped": self.q_parity.dropped}

    def _alignment(self) -> str | None:
        if self.faces.no_face:
            return None
        if not self.faces.align:
            return "detector framing"
        if self.locates_landmarks:
            return "FAN landmarks (CelebA-HQ alignment), detector framing until they arrive"
        return "detector framing + eye levelling"

    def summary(self) -> dict:
        s = self.stats
        span = (s.last_out - s.first_out) if s.first_out and s.last_out else 0.0
        drops = self.dropped()
        return {
            "model": self.model_name, "arch": self.arch, "engine": self.engine,
            "precision": self.precision, "streams": self.streams,
            "domain": self.target.domain,
            "labels": list(self.target.labels) if self.target.labels else None,
            "style": ({"seed": self.target.seed, "psi": self.target.psi,
                       "reference": self.target.ref_bgr is not None}
                      if self.arch == "v2" else None),
            "source": self.source.info(), "mode": "live (drop oldest)" if self.lossy else
            "every frame", "no_face": self.faces.no_face,
            "frames_in": s.frames_in, "frames_out": s.frames_out,
            "frames_dropped": sum(v for k, v in drops.items() if k != "parity_skipped"),
            "dropped_by_queue": drops,
            "frames_with_faces": s.frames_with_faces, "faces_found": s.faces_found,
            "max_faces_in_frame": s.max_faces,
            "detector": self.faces.detector_name,
            "alignment": self._alignment(),
            "landmarks": dict(self.faces.landmark_stats) if self.locates_landmarks else None,
            "fps": round((s.frames_out - 1) / span, 2) if span > 0 else None,
            "fps_last_window": None if s.fps() is None else round(s.fps(), 2),
            "duration_s": round(self.duration, 3),
            "latency_ms": {k: v.hist.summary() for k, v in s.stages.items() if v.hist.count},
            "parity": s.parity.summary() if self.parity_every else None,
            "memory_mb": {"rss_start": round(s.rss_start, 1), "rss_end": round(rss_mb(), 1),
                          "rss_peak": round(max(s.rss_peak, rss_mb()), 1),
                          "samples": list(s.rss_samples)},
            "stop_reason": self.stop_reason, "error": self.error, "exit_code": self.exit_code,
        }

