"""What the live pipeline is given and what it promises: its options, the translator it drives,
the sinks it feeds, and the target (domain / labels / style) that keys and the web page change.

A pipeline is ``Pipeline(source, translator, faces, sinks, options)``:
  source      ``stream.sources.Source``: ``read()`` frames until None
  translator  anything with the ``StreamTranslator`` methods (``runtime.Translator`` runs engines,
              ``reference.TorchTranslator`` the PyTorch reference used for live parity)
  faces       ``stream.faces.FaceStage``: crops out, paste back
  sinks       ``Sink`` subclasses: where the processed frames go
  options     ``StreamOptions``
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

if TYPE_CHECKING:
    from stargan_rt.stream.pipeline import Packet, Pipeline

# The face detectors the live pipeline can use (stream.faces.make_detector): BlazeFace, the
# default, is installed by `stargan-rt pull face-detector`; Haar comes with OpenCV.
DETECTORS = ("blazeface", "haar")
DEFAULT_DETECTOR = "blazeface"


class StreamTranslator(Protocol):
    """The translator calls the pipeline makes; nothing else is looked up on it."""

    arch: str                 # "v1" or "v2"
    domains: list[str]
    image_size: int
    locates_landmarks: bool   # True: translate_and_locate also returns FAN landmarks per crop

    def set_domain(self, name: str) -> None: ...

    def set_labels(self, labels) -> None: ...           # v1: the full target vector

    def set_style(self, seed: int | None = None, ref_bgr: np.ndarray | None = None,
                  psi: float = 1.0) -> None: ...        # v2 only

    def set_style_vector(self, style: np.ndarray) -> None: ...   # v2: use this style as is

    def style(self) -> Any: ...                         # v2: the current style vector

    def __call__(self, crops: np.ndarray) -> np.ndarray: ...      # uint8 NHWC BGR in and out

    def translate_and_locate(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def describe(self) -> str: ...                      # engine, precision, device


class SourceNeed(enum.Enum):
    """Whether a sink needs the untouched source frame next to the result (copying it costs a
    frame's worth of memory bandwidth, so the pipeline only does it when a sink asks)."""

    NEVER = "never"
    ALWAYS = "always"
    SIDE_BY_SIDE = "side_by_side"   # only while the side-by-side view is on


class Sink:
    """Where processed frames go. Every method runs in the pipeline's main thread.

    ``write(result, source, packet, pipeline)`` gets the result frame, the source frame (the
    untouched one when ``needs_source`` asks for it, else the same array as ``result``), the
    ``Packet`` (``index``, ``faces``) and the pipeline, of which a sink may use: ``view`` (the
    toggles), ``target``, ``domains``, ``arch``, ``engine``, ``precision``, ``lossy``, ``source``
    (``fps``, ``description``), ``stats``, ``dropped()``, ``request()``, ``stop()`` and ``log()``.
    ``write`` and ``idle`` return False to stop the run. ``close`` runs on every stop path and must
    finalise whatever the sink wrote.
    """

    needs_source: SourceNeed = SourceNeed.NEVER

    def open(self, pipeline: Pipeline) -> None:
        """Before the first frame; raise UserError when the sink cannot work."""

    def write(self, result: np.ndarray, source: np.ndarray, packet: Packet,
              pipeline: Pipeline) -> bool | None:
        raise NotImplementedError

    def idle(self, pipeline: Pipeline) -> bool:
        """Called while no frame is ready (a window keeps answering its keys)."""
        return True

    def close(self, pipeline: Pipeline) -> None:
        """After the last frame, on every stop path."""


@dataclass
class StreamOptions:
    """Everything about a run that is not one of the pipeline's parts."""

    realtime: bool = False              # pace files at their FPS and drop frames like a camera
    max_frames: int | None = None       # stop after reading this many frames
    domain: str | None = None           # initial target
    labels: tuple | None = None         # v1: full target vector instead of a domain
    seed: int | None = None             # v2: latent-guided style
    ref_bgr: np.ndarray | None = None   # v2: reference image's style
    psi: float = 1.0                    # v2: truncation toward the mean style
    parity_every: int = 0               # live parity on every N-th frame (0: off)
    reference_factory: Callable[[], StreamTranslator] | None = None  # makes the parity reference
    precision: str = "fp32"             # the engine's precision: picks the parity threshold
    log: Callable[[str], None] = print
    model_name: str = ""
    engine_name: str | None = None      # default: translator.describe()
    side_by_side: bool = False          # initial view toggles
    mirror: bool = False
    overlay: bool = True
    # Thread budget: the engine's runtime keeps every core for inference; OpenCV's detection,
    # tracking and paste-back run on this many threads beside it (None: OpenCV's own default, a
    # worker per core, which made its stages and the engine fight for the same cores; measured
    # with `stargan-rt bench --pipeline --opencv-threads 1,default`).
    opencv_threads: int | None = 1
    # Frames in inference at once: each of this many inference threads runs one frame on an
    # engine stream with its share of the cores (``BuildRequest.streams``, built to match).
    # 1: one frame at a time on every core, the lowest latency; 2 on a few cores: a stage
    # that preempts the runtime's threads stalls one frame instead of every core's work.
    streams: int = 1


@dataclass
class Target:
    """What the engine is translating to: changed live by keys / the web page."""

    domain: str | None = None
    labels: tuple | None = None
    seed: int | None = 0
    ref_bgr: np.ndarray | None = None
    psi: float = 1.0
    version: int = 0

    def apply_to(self, translator: StreamTranslator) -> None:
        if self.labels is not None:
            translator.set_labels(list(self.labels))
        elif self.domain is not None:
            translator.set_domain(self.domain)
        if translator.arch == "v2":
            translator.set_style(seed=self.seed, ref_bgr=self.ref_bgr, psi=self.psi)
