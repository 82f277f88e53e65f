"""Faces: detection (BlazeFace, ``stream.blazeface``, or OpenCV's Haar cascade) every k frames,
template tracking in between, temporal box
smoothing, crops framed like the model's training data, and feathered, colour-matched paste-back.

Boxes are (x, y, w, h) floats in frame pixels. A crop is the square ``(x0, y0, side, angle)``
that the framing derives from a face box (turned by the head's roll so the eyes are level, as in
CelebA's aligned photos), resampled to the model's size with one ``warpAffine`` (which also pads
with replicated edges where the square leaves the frame).

With a FAN (v2 CelebA-HQ models) the crops are aligned like CelebA-HQ's photos instead: the FAN
that computes the generator's masks also returns 98 landmarks per crop; ``FaceStage.observe``
turns them into the aligned square (eyes and mouth, ``aligned_square``) and keeps it, relative to
the face's tracked box, for that face's next crops. No second FAN pass is needed; the framing
lags the landmarks by the one or two frames in flight, like the tracked boxes themselves.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.imaging import box_iou as _iou
from stargan_rt.stream.contracts import DEFAULT_DETECTOR, DETECTORS

# Framing: crop side = scale * face-box width; crop centre = box centre + shift * box width (y).
# Measured on the astronaut photo: the Haar frontal box is ~2.06 eye distances wide with the eyes
# 0.38 box widths below its top.
# v1 (CelebA): the official loader centre-crops the 178x218 aligned photos to 178x178; the eyes
# sit ~39 px apart at y ~91 of the crop, so the box is ~80 px wide, centred ~12 px below the crop
# centre: scale 2.2, shift -0.15.
# v2 (CelebA-HQ, FFHQ-style alignment): the crop is ~4 eye distances wide, centred just below the
# eyes (eye midpoint + 0.1 eye-to-mouth): scale 1.95, shift -0.07.
FRAMING = {"v1": (2.2, -0.15), "v2": (1.95, -0.07)}
# Whole-frame scans step face sizes by 10 %; the periodic look for new faces beside tracked
# ones may step coarser (FaceTracker.new_face_step).
SCAN_STEP = 1.1
# The 256 uint8 levels as a column, for per-channel lookup tables.
_LEVELS = np.arange(256, dtype=np.float64)[:, None]
# Other framings (the built-in demo models' synthetic faces: stargan_rt.synth.HAAR_FRAMING) come
# with the bundle, in its manifest config (crop_scale, crop_shift).


def framing_for(arch: str, config: dict | None = None) -> tuple[float, float]:
    config = config or {}
    scale, shift = FRAMING.get(arch, FRAMING["v1"])
    return float(config.get("crop_scale", scale)), float(config.get("crop_shift", shift))


def measure_framing(images, detector: "HaarDetector | None" = None) -> dict:
    """The framing of a set of square training images, measured with the detector the runtime
    uses: median crop_scale (image side / face-box width) and crop_shift ((image centre - box
    centre) / box width, vertical). Put them in a bundle's manifest config (``crop_scale``,
    ``crop_shift``) so live crops match what the model was trained on."""
    detector = detector or HaarDetector(max_side=512, min_face=0.2)
    scales, shifts, total = [], [], 0
    for image in images:
        total += 1
        if image.shape[1] < 160:  # upscale small training images for the detector
            image = cv2.resize(image, (256, round(256 * image.shape[0] / image.shape[1])),
                               interpolation=cv2.INTER_CUBIC)
        grey, scale = detector.small_grey(image)
        found = detector.detect_weighted(grey, scale)
        if not found:
            continue
        (x, y, w, h), _ = max(found, key=lambda bw: bw[0][2])
        scales.append(image.shape[1] / w)
        shifts.append((image.shape[0] / 2.0 - (y + h / 2.0)) / w)
    if not scales:
        raise UserError("no face found in the images: cannot measure their framing")
    return {"crop_scale": round(float(np.median(scales)), 3),
            "crop_shift": round(float(np.median(shifts)), 3),
            "detected": round(len(scales) / max(total, 1), 3)}


def small_grey(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The frame in grey, at most ``max_side`` pixels wide and high, and the factor used."""
    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
        # INTER_AREA by a whole factor first (its fast path), then the small rest bilinear:
        # 640 -> 256 by INTER_AREA's general path alone costs ~1 ms per frame, 10x as much
        whole = int(1.0 / scale)
        if whole >= 2:
            grey = cv2.resize(grey, (w // whole, h // whole), interpolation=cv2.INTER_AREA)
        size = (round(w * scale), round(h * scale))
        if grey.shape[1] != size[0] or grey.shape[0] != size[1]:
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
    return grey, scale


class HaarDetector:
    """OpenCV's frontal-face Haar cascade on a downscaled, equalised grey frame.

    ``min_weight``: the cascade's confidence (last stage's level weight) a detection needs to
    start a new face; a face already being tracked is matched at any confidence. On the sample
    video real faces score 4-7 and the false positives (the suit's neck ring) 1.4-2.2.
    """

    kind = "haar"
    # detect_near counts a head rolled by less than this many degrees as upright; a larger
    # roll turns its search region upright first
    UPRIGHT_WITHIN = 8.0

    def __init__(self, max_side: int = 256, min_face: float = 0.1, neighbours: int = 4,
                 min_weight: float = 3.0):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise UserError(f"cannot load the Haar face cascade at {path}; reinstall "
                            "opencv-python < 5 (OpenCV 5 wheels ship no cascades) or use --no-face")
        self.max_side = max_side
        self.min_face = min_face
        self.neighbours = neighbours
        self.min_weight = min_weight
        # detect_near's search: face sizes relative to the tracked box, scale step, and the
        # smallest size's pixels after shrinking the region (the cascade's window is 24 px)
        self.near_range, self.near_step, self.near_px = (0.8, 1.25), 1.05, 24.0
        self.near_margin = 0.3  # the region: the box and this many box widths around it
        self.fine_factor = 2.0  # detect_near(fine=True): the smallest size this much larger
        self.eyes = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")

    def verify(self, frame: np.ndarray, box, weight: float, strong: float = 6.0) -> bool:
        """A new face needs a confident detection and an eye in its upper part (or a very
        confident detection): the frontal cascade alone fires on collars and neck rings."""
        if weight < self.min_weight:
            return False
        if weight >= strong:
            return True
        eyes = self.eyes_in(frame, box)
        return True if eyes is None else len(eyes) > 0

    def small_grey(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        return small_grey(frame, self.max_side)

    def eyes_in(self, frame: np.ndarray, box):
        """Eye boxes (x, y, w, h) in frame pixels inside the upper part of a face box (frame
        pixels), searched on the face resized to 96 px wide (eyes ~15-25 px there; the eye
        cascade's window is 20 px); None when the face is too small to say."""
        x, y, w, h = (int(round(v)) for v in box)
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(frame.shape[1], x + w), min(frame.shape[0], y + h * 6 // 10)
        if self.eyes.empty() or w < 24 or x1 - x0 < 12 or y1 - y0 < 12:
            return None
        k = 96.0 / w
        upper = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
        upper = cv2.equalizeHist(cv2.resize(upper, (round((x1 - x0) * k), round((y1 - y0) * k)),
                                            interpolation=cv2.INTER_LINEAR))
        found = self.eyes.detectMultiScale(upper, 1.15, 3, minSize=(10, 10), maxSize=(36, 36))
        return [(ex / k + x0, ey / k + y0, ew / k, eh / k) for ex, ey, ew, eh in found]

    def roll(self, frame: np.ndarray, box) -> float | None:
        """Head roll in degrees from one eye in each half of the face box (None: not found).
        CelebA's aligned photos have level eyes, so crops are rotated by this much."""
        eyes = self.eyes_in(frame, box)
        if not eyes or len(eyes) < 2:
            return None
        x, y, w, h = box
        mid = x + w / 2.0
        left = [e for e in eyes if e[0] + e[2] / 2.0 < mid]
        right = [e for e in eyes if e[0] + e[2] / 2.0 >= mid]
        if not left or not right:
            return None
        a = max(left, key=lambda e: e[2])
        b = max(right, key=lambda e: e[2])
        (ax, ay), (bx, by) = ((e[0] + e[2] / 2.0, e[1] + e[3] / 2.0) for e in (a, b))
        if not (0.25 * w < bx - ax < 0.75 * w) or max(a[2], b[2]) > 1.8 * min(a[2], b[2]):
            return None  # not a plausible pair of eyes
        angle = float(np.degrees(np.arctan2(by - ay, bx - ax)))
        return angle if abs(angle) <= 25.0 else None

    def detect_weighted(self, grey: np.ndarray, scale: float, step: float = SCAN_STEP):
        """[(box in frame pixels, confidence)], searching face sizes ``step`` apart"""
        eq = cv2.equalizeHist(grey)
        min_side = max(20, int(self.min_face * min(grey.shape)))
        boxes, _, weights = self.cascade.detectMultiScale3(
            eq, scaleFactor=step, minNeighbors=self.neighbours, minSize=(min_side, min_side),
            outputRejectLevels=True)
        if not len(boxes):
            return []
        return [(tuple(float(v) / scale for v in box), float(w))
                for box, w in zip(boxes, np.ravel(weights))]

    def detect_near(self, grey: np.ndarray, scale: float, box, fine: bool = False,
                    angle: float = 0.0):
        """detect_weighted limited to the neighbourhood of a tracked face box (frame pixels):
        the box and ``near_margin`` box widths around it, shrunk so that the smallest face looked
        for (``near_range[0]`` x the box) is ``near_px`` pixels, faces up to ``near_range[1]`` x
        the box. The box follows the face every frame (template tracking), so the face is close
        to it: 1.5-2 ms of CPU, against 30-40 ms for a whole 256 px frame at every scale.
        ``fine``: the smallest face at ``fine_factor`` x ``near_px`` pixels (at most the grey
        frame's own), for a second look when the first finds nothing. ``angle``: the head's
        roll in degrees; from ``UPRIGHT_WITHIN`` on, the region is turned upright before the
        search (the frontal cascade loses faces rolled past ~20 degrees) and the boxes
        found are turned back (centre and size; the roll is the track's)."""
        x, y, w, h = (float(v) * scale for v in box)
        # the region's corners on an 8 px grid and its shrink factor on a 2^(1/4) grid: a box
        # that moved by less than the grid searches the very same pixels, so a still face gets
        # the same detection and a still crop (no feedback from box to region to box)
        grid = 8
        m = self.near_margin
        x0, y0 = max(0, int(x - m * w) // grid * grid), max(0, int(y - m * h) // grid * grid)
        x1 = min(grey.shape[1], -(-int(np.ceil(x + (1 + m) * w)) // grid) * grid)
        y1 = min(grey.shape[0], -(-int(np.ceil(y + (1 + m) * h)) // grid) * grid)
        small, large = self.near_range
        px = self.near_px * (self.fine_factor if fine else 1.0)
        k = px / max(small * w, 1.0)  # region pixels -> searched pixels
        k = min(1.0, 2.0 ** (np.ceil(4.0 * np.log2(k)) / 4.0))
        lo, hi = max(20, int(small * w * k)), int(np.ceil(large * w * k))
        size = (round((x1 - x0) * k), round((y1 - y0) * k))
        if min(size) < lo or hi < lo:
            return []
        if abs(angle) < self.UPRIGHT_WITHIN:
            # searched pixel -> grey pixel: a scale and a shift (the region's corner)
            back = np.array([[1.0 / k, 0.0, x0], [0.0, 1.0 / k, y0]])
            region = grey[y0:y1, x0:x1]
            if k < 1.0:
                region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        else:
            centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
            turn = cv2.getRotationMatrix2D(centre, angle, k)
            turn[:, 2] += np.array(size) / 2.0 - np.array(centre)
            region = cv2.warpAffine(grey, turn, size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            back = cv2.invertAffineTransform(turn)
        boxes, _, weights = self.cascade.detectMultiScale3(
            cv2.equalizeHist(region), scaleFactor=self.near_step, minNeighbors=self.neighbours,
            minSize=(lo, lo), maxSize=(hi, hi), outputRejectLevels=True)
        found = []
        for (bx, by, bw, bh), weight in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights)):
            cx, cy = back @ np.array([bx + bw / 2.0, by + bh / 2.0, 1.0])
            side_w, side_h = bw / (k * scale), bh / (k * scale)
            found.append(((cx / scale - side_w / 2.0, cy / scale - side_h / 2.0, side_w, side_h),
                          float(weight)))
        return found

    def detect(self, grey: np.ndarray, scale: float) -> list[tuple[float, float, float, float]]:
        """Confident detections only."""
        return [b for b, w in self.detect_weighted(grey, scale) if w >= self.min_weight]


@dataclass
class Track:
    box: np.ndarray                 # smoothed (x, y, w, h)
    raw: np.ndarray                 # last measured box
    template: tuple[np.ndarray, float] | None = None  # grey patch, shrink factor (_template)
    misses: int = 0
    age: int = 0
    ident: int = 0
    angle: float = 0.0              # smoothed head roll, degrees


@dataclass
class FaceCrop:
    box: tuple[float, float, float, float]  # smoothed face box
    square: tuple                            # crop (x0, y0, side, roll degrees) in frame pixels
    track: int = 0


class FaceTracker:
    """Detect every ``every`` frames; follow each face by template matching in between; smooth
    the boxes with a dead-band exponential filter so a still face gives a still crop.

    While faces are tracked, a detection looks only around them and, every ``scan_every``-th
    detection, also over the whole frame for new faces: on a 2-core machine every millisecond
    of detection is taken from the inference. The detector is a ``BlazeFaceDetector``
    (``find_near`` / ``find_new``, the roll with each box) or a ``HaarDetector``
    (``detect_near``; the scan for new faces blanks the tracked ones out, since the cascade's
    whole-frame scan costs 15-30 ms, and steps face sizes by ``new_face_step``, 15 %: two thirds
    of the cost of 10 %, while the first scan and the scan for a lost face step by 10 %; the
    roll comes from the eye cascade). Without one it makes a HaarDetector, which needs no
    download; ``FaceStage`` picks the detector by name."""

    def __init__(self, detector=None, every: int = 3,
                 max_faces: int = 8, max_misses: int = 2, smooth: float = 0.45,
                 deadband: float = 0.03, align: bool = True, scan_every: int = 12,
                 roll_every: int = 3, new_face_step: float = 1.15):
        self.detector = detector or HaarDetector()
        self.every = max(1, every)
        self.scan_every = max(1, scan_every)
        self.new_face_step = new_face_step
        # the eye cascade behind the roll costs 2-4 ms per face; a head's roll changes slowly:
        # measured after every third detection
        self.roll_every = max(1, roll_every)
        self._detections = 0
        self.max_faces = max_faces
        self.max_misses = max_misses
        self.smooth = smooth          # weight of the new measurement
        self.deadband = deadband      # ignore moves below this fraction of the face width
        self.align = align            # level the eyes (roll) like CelebA's aligned photos
        self.tracks: list[Track] = []
        self.frame_index = 0
        self._next_id = 1

    def reset(self) -> None:
        self.tracks = []
        self.frame_index = 0
        self._detections = 0

    def _detect(self, frame: np.ndarray, grey: np.ndarray, scale: float) -> list:
        """[(box in frame pixels, confidence, roll in degrees or None)] of this frame."""
        look_for_new = self._detections % self.scan_every == 0 and \
            len(self.tracks) < self.max_faces
        self._detections += 1
        if self.detector.kind == "blazeface":
            return self._detect_blazeface(frame, grey, scale, look_for_new)
        return [(box, weight, None) for box, weight in self._detect_haar(grey, scale,
                                                                         look_for_new)]

    def _detect_blazeface(self, frame: np.ndarray, grey: np.ndarray, scale: float,
                          look_for_new: bool) -> list:
        """The Haar search's plan (around each tracked face, the whole frame when one is gone
        or to look for new faces) with BlazeFace's two models: no second look, no blanking,
        no separate roll measurement (its eyes come with each detection)."""
        if not self.tracks:
            return self.detector.find_new(frame)
        found: list = []
        for track in self.tracks:
            near = self.detector.find_near(frame, track.box)
            if not _overlaps(near, track.box):
                if self._match(grey, scale, track) is not None:
                    continue  # turned or covered where the tracker has it: a miss
                return self.detector.find_new(frame)
            for entry in near:
                if all(_iou(entry[0], other[0]) < 0.5 for other in found):
                    found.append(entry)
        if look_for_new:
            for entry in self.detector.find_new(frame):
                if all(_iou(entry[0], t.box) < 0.25 for t in self.tracks) and \
                        all(_iou(entry[0], other[0]) < 0.25 for other in found):
                    found.append(entry)
        return found

    def _detect_haar(self, grey: np.ndarray, scale: float, look_for_new: bool) -> list:
        if not self.tracks:
            return self.detector.detect_weighted(grey, scale, SCAN_STEP)
        found: list = []
        for track in self.tracks:
            angle = track.angle if self.align else 0.0
            near = self.detector.detect_near(grey, scale, track.box, angle=angle)
            if not _overlaps(near, track.box):
                # the cascade near its smallest window misses some faces that it finds at the
                # whole-frame scan's resolution: look again there, in the region only
                near = self.detector.detect_near(grey, scale, track.box, fine=True, angle=angle)
            if not _overlaps(near, track.box):
                if self._match(grey, scale, track) is not None:
                    # still where the tracker has it, only turned, rolled or covered past what
                    # the cascade takes: a miss for this face (followed by its template until
                    # max_misses), not a ~20 ms whole-frame scan that would not see it either
                    continue
                # gone from where it was: the whole frame decides (as without regions)
                return self.detector.detect_weighted(grey, scale)
            for box, weight in near:
                # tracks close to each other see the same face: keep it once
                if all(_iou(box, other) < 0.5 for other, _ in found):
                    found.append((box, weight))
        if look_for_new:
            for box, weight in self.detector.detect_weighted(self._untracked(grey, scale), scale,
                                                             self.new_face_step):
                if all(_iou(box, t.box) < 0.25 for t in self.tracks) and \
                        all(_iou(box, other) < 0.25 for other, _ in found):
                    found.append((box, weight))
        return found

    def _untracked(self, grey: np.ndarray, scale: float, margin: float = 0.15) -> np.ndarray:
        """The grey frame with each tracked face (and ``margin`` of its width around it) made
        flat, for the scan for new faces: the cascade drops flat windows at its first stage,
        while windows on a face pass most of its stages (20-75 % of a whole-frame scan's time
        with one face tracked, the more the closer the face)."""
        grey = grey.copy()
        for track in self.tracks:
            x, y, w, h = track.box * scale
            grey[max(0, int(y - margin * h)):max(0, int(np.ceil(y + (1 + margin) * h))),
                 max(0, int(x - margin * w)):max(0, int(np.ceil(x + (1 + margin) * w)))] = 128
        return grey

    def _smooth(self, track: Track, measured: np.ndarray) -> None:
        old = track.box
        delta = measured - old
        size = max(old[2], 1.0)
        if np.abs(delta).max() < self.deadband * size:
            return  # sub-pixel jitter: keep the crop still
        # move faster when the face moves a lot (less lag), gently when it barely moves
        alpha = min(1.0, self.smooth + 0.5 * float(np.abs(delta[:2]).max()) / size)
        track.box = old + alpha * delta

    # A face template wider than this many grey pixels is matched shrunk to it: the match's
    # cost grows with the template's area times the search window's (a close-up's 116 px face:
    # 0.56 ms per match at full size); the corner is found to a fraction of a pixel (parabola)
    TEMPLATE_PX = 40

    def _template(self, grey: np.ndarray, box_small: np.ndarray):
        """(template, shrink factor) of a face box in grey pixels, or None when too small."""
        x, y, w, h = (int(round(v)) for v in box_small)
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(grey.shape[1], x + w), min(grey.shape[0], y + h)
        if x1 - x0 < 12 or y1 - y0 < 12:
            return None
        shrink = min(1.0, self.TEMPLATE_PX / (x1 - x0))
        if shrink == 1.0:
            return grey[y0:y1, x0:x1].copy(), shrink
        return cv2.resize(grey[y0:y1, x0:x1], (round((x1 - x0) * shrink),
                                                round((y1 - y0) * shrink)),
                          interpolation=cv2.INTER_AREA), shrink

    def _match(self, grey: np.ndarray, scale: float, track: Track):
        """Where the face's template is, near its last box: its top-left corner in frame
        pixels, or None when it is not found (no template, or a correlation below 0.5)."""
        if track.template is None:
            return None
        template, shrink = track.template
        th, tw = (round(v / shrink) for v in template.shape)
        x, y = track.raw[0] * scale, track.raw[1] * scale
        pad_x, pad_y = int(0.35 * tw) + 2, int(0.35 * th) + 2
        sx0, sy0 = max(0, int(x) - pad_x), max(0, int(y) - pad_y)
        sx1 = min(grey.shape[1], int(x) + tw + pad_x)
        sy1 = min(grey.shape[0], int(y) + th + pad_y)
        if sx1 - sx0 < tw or sy1 - sy0 < th:
            return None
        window = grey[sy0:sy1, sx0:sx1]
        fx = fy = 1.0
        if shrink < 1.0:
            size = (max(template.shape[1], round((sx1 - sx0) * shrink)),
                    max(template.shape[0], round((sy1 - sy0) * shrink)))
            fx, fy = size[0] / (sx1 - sx0), size[1] / (sy1 - sy0)
            window = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
        result = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
        _, score, _, loc = cv2.minMaxLoc(result)
        if score < 0.5:
            return None
        u, v = loc
        du = dv = 0.0
        if shrink < 1.0:  # a shrunk pixel is several grey pixels: place the peak between them
            du = _peak_offset(result[v, max(0, u - 1):u + 2], u)
            dv = _peak_offset(result[max(0, v - 1):v + 2, u], v)
        return (sx0 + (u + du) / fx) / scale, (sy0 + (v + dv) / fy) / scale

    def _follow(self, grey: np.ndarray, scale: float, track: Track) -> None:
        corner = self._match(grey, scale, track)
        if corner is None:
            return  # lost it: keep the cached box until the next detection
        new = track.raw.copy()
        new[0], new[1] = corner
        track.raw = new
        self._smooth(track, new)

    def _measure_roll(self, frame: np.ndarray, track: Track) -> None:
        if self.align and self.detector.kind == "haar":
            self._roll_towards(track, self.detector.roll(frame, track.raw))

    def _roll_towards(self, track: Track, angle: float | None) -> None:
        if angle is None or not self.align:
            return  # keep the last estimate
        if abs(angle - track.angle) > 1.0:  # dead-band against eye-detector jitter
            track.angle += 0.5 * (angle - track.angle)

    def update(self, frame: np.ndarray) -> list[tuple[np.ndarray, float, int]]:
        """Smoothed (face box, roll degrees, track id) for this frame (largest first)."""
        grey, scale = small_grey(frame, self.detector.max_side)
        detect_now = self.frame_index % self.every == 0
        self.frame_index += 1
        if not detect_now:
            measure = (self.frame_index % self.every == 2 or self.every == 2) and \
                self._detections % self.roll_every == 0
            for track in self.tracks:
                self._follow(grey, scale, track)
                if measure and track.misses == 0:
                    # the roll is measured on the frame after a detection: spreads the work
                    self._measure_roll(frame, track)
            return [(t.box.copy(), t.angle, t.ident) for t in self.tracks]
        weighted = self._detect(frame, grey, scale)
        weighted.sort(key=lambda entry: -entry[0][2] * entry[0][3])
        found = [np.array(entry[0], dtype=np.float64) for entry in weighted[:self.max_faces]]
        weights = [entry[1] for entry in weighted[:self.max_faces]]
        rolls = [entry[2] for entry in weighted[:self.max_faces]]
        unmatched = list(range(len(found)))
        for track in sorted(self.tracks, key=lambda t: -t.age):
            best, best_iou = None, 0.25
            for i in unmatched:
                overlap = _iou(track.box, found[i])
                if overlap > best_iou:
                    best, best_iou = i, overlap
            if best is None:
                track.misses += 1
                self._follow(grey, scale, track)
                continue
            unmatched.remove(best)
            track.raw = found[best]
            track.misses = 0
            track.age += 1
            self._smooth(track, found[best])
            self._roll_towards(track, rolls[best])
            track.template = self._template(grey, found[best] * scale)
        self.tracks = [t for t in self.tracks if t.misses <= self.max_misses]
        for i in unmatched:
            if len(self.tracks) >= self.max_faces:
                break
            if not self.detector.verify(frame, found[i], weights[i]):
                continue  # weak detections only confirm faces already tracked
            box = found[i]
            self.tracks.append(Track(box=box.copy(), raw=box.copy(),
                                     template=self._template(grey, box * scale),
                                     ident=self._next_id,
                                     angle=rolls[i] if self.align and rolls[i] is not None
                                     else 0.0))
            self._next_id += 1
        if self.every == 1 and self._detections % self.roll_every == 0:
            for track in self.tracks:
                if track.misses == 0:
                    self._measure_roll(frame, track)
        self.tracks.sort(key=lambda t: -t.box[2] * t.box[3])
        return [(t.box.copy(), t.angle, t.ident) for t in self.tracks]


def _overlaps(found, box) -> bool:
    """Whether any of the (box, weight, ...) detections is the face at ``box`` (IoU over 0.25)."""
    return any(_iou(entry[0], box) > 0.25 for entry in found)


def _peak_offset(values: np.ndarray, at: int) -> float:
    """Sub-pixel offset (-0.5..0.5) of a correlation peak from its three values around it
    (a parabola through them); 0 at the border."""
    if at == 0 or len(values) < 3:
        return 0.0
    left, mid, right = (float(v) for v in values[:3])
    curve = left - 2.0 * mid + right
    return 0.0 if curve >= 0 else float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5))


def square_for(box, framing: tuple[float, float], angle: float = 0.0) -> tuple:
    """The crop (x0, y0, side, angle) for a face box: side and vertical shift from the framing,
    turned by ``angle`` degrees about the face centre (the shift follows the head's roll)."""
    scale, shift = framing
    x, y, w, h = box
    side = scale * w
    theta = np.radians(angle)
    cx = x + w / 2.0 - np.sin(theta) * shift * w
    cy = y + h / 2.0 + np.cos(theta) * shift * w
    return cx - side / 2.0, cy - side / 2.0, side, float(angle)


# WFLW 98-point layout (the FAN's): the two eye contours and the mouth corners.
EYE_A, EYE_B, MOUTH_A, MOUTH_B = slice(60, 68), slice(68, 76), 76, 82
# Landmarks are trusted only when every heatmap used has at least this peak (the official mask
# post-processing drops responses below 0.1) and the geometry is face-like (see observe).
MIN_LANDMARK_PEAK = 0.2


def aligned_square(points: np.ndarray) -> tuple:
    """The CelebA-HQ / FFHQ alignment of a face from its 98 landmarks (frame pixels, pixel
    centres at integers): a square 2 * max(2 eye distances, 1.8 eye-to-mouth) wide, centred at
    the eye midpoint + 0.1 eye-to-mouth, its x axis along eye-to-eye minus the eye-to-mouth
    vector turned by 90 degrees. Returns (x0, y0, side, angle degrees) like square_for."""
    eye_a, eye_b = points[EYE_A, :2].mean(0), points[EYE_B, :2].mean(0)
    mouth = (points[MOUTH_A, :2] + points[MOUTH_B, :2]) / 2.0
    eye_mid = (eye_a + eye_b) / 2.0
    eye_to_eye, eye_to_mouth = eye_b - eye_a, mouth - eye_mid
    axis = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    axis = axis / max(float(np.hypot(*axis)), 1e-6)
    half = max(float(np.hypot(*eye_to_eye)) * 2.0, float(np.hypot(*eye_to_mouth)) * 1.8)
    centre = eye_mid + 0.1 * eye_to_mouth
    side = 2.0 * half
    angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
    # _matrix puts the square's centre at x0 + side / 2 - 0.5 (pixel-centre convention)
    return centre[0] - side / 2.0 + 0.5, centre[1] - side / 2.0 + 0.5, side, angle


def crop_points_to_frame(points: np.ndarray, square, size: int) -> np.ndarray:
    """(L, 2+) points in the pixels of a ``size`` crop of ``square`` -> frame pixels (L, 2)."""
    inverse = cv2.invertAffineTransform(_matrix(square, size))
    return points[:, :2] @ inverse[:, :2].T + inverse[:, 2]


def _square_from_relative(box, relative: np.ndarray) -> tuple:
    """A square kept relative to a face box (centre offset and side in box widths, angle)."""
    x, y, w, h = box
    side = relative[2] * w
    cx, cy = x + w / 2.0 + relative[0] * w, y + h / 2.0 + relative[1] * w
    return cx - side / 2.0, cy - side / 2.0, side, float(relative[3])


def _matrix(square, size: int, offset=(0.0, 0.0)) -> np.ndarray:
    """Affine map from frame pixel (x, y) (relative to ``offset``) to crop pixel: the square's
    centre to the crop's centre, scaled to ``size`` and turned by the square's angle."""
    x0, y0, side = square[:3]
    angle = square[3] if len(square) > 3 else 0.0
    s = size / side
    # pixel-centre convention: crop pixel u covers frame x = x0 + (u + 0.5) / s - 0.5
    centre = (x0 + side / 2.0 - 0.5, y0 + side / 2.0 - 0.5)
    m = cv2.getRotationMatrix2D(centre, angle, s)
    m[:, 2] += (size / 2.0 - 0.5) - np.array(centre)
    return _on_grid(m, (1.0, 1.0), offset)


def _on_grid(m: np.ndarray, step, origin) -> np.ndarray:
    """The affine map ``m`` taking, instead of its own pixels, the pixels of a grid laid over
    them: grid pixel (u, v) is pixel (origin + step * (u, v)) of ``m``'s input."""
    grid = m.copy()
    grid[:, :2] *= np.asarray(step, dtype=np.float64)
    grid[:, 2] += m[:, :2] @ np.asarray(origin, dtype=np.float64)
    return grid


def square_bounds(square, frame_shape) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) frame region that the (turned) square can touch, clipped."""
    x0, y0, side = square[:3]
    angle = np.radians(square[3] if len(square) > 3 else 0.0)
    half = 0.5 * side * (abs(np.cos(angle)) + abs(np.sin(angle)))
    cx, cy = x0 + side / 2.0, y0 + side / 2.0
    h, w = frame_shape[:2]
    return (max(0, int(np.floor(cx - half)) - 1), max(0, int(np.floor(cy - half)) - 1),
            min(w, int(np.ceil(cx + half)) + 1), min(h, int(np.ceil(cy + half)) + 1))


def extract_crops(frame: np.ndarray, squares, size: int) -> np.ndarray:
    """All faces of a frame as one uint8 batch (N, size, size, 3).

    A bilinear warp samples 2x2 pixels per crop pixel, so a face reduced by 2x or more would
    come out aliased (jagged edges, shimmering hair; warpAffine takes no INTER_AREA), unlike the
    training photos, downscaled with an antialiasing filter. Such a square's region is first
    averaged down by halves (2x2 means: INTER_AREA's fast path, 0.06 ms for 600x480) and the
    warp reduces the last 1.25-2.5x. Against a supersampled reference, on a sharp photo, for
    squares of 1.6-6.3x the crop: 39.0-48.6 dB (mean 43.7) instead of 30.0-48.6 (mean 39.0);
    halving down to 1-2x instead blurred twice near 1x (35 dB)."""
    out = np.empty((len(squares), size, size, 3), dtype=np.uint8)
    for i, square in enumerate(squares):
        source, m = _halved_region(frame, square, size)
        cv2.warpAffine(source, m, (size, size), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    return out


def _halved_region(frame: np.ndarray, square, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, affine from its pixels to crop pixels) for extracting ``square``: the frame
    itself, or the square's region reduced to k x k means, k = 2, 4, ... as long as the square
    stays at least 1.25x the crop's size (the region grown or cut to a multiple of k)."""
    m = _matrix(square, size)
    k = 1
    while square[2] / (2 * k) >= 1.25 * size:
        k *= 2
    x0, y0, x1, y1 = square_bounds(square, frame.shape)
    width = min(-(-(x1 - x0) // k) * k, (frame.shape[1] - x0) // k * k)
    height = min(-(-(y1 - y0) // k) * k, (frame.shape[0] - y0) // k * k)
    if k == 1 or width < k or height < k:
        return frame, m
    source = frame[y0:y0 + height, x0:x0 + width]
    for _ in range(k.bit_length() - 1):
        source = cv2.resize(source, (source.shape[1] // 2, source.shape[0] // 2),
                            interpolation=cv2.INTER_AREA)
    # averaged pixel u covers frame pixels x0 + k*u .. x0 + k*u + k - 1
    return source, _on_grid(m, (k, k), (x0 + (k - 1) / 2.0, y0 + (k - 1) / 2.0))


def feather_mask(size: int, margin: float = 0.08, softness: float = 0.05) -> np.ndarray:
    """float32 (size, size): 1 inside, falling smoothly to exactly 0 at the crop's border."""
    m = max(2, int(round(margin * size)))
    mask = np.zeros((size, size), np.float32)
    mask[m:size - m, m:size - m] = 1.0
    sigma = max(1.0, softness * size)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    edge = max(2, m // 3)
    mask[:edge, :] = 0
    mask[-edge:, :] = 0
    mask[:, :edge] = 0
    mask[:, -edge:] = 0
    return mask


class Paster:
    """Pastes translated crops back with a feathered mask, matching colour at the seam.

    Colour matching: mean / std per YCrCb channel of the translated crop are matched to the
    original crop over the mask's feather ring (where the seam is), and the correction fades from
    full at the ring to none in the face's centre, so the translation itself is kept. (YCrCb, a
    linear luma / chroma split: its conversions cost a tenth of Lab's.) The matched colours come
    from a per-channel lookup table and are faded in with one ``blendLinear``: 0.1-0.2 ms per
    face, a quarter to a half of the same arithmetic in float32 numpy (paid every frame).
    """

    def __init__(self, size: int, colour_match: bool = True):
        self.size = size
        self.colour_match = colour_match
        self.mask = feather_mask(size)
        # the feather ring, where the seam is: the colour statistics are taken there
        self.ring = ((self.mask > 0.02) & (self.mask < 0.98)).astype(np.uint8)
        self.has_ring = bool(self.ring.any())
        core = feather_mask(size, margin=0.3, softness=0.12)
        correction = np.clip(1.0 - core, 0.0, 1.0).astype(np.float32)
        self.correction_weights = (1.0 - correction, correction)  # (keep, matched)
        # the mask warped into the frame and its complement, per crop square: a still face (the
        # tracker's dead-band keeps its square exactly the same) reuses them
        self._alphas: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        # blend masks by feather size in crop pixels, each with its solid inset (_mask_for)
        self._masks: dict[tuple[int, float], tuple[np.ndarray, int]] = {}

    # The feather's margin and softness, 8 % and 5 % of the square, are capped in frame pixels
    # at what they are for a 350 px square: a close-up's square (2.2 face widths, larger than a
    # 640x480 frame) otherwise fades the original back in over a 160 px wide band of the face
    # and hair, and that band's per-pixel blend is most of the paste's time.
    FEATHER_CAP_PX = (28.0, 17.5)

    def _mask_for(self, side: float) -> tuple[np.ndarray, int]:
        """The blend mask for a square of ``side`` frame pixels, and its solid inset: crop
        pixels from each edge to where the mask is 1 (to within 1/500: a blend there gives the
        translated pixel), plus one for the bilinear warp's reach."""
        margin_px, softness_px = self.FEATHER_CAP_PX
        margin = max(2, int(round(min(0.08, margin_px / side) * self.size)))
        sigma = round(max(1.0, min(0.05, softness_px / side) * self.size), 1)
        kept = self._masks.get((margin, sigma))
        if kept is None:
            if len(self._masks) >= 32:
                self._masks.clear()
            mask = feather_mask(self.size, margin / self.size, sigma / self.size)
            solid = np.flatnonzero(mask[self.size // 2] >= 0.998)
            kept = self._masks[(margin, sigma)] = (mask, int(solid[0]) + 1 if len(solid)
                                                   else self.size)
        return kept

    def match_colour(self, original: np.ndarray, translated: np.ndarray) -> np.ndarray:
        if not self.has_ring:
            return translated
        ycc_o = cv2.cvtColor(original, cv2.COLOR_BGR2YCrCb)
        ycc_t = cv2.cvtColor(translated, cv2.COLOR_BGR2YCrCb)
        mu_o, sd_o = (v.ravel() for v in cv2.meanStdDev(ycc_o, mask=self.ring))
        mu_t, sd_t = (v.ravel() for v in cv2.meanStdDev(ycc_t, mask=self.ring))
        gain = np.clip((sd_o + 1.0) / (sd_t + 1.0), 0.5, 2.0)
        # matched(v) = (v - mu_t) * gain + mu_o per channel, as a table of the 256 levels
        table = np.clip(np.rint((_LEVELS - mu_t) * gain + mu_o), 0, 255).astype(np.uint8)
        matched = cv2.LUT(ycc_t, table[:, None, :])
        ycc = cv2.blendLinear(ycc_t, matched, *self.correction_weights)
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)

    def _alpha(self, mask: np.ndarray, m: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
        """The feather mask over a paste region of ``dsize`` (``m``: region pixel -> crop
        pixel). The mask is smooth (its feather is ~17 frame pixels wide at a typical size), so
        it is warped on a grid of half the region's resolution (``_warp_coarse``): 0.21 -> 0.09
        ms for a 350 px region. It then differs by 5e-4 on average, by up to 0.04 only where the
        mask steps from ~0.04 to 0 at its outer edge, which the resize softens (on an inverted
        crop: 61 dB against the full warp's paste, at most 9 levels, all on that step). Regions
        under twice the crop's size (where half a region pixel is more of the feather, and the
        full warp is cheap) are warped at full size."""
        if min(dsize) < 2 * self.size:
            return cv2.warpAffine(mask, m, dsize, flags=cv2.INTER_LINEAR |
                                  cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
        return _warp_coarse(mask, m, dsize, 2.0, cv2.BORDER_CONSTANT)

    def _patch(self, crop: np.ndarray, m: np.ndarray, dsize: tuple[int, int],
               side: float) -> np.ndarray:
        """The translated crop warped over the paste region. A close-up's crop is magnified 3x
        or more (a 250 px face: 5.4x, the region most of a 640x480 frame); there it is warped
        on a grid of twice the crop's resolution and resized up: 0.65 -> 0.32 ms, 46 dB from
        the full warp (looked at: the same picture)."""
        magnified = side / self.size
        if magnified < 3.0:
            return cv2.warpAffine(crop, m, dsize, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
        return _warp_coarse(crop, m, dsize, magnified / 2.0, cv2.BORDER_REPLICATE)

    def paste(self, frame: np.ndarray, squares, originals: np.ndarray,
              translated: np.ndarray) -> np.ndarray:
        """Blend ``translated`` crops into ``frame`` in place; returns the frame. Pixels
        outside the crop squares (and on their outer border) are left exactly as they were."""
        for i, square in enumerate(squares):
            rx0, ry0, rx1, ry1 = square_bounds(square, frame.shape)
            if rx1 <= rx0 or ry1 <= ry0:
                continue
            crop = translated[i]
            if self.colour_match:
                crop = self.match_colour(originals[i], crop)
            m = _matrix(square, self.size, offset=(rx0, ry0))
            dsize = (rx1 - rx0, ry1 - ry0)
            patch = self._patch(crop, m, dsize, square[2])
            mask, inset = self._mask_for(square[2])
            key = (*square, rx0, ry0, rx1, ry1)
            weights = self._alphas.get(key)
            if weights is None:
                alpha = self._alpha(mask, m, dsize)
                if len(self._alphas) >= 16:
                    self._alphas.clear()  # faces moved on; keep the cache small
                weights = self._alphas[key] = (1.0 - alpha, alpha)
            roi = frame[ry0:ry1, rx0:rx1]
            # the blend's division per pixel costs more than the warp: where the mask is 1 (the
            # middle of the square) the translated pixels are copied instead, and only the strips
            # around that rectangle are blended (a close-up's square covers most of the frame)
            ix0, iy0, ix1, iy1 = self._solid_rect(square, inset, rx0, ry0, dsize)
            for x0, y0, x1, y1 in ((0, 0, dsize[0], iy0), (0, iy1, dsize[0], dsize[1]),
                                   (0, iy0, ix0, iy1), (ix1, iy0, dsize[0], iy1)):
                if x1 > x0 and y1 > y0:
                    _blend_into(roi[y0:y1, x0:x1], patch[y0:y1, x0:x1],
                                weights[0][y0:y1, x0:x1], weights[1][y0:y1, x0:x1])
            roi[iy0:iy1, ix0:ix1] = patch[iy0:iy1, ix0:ix1]
        return frame

    def _solid_rect(self, square, inset: int, rx0: int, ry0: int,
                    dsize) -> tuple[int, int, int, int]:
        """The largest upright rectangle, in paste-region pixels, centred on the square, where
        the warped mask is 1: inside the square's solid middle turned by its angle. Empty
        (x0 == x1) when there is none."""
        x0, y0, side = square[:3]
        angle = np.radians(square[3] if len(square) > 3 else 0.0)
        solid = (self.size - 2 * inset) * side / self.size
        half = solid / (2.0 * (abs(np.cos(angle)) + abs(np.sin(angle))))
        if half < 1.0:
            return 0, 0, 0, 0
        cx, cy = x0 + side / 2.0 - 0.5 - rx0, y0 + side / 2.0 - 0.5 - ry0
        ix0, iy0 = max(0, int(np.ceil(cx - half))), max(0, int(np.ceil(cy - half)))
        ix1 = min(dsize[0], int(np.floor(cx + half)) + 1)
        iy1 = min(dsize[1], int(np.floor(cy + half)) + 1)
        if ix1 <= ix0 or iy1 <= iy0:
            return 0, 0, 0, 0
        return ix0, iy0, ix1, iy1


def _warp_coarse(src: np.ndarray, m: np.ndarray, dsize: tuple[int, int], step: float,
                 border: int) -> np.ndarray:
    """``warpAffine(src, m, dsize)`` (``m``: destination pixel -> source pixel) computed on a
    grid ``step`` destination pixels apart and resized up: cv2.resize's bilinear is separable,
    several times cheaper per pixel than a warp's mapping."""
    dw, dh = dsize
    cw, ch = max(2, round(dw / step)), max(2, round(dh / step))
    # grid pixel c is the destination's pixel (c + 0.5) * f - 0.5, the mapping cv2.resize uses
    fx, fy = dw / cw, dh / ch
    grid = _on_grid(m, (fx, fy), (0.5 * fx - 0.5, 0.5 * fy - 0.5))
    small = cv2.warpAffine(src, grid, (cw, ch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=border, borderValue=0)
    return cv2.resize(small, dsize, interpolation=cv2.INTER_LINEAR)


def _blend_into(dst: np.ndarray, patch: np.ndarray, keep: np.ndarray, alpha: np.ndarray) -> None:
    """dst = keep * dst + alpha * patch in one C++ pass; where alpha is 0 the pixel comes back
    exactly."""
    blended = cv2.blendLinear(dst, patch, keep, alpha, dst=dst)
    if blended is not dst and not np.shares_memory(blended, dst):
        dst[...] = blended  # OpenCV could not write into the frame's view


def make_detector(name: str):
    """A face detector by name: ``blazeface`` (MediaPipe's models through OpenVINO; installed by
    ``stargan-rt pull face-detector``) or ``haar`` (OpenCV's cascades, in the opencv wheel)."""
    if name == "haar":
        return HaarDetector()
    if name == "blazeface":
        from stargan_rt.stream.blazeface import BlazeFaceDetector

        return BlazeFaceDetector()
    raise UserError(f"unknown face detector {name!r}; expected one of {', '.join(DETECTORS)}")


class FaceStage:
    """Detection + framing + crop extraction, and the matching paste-back."""

    # A face's landmark framing is used for this many frames after its last good landmarks.
    LANDMARK_FRAMES = 60

    def __init__(self, size: int, arch: str = "v1", config: dict | None = None, every: int = 3,
                 max_faces: int = 8, colour_match: bool = True, no_face: bool = False,
                 align: bool = True, detector: str = DEFAULT_DETECTOR):
        self.size = size
        self.no_face = no_face
        self.align = align
        self.framing = framing_for(arch, config)
        self.detector_name = None if no_face else detector
        self.tracker = None if no_face else FaceTracker(make_detector(detector), every=every,
                                                        max_faces=max_faces, align=align)
        self.paster = Paster(size, colour_match)
        # track id -> (landmark framing relative to the tracked box, frame index it came from);
        # written by observe (inference thread), read by crops (detection thread)
        self._landmark_framing: dict[int, tuple[np.ndarray, int]] = {}
        self._lock = threading.Lock()
        self.landmark_stats = {"observed": 0, "rejected": 0, "aligned_crops": 0}

    def crops(self, frame: np.ndarray) -> tuple[list[FaceCrop], np.ndarray]:
        if self.no_face:
            whole = cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)
            h, w = frame.shape[:2]
            return [FaceCrop(box=(0.0, 0.0, float(w), float(h)), square=(0.0, 0.0, 1.0, 0.0))], \
                whole[None]
        tracked = self.tracker.update(frame)
        now = self.tracker.frame_index
        faces = []
        with self._lock:
            live = {ident for _, _, ident in tracked}
            for ident in [k for k in self._landmark_framing if k not in live]:
                del self._landmark_framing[ident]  # that face is gone
            for box, angle, ident in tracked:
                kept = self._landmark_framing.get(ident)
                if kept is not None and now - kept[1] <= self.LANDMARK_FRAMES:
                    square = _square_from_relative(box, kept[0])
                    self.landmark_stats["aligned_crops"] += 1
                else:
                    square = square_for(box, self.framing, angle)
                faces.append(FaceCrop(box=tuple(float(v) for v in box), square=square,
                                      track=ident))
        return faces, extract_crops(frame, [f.square for f in faces], self.size)

    def observe(self, faces: list[FaceCrop], landmarks: np.ndarray | None) -> None:
        """Landmarks (N, 98, 3: x, y in crop pixels, peak) that the FAN found on these faces'
        crops: each face's next crops follow their aligned square. Implausible landmarks (weak
        heatmaps, eyes too close or too far for the face box, a steep roll) are counted and
        ignored, so such a face keeps its detector framing."""
        if landmarks is None or self.no_face or not self.align:
            return
        for face, points in zip(faces, np.asarray(landmarks, dtype=np.float64)):
            self.landmark_stats["observed"] += 1
            relative = self._relative_framing(face, points)
            if relative is None:
                self.landmark_stats["rejected"] += 1
                continue
            with self._lock:
                kept = self._landmark_framing.get(face.track)
                if kept is not None:
                    old = kept[0]
                    delta = relative - old
                    if np.abs(delta[:3]).max() < 0.01 and abs(delta[3]) < 0.5:
                        relative = old  # dead-band: a still face keeps a still crop
                    else:
                        relative = old + 0.5 * delta
                self._landmark_framing[face.track] = (relative, self.tracker.frame_index)

    def _relative_framing(self, face: FaceCrop, points: np.ndarray) -> np.ndarray | None:
        used = np.r_[np.arange(60, 76), MOUTH_A, MOUTH_B]
        if points.shape != (98, 3) or not np.isfinite(points).all() or \
                points[used, 2].min() < MIN_LANDMARK_PEAK:
            return None
        frame_points = crop_points_to_frame(points, face.square, self.size)
        x0, y0, side, angle = aligned_square(frame_points)
        bx, by, bw, bh = face.box
        eyes = np.hypot(*(frame_points[EYE_B].mean(0) - frame_points[EYE_A].mean(0)))
        if not (0.2 * bw < eyes < 0.9 * bw) or abs(angle) > 40.0 or not 1.0 < side / bw < 4.0:
            return None
        cx, cy = x0 + side / 2.0, y0 + side / 2.0
        return np.array([(cx - (bx + bw / 2.0)) / bw, (cy - (by + bh / 2.0)) / bw, side / bw,
                         angle])

    def paste(self, frame: np.ndarray, faces: list[FaceCrop], originals: np.ndarray,
              translated: np.ndarray) -> np.ndarray:
        if self.no_face:
            h, w = frame.shape[:2]
            interp = cv2.INTER_LINEAR if max(h, w) > self.size else cv2.INTER_AREA
            return cv2.resize(translated[0], (w, h), interpolation=interp)
        if not faces:
            return frame
        return self.paster.paste(frame, [f.square for f in faces], originals, translated)
