"""A synthetic face data set with visibly rendered, learnable attributes (numpy + OpenCV only).

Every face is drawn from scratch: head with skin tone and shading, ears, neck and clothes, hair
(black / blond / brown / gray, short or long, with or without bangs), eyes with sockets, brows,
nose, a mouth that is either open and smiling (curved, teeth) or closed and neutral, optional
eyeglasses (dark frames, tinted lenses, bridge, temples); pose (offset, scale, roll, slight yaw),
background (two-colour gradient plus low-frequency noise) and a lighting gradient vary.

Framing follows the CelebA crop the StarGAN v1 loader uses (CenterCrop(178) of the aligned photos:
eyes at ~0.51 of the height, mouth at ~0.74, eye distance ~0.22 of the side), so models trained on
it see faces framed like the runtime's face crops.

Each image is a pure function of (seed, index): a run is deterministic and any image can be
re-rendered alone. Faces are drawn at 128 px or more (anti-aliased masks) and area-downsampled.

Layouts:
- ``celeba``: ``OUT/images/000001.jpg ...`` and ``OUT/list_attr_celeba.txt`` (count line, the
  40 CelebA attribute names in the official order, then ``filename`` and 40 values of 1 / -1).
  The attribute file is written last (temp file + rename): without it the set is incomplete.
- ``folders``: ``OUT/train/<domain>/*.png`` and ``OUT/val/<domain>/*.png``; the domains are one
  exclusive group (hair colours, neutral/smiling, no_glasses/glasses, female/male); ``OUT/
  domains.txt`` is written last and marks the set complete.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
assert len(CELEBA_ATTRIBUTES) == 40

# Attributes this generator renders (the rest of the 40 columns are always -1).
RENDERED_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses",
    "Gray_Hair", "Male", "Mouth_Slightly_Open", "No_Beard", "Pale_Skin", "Smiling",
    "Wearing_Lipstick", "Young",
)

HAIR_DOMAINS = ("black_hair", "blond_hair", "brown_hair", "gray_hair")
# What ``sample_face(force=...)`` can fix: hair colour name, or True/False for the others.
FORCE_KEYS = ("hair", "smile", "glasses", "male", "young")
# CelebA attribute -> the face property it renders (hair colours are one exclusive property).
ATTRIBUTE_FORCE = {
    "Black_Hair": ("hair", "black"), "Blond_Hair": ("hair", "blond"),
    "Brown_Hair": ("hair", "brown"), "Gray_Hair": ("hair", "gray"),
    "Smiling": ("smile", True), "Eyeglasses": ("glasses", True), "Male": ("male", True),
    "Young": ("young", True),
}
# Folder-layout domains: name -> (group, value). Domains of one run must share a group.
FOLDER_DOMAINS = {
    "black_hair": ("hair", "black"), "blond_hair": ("hair", "blond"),
    "brown_hair": ("hair", "brown"), "gray_hair": ("hair", "gray"),
    "neutral": ("smile", False), "smiling": ("smile", True),
    "no_glasses": ("glasses", False), "glasses": ("glasses", True),
    "female": ("male", False), "male": ("male", True),
}
DEFAULT_FOLDER_DOMAINS = ("black_hair", "blond_hair", "brown_hair")
DEFAULT_CELEBA_HAIR = ("black_hair", "blond_hair", "brown_hair")
LAYOUTS = ("celeba", "folders")

# How these faces are framed, as the runtime's framing options (stargan_rt/stream/faces.py: crop
# side = crop_scale * face-box width, crop centre = box centre + crop_shift * box width in y),
# measured with the runtime's own face stage (stream.faces.measure_framing: OpenCV's frontal Haar
# cascade, eye levelling) on 40 faces; OpenCV's cascade alone, on 300 faces at 128 and 256 px,
# gives 1.54 / -0.10. A bundle trained on this data carries these in its manifest config so the
# live crops are framed like the training images.
HAAR_FRAMING = {"crop_scale": 1.48, "crop_shift": -0.12}
ATTR_FILE = "list_attr_celeba.txt"
DOMAINS_FILE = "domains.txt"

# Hair base colours (RGB, 0..1) and how far each sample's brightness may wander.
HAIR_RGB = {
    "black": ((0.07, 0.06, 0.06), 0.15),
    "blond": ((0.96, 0.83, 0.46), 0.06),
    "brown": ((0.46, 0.26, 0.12), 0.12),
    "gray": ((0.72, 0.72, 0.72), 0.1),
}
# Skin tones (RGB) from light to dark; a sample interpolates between neighbours.
SKIN_RGB = np.array([
    (0.98, 0.87, 0.78), (0.95, 0.80, 0.68), (0.87, 0.68, 0.54), (0.76, 0.56, 0.42),
    (0.60, 0.42, 0.30), (0.42, 0.28, 0.19),
], dtype=np.float32)


@dataclass
class Face:
    """Everything random about one face. ``attributes`` maps CelebA names to True/False."""
    hair: str
    smiling: bool
    glasses: bool
    male: bool
    young: bool
    bangs: bool
    lipstick: bool
    stubble: bool
    skin_t: float
    rng_state: dict = field(repr=False, default_factory=dict)

    @property
    def attributes(self) -> dict[str, bool]:
        return {
            "5_o_Clock_Shadow": self.stubble, "Bangs": self.bangs,
            "Black_Hair": self.hair == "black", "Blond_Hair": self.hair == "blond",
            "Brown_Hair": self.hair == "brown", "Gray_Hair": self.hair == "gray",
            "Eyeglasses": self.glasses, "Male": self.male,
            "Mouth_Slightly_Open": self.smiling, "No_Beard": True,
            "Pale_Skin": self.skin_t < 0.35, "Smiling": self.smiling,
            "Wearing_Lipstick": self.lipstick, "Young": self.young,
        }

    def attribute_vector(self) -> list[int]:
        attrs = self.attributes
        return [1 if attrs.get(name, False) else -1 for name in CELEBA_ATTRIBUTES]


def sample_face(rng: np.random.Generator, hair_choices=DEFAULT_CELEBA_HAIR,
                force: dict | None = None) -> Face:
    """Draw the attributes of one face; ``force`` fixes some (keys hair/smile/glasses/male)."""
    force = force or {}
    unknown = set(force) - set(FORCE_KEYS)
    if unknown:
        raise ValueError(f"unknown face attribute(s) to force: {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(FORCE_KEYS)}")
    # Draw every value even when forced, so a forced face differs only in what was forced
    # (the counterfactuals of `stargan-rt eval` rely on this).
    hair = str(rng.choice([h.split("_")[0] for h in hair_choices]))
    male, smiling, glasses = (bool(v < 0.5) for v in rng.random(3))
    age, bangs_u, lipstick_u, stubble_u = rng.random(4)
    skin_t = float(rng.random())
    hair = force.get("hair") or hair
    male = bool(force.get("male", male))
    smiling = bool(force.get("smile", smiling))
    glasses = bool(force.get("glasses", glasses))
    young = bool(force.get("young", age < (0.25 if hair == "gray" else 0.85)))
    bangs = bool(bangs_u < (0.2 if male else 0.4))
    lipstick = (not male) and bool(lipstick_u < 0.6)
    stubble = male and bool(stubble_u < 0.3)
    return Face(hair, smiling, glasses, male, young, bangs, lipstick, stubble, skin_t)


# ---------------------------------------------------------------------------------------------
# Rendering helpers. The canvas is float32 RGB in [0, 1]; shapes are drawn as anti-aliased
# uint8 masks with cv2 (sub-pixel coordinates via ``shift``) and blended in.
_SHIFT = 4
_ONE = 1 << _SHIFT


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _ax(a: float, b: float) -> tuple[int, int]:
    return max(1, int(round(a * _ONE))), max(1, int(round(b * _ONE)))


class Canvas:
    def __init__(self, size: int):
        self.size = size
        self.img = np.zeros((size, size, 3), np.float32)
        self._mask = np.zeros((size, size), np.uint8)

    def blank(self) -> np.ndarray:
        self._mask[:] = 0
        return self._mask

    def blend(self, mask: np.ndarray, colour, alpha: float = 1.0) -> None:
        """img = img * (1 - a m) + colour * a m over the mask's bounding box only."""
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if ys.size == 0:
            return
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        m = mask[y0:y1, x0:x1, None].astype(np.float32) * (alpha / 255.0)
        region = self.img[y0:y1, x0:x1]
        colour = np.asarray(colour, np.float32)
        if colour.ndim == 3:
            colour = colour[y0:y1, x0:x1]
        region *= 1.0 - m
        region += m * colour

    def multiply(self, mask: np.ndarray, factor: float) -> None:
        """Darken (factor < 1) or brighten where the (soft) mask is set."""
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if ys.size == 0:
            return
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        m = mask[y0:y1, x0:x1, None].astype(np.float32) / 255.0
        self.img[y0:y1, x0:x1] *= 1.0 + (factor - 1.0) * m

    def shade(self, mask: np.ndarray, sigma: float, factor: float) -> None:
        """``multiply`` by a Gaussian-blurred mask, blurring only around the mask's box."""
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if ys.size == 0:
            return
        pad = int(math.ceil(3 * sigma)) + 1
        y0, y1 = max(0, ys[0] - pad), min(self.size, ys[-1] + 1 + pad)
        x0, x1 = max(0, xs[0] - pad), min(self.size, xs[-1] + 1 + pad)
        soft = cv2.GaussianBlur(mask[y0:y1, x0:x1], (0, 0), sigma)
        m = soft[..., None].astype(np.float32) / 255.0
        self.img[y0:y1, x0:x1] *= 1.0 + (factor - 1.0) * m

    # shapes -> masks (each returns a fresh copy so masks can be combined)
    def ellipse(self, cx, cy, ax, ay, angle=0.0, start=0, end=360, thickness=-1) -> np.ndarray:
        m = self.blank()
        cv2.ellipse(m, _pt(cx, cy), _ax(ax, ay), angle, start, end, 255,
                    thickness if thickness < 0 else max(1, int(round(thickness))),
                    cv2.LINE_AA, _SHIFT)
        return m.copy()

    def poly(self, points, closed=True, thickness=-1) -> np.ndarray:
        m = self.blank()
        pts = np.array([_pt(x, y) for x, y in points], np.int32)
        if thickness < 0:
            cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(m, [pts], closed, 255, max(1, int(round(thickness))), cv2.LINE_AA,
                          _SHIFT)
        return m.copy()

    def line(self, x0, y0, x1, y1, thickness) -> np.ndarray:
        m = self.blank()
        cv2.line(m, _pt(x0, y0), _pt(x1, y1), 255, max(1, int(round(thickness))), cv2.LINE_AA,
                 _SHIFT)
        return m.copy()


def _curve(x0, x1, y_mid, sag, n=12):
    """Points of a parabola from (x0, .) to (x1, .): y = y_mid + sag * (1 - t^2), t in [-1, 1]."""
    t = np.linspace(-1.0, 1.0, n)
    xs = x0 + (x1 - x0) * (t + 1) / 2
    ys = y_mid + sag * (1 - t * t)
    return list(zip(xs.tolist(), ys.tolist()))


def _jitter(rng, base, spread):
    return np.clip(np.asarray(base, np.float32) + rng.normal(0, spread, 3).astype(np.float32),
                   0.0, 1.0)


HIGHLIGHT, SKIN_LIGHT_FRAMES = 0.3, 0.6
HEAD_HH, HEAD_DY, JAW_TAPER, HAIRLINE, BANGS_LINE = 46.0, 4.0, 0.2, -28.0, -19.0


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) pixel coordinates / size, cached per size (read-only)."""
    if size not in _GRIDS:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        yy.setflags(write=False)
        xx.setflags(write=False)
        _GRIDS[size] = (yy, xx)
    return _GRIDS[size]


def render_face(face: Face, rng: np.random.Generator, size: int,
                subtlety: float = 0.0) -> np.ndarray:
    """Draw one face; returns uint8 BGR (size, size, 3). ``subtlety`` 0..1 shrinks the smile and
    thins the glasses (0: bold, easy to learn; 1: small features, closer to real photos)."""
    subtle = float(np.clip(subtlety, 0.0, 1.0))
    # The mouth and the glasses draw from their own streams, so toggling either leaves the
    # rest of the face (pose, lighting, noise) exactly as it was.
    mouth_rng, glasses_rng = (np.random.default_rng(int(v)) for v in rng.integers(0, 2**63, 2))
    R = max(size, 128)            # drawing resolution; area-downsampled to ``size``
    s = R / 128.0                 # geometry below is written for a 128 px canvas
    cv = Canvas(R)
    img = cv.img
    yy, xx = _grid(R)

    # -- background: two-colour gradient + low-frequency blotches --------------------------
    c1, c2 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    if rng.random() < 0.3:        # sometimes a muted, near-grey wall
        grey = rng.uniform(0.3, 0.9)
        c1 = 0.7 * grey + 0.3 * c1
        c2 = 0.7 * grey + 0.3 * c2
    theta = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta), 0, 1)
    img[:] = c1 * (1 - t[..., None]) + c2 * t[..., None]
    blotch = cv2.resize(rng.normal(0, 1, (4, 4, 3)).astype(np.float32), (R, R),
                        interpolation=cv2.INTER_CUBIC)
    img += 0.06 * blotch

    # -- pose --------------------------------------------------------------------------------
    scale = rng.uniform(0.88, 1.1) * s
    cx = R / 2 + rng.uniform(-6, 6) * s
    cy = R / 2 + 6 * s + rng.uniform(-5, 5) * s          # face centre, slightly low (CelebA)
    yaw = rng.uniform(-1, 1)                                # -1..1: features shift sideways
    roll = rng.uniform(-10, 10)                             # degrees, applied at the end
    hw, hh = 31 * scale * (1.05 if face.male else 1.0), HEAD_HH * scale   # head half-axes
    hy = cy + HEAD_DY * scale                              # head centre (eyes sit above it)
    fx = lambda dx: cx + dx * scale + yaw * 5 * scale     # feature x on the face plane
    fy = lambda dy: cy + dy * scale

    # -- colours -------------------------------------------------------------------------------
    k = face.skin_t * (len(SKIN_RGB) - 1)
    i0 = min(int(k), len(SKIN_RGB) - 2)
    skin = SKIN_RGB[i0] * (1 - (k - i0)) + SKIN_RGB[i0 + 1] * (k - i0)
    skin = _jitter(rng, skin, 0.02)
    base, spread = HAIR_RGB[face.hair]
    # vary brightness, keep the hue (per-channel noise would turn brown olive)
    hair = _jitter(rng, np.asarray(base, np.float32) * rng.uniform(1 - 2 * spread, 1 + spread),
                   0.012)
    if face.hair == "gray":
        hair[:] = hair.mean()
    shirt = rng.random(3).astype(np.float32)
    dark = np.array([0.05, 0.04, 0.04], np.float32)

    # -- hair behind the head (long hair reaches the shoulders) ------------------------------
    long_hair = bool(rng.random() < 0.85) and not face.male
    if long_hair:
        back = cv.ellipse(cx, cy + 8 * scale, hw * 1.3, hh * 1.25)
        cv.blend(back, hair * 0.85)
    # -- neck and shoulders -------------------------------------------------------------------
    neck = cv.poly([(cx - 13 * scale, cy + 20 * scale), (cx + 13 * scale, cy + 20 * scale),
                    (cx + 15 * scale, R + 2), (cx - 15 * scale, R + 2)])
    cv.blend(neck, skin * 0.8)
    shoulders = cv.ellipse(cx, cy + 78 * scale, 62 * scale, 30 * scale)
    cv.blend(shoulders, shirt)
    if long_hair:                  # strands falling over the shoulders, in front
        for side in (-1, 1):
            strand = cv.ellipse(cx + side * hw * 0.98, cy + 26 * scale, 9 * scale, 30 * scale)
            cv.blend(strand, hair * 0.9)

    # -- ears and head ----------------------------------------------------------------------------
    for side in (-1, 1):
        ear = cv.ellipse(cx + side * hw * 0.97 + yaw * 2 * scale, fy(2), 5.5 * scale, 9 * scale)
        cv.blend(ear, skin * 0.92)
    angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    taper = 1.0 - JAW_TAPER * np.clip(np.sin(angles), 0, 1) ** 2    # narrower toward the chin
    head = cv.poly(list(zip((cx + hw * np.cos(angles) * taper).tolist(),
                            (hy + hh * np.sin(angles)).tolist())))
    # shading: darker toward the rim of the head, light from a random side
    r2 = ((xx * R - cx) / hw) ** 2 + ((yy * R - hy) / hh) ** 2
    light = rng.uniform(-0.25, 0.25)
    shade = (1.0 - 0.28 * np.clip(r2, 0, 1) ** 2 + light * (xx * R - cx) / hw * 0.4)
    cv.blend(head, skin[None, None, :] * shade[..., None])
    # cheek / jaw shadow under the chin
    chin = cv.ellipse(cx, hy + hh * 0.98, hw * 0.55, 5 * scale)
    cv.shade(chin, 3 * s, 0.8)

    # -- hair on top of the head -----------------------------------------------------------------
    cap_mask = cv.ellipse(cx, hy - 4 * scale, hw * 1.1, hh * 1.08)
    hairline = fy(HAIRLINE if face.male else HAIRLINE + 2)
    if face.bangs:
        hairline = fy(BANGS_LINE)
    # hair lies above a hairline that curves down the temples (further for long hair)
    dx = (xx * R - cx - yaw * 3 * scale) / hw
    drop = (10.0 if face.bangs else 16.0 if long_hair else 9.0) * scale
    line_y = hairline + np.minimum(dx * dx, 1.2) * drop
    above = np.clip((line_y - yy * R) / s + 0.5, 0.0, 1.0)
    cap = (cap_mask.astype(np.float32) / 255.0) * above
    strands = 1.0 + 0.08 * np.sin(xx * R / s * rng.uniform(0.9, 1.4) + 3 * np.sin(yy * 9))
    hair_shade = (strands * (1.0 - 0.12 * np.clip((yy * R - (hy - hh)) / hh, 0, 1)))[..., None]
    cv.blend((cap * 255).astype(np.uint8), np.clip(hair[None, None] * hair_shade, 0, 1))

    # -- eyes, sockets, brows -------------------------------------------------------------------
    eye_dx, eye_y = 14 * rng.uniform(0.95, 1.05), -6 + rng.uniform(-1.5, 1.5)
    eye_w, eye_h = 7.0, 3.4
    iris = _jitter(rng, [(0.35, 0.22, 0.12), (0.25, 0.4, 0.6), (0.3, 0.45, 0.3)][rng.integers(3)],
                   0.05)
    brow_col = np.clip(hair * 0.45 + dark * 0.55, 0, 1) if face.hair != "black" else hair
    for side in (-1, 1):
        ex, ey = fx(side * eye_dx) + side * yaw * -1.0 * scale, fy(eye_y)
        squash = 1.0 - 0.15 * max(0.0, side * -yaw)        # far eye a little narrower
        socket = cv.ellipse(ex, ey - 1 * scale, 9.5 * scale * squash, 6.5 * scale)
        cv.shade(socket, 2.5 * s, 0.55)
        sclera = cv.ellipse(ex, ey, eye_w * scale * squash, eye_h * scale)
        cv.blend(sclera, (0.82, 0.8, 0.78))
        cv.blend(cv.ellipse(ex + yaw * 1.5 * scale, ey, 3.3 * scale, 3.3 * scale) & sclera, iris * 0.7)
        cv.blend(cv.ellipse(ex + yaw * 1.5 * scale, ey, 1.3 * scale, 1.3 * scale) & sclera, dark)
        lid = cv.ellipse(ex, ey, eye_w * scale * squash, eye_h * scale, 0, 180, 360,
                         (1.6 if face.male else 2.2) * s)
        cv.blend(lid, dark)
        by = ey - (7.5 if not face.smiling else 8.5) * scale
        bw = (3.8 if face.male else 3.0) * s
        brow = cv.poly(_curve(ex - 8 * scale, ex + 8 * scale, by, -2.2 * scale, 8),
                       closed=False, thickness=bw)
        cv.blend(brow, brow_col, 0.95)
        if not face.young:
            cv.blend(cv.ellipse(ex, ey + 3 * scale, 5 * scale, 2 * scale, 0, 20, 160, 1 * s),
                     skin * 0.6, 0.7)

    # -- nose ------------------------------------------------------------------------------------
    nx = fx(0) + yaw * 2.5 * scale
    ridge = cv.line(nx + 2 * scale, fy(-2), nx + 3 * scale, fy(9), 2.2 * s)
    cv.shade(ridge, 1.5 * s, 0.8)
    tip = cv.ellipse(nx, fy(11), 4.5 * scale, 3 * scale)
    cv.shade(tip, 1.5 * s, 1.08)
    for side in (-1, 1):
        cv.blend(cv.ellipse(nx + side * 2.6 * scale, fy(12.5), 1.6 * scale, 1.0 * scale),
                 skin * 0.35, 0.9)
    # highlights: forehead, nose bridge, cheekbones (the light/dark pattern of a lit face)
    glow = HIGHLIGHT * (1.0 + 0.8 * face.skin_t)      # darker skin shows stronger highlights
    cv.shade(cv.ellipse(fx(0), fy(-20), 13 * scale, 6 * scale), 4 * s, 1 + glow)
    cv.shade(cv.line(nx - 1 * scale, fy(-3), nx - 0.5 * scale, fy(8), 2.5 * s), 1.5 * s,
             1 + glow)
    for side in (-1, 1):
        cv.shade(cv.ellipse(fx(side * 14), fy(5), 6 * scale, 3.5 * scale), 2.5 * s, 1 + glow * 0.8)

    # -- mouth -----------------------------------------------------------------------------------
    lip = (_jitter(mouth_rng, (0.72, 0.18, 0.22), 0.05) if face.lipstick
           else np.clip(skin * np.array([0.82, 0.6, 0.6], np.float32), 0, 1))
    mx, my = fx(0) + yaw * 2 * scale, fy(24)
    if face.smiling:
        half = mouth_rng.uniform(12.5, 14.5) * scale * (1 - 0.3 * subtle)
        top_y = my - 2.0 * scale
        upper = _curve(mx - half, mx + half, top_y, 2.2 * scale, 14)          # gentle U
        sag = mouth_rng.uniform(10.5, 12.5) * scale * (1 - 0.55 * subtle)
        lower = _curve(mx + half, mx - half, top_y, sag, 14)
        # corners pulled up
        corner_lift = 2.5 * scale * (1 - 0.4 * subtle)
        upper[0] = (upper[0][0], upper[0][1] - corner_lift)
        upper[-1] = (upper[-1][0], upper[-1][1] - corner_lift)
        lower[0] = (lower[0][0], lower[0][1] - corner_lift)
        lower[-1] = (lower[-1][0], lower[-1][1] - corner_lift)
        outline = upper + lower
        mouth = cv.poly(outline)
        cv.blend(mouth, (0.38, 0.06, 0.08))
        teeth_band = cv.ellipse(mx, top_y + 1.5 * scale, half * 0.9, 5.5 * scale * (1 - 0.5 * subtle))
        cv.blend(mouth & teeth_band, (0.97, 0.96, 0.92))
        cv.blend(cv.poly(outline, closed=True, thickness=2.2 * s), lip)
        for side in (-1, 1):   # smile lines and raised cheeks
            crease = cv.poly(_curve(mx + side * (half - 1 * scale), mx + side * (half + 5 * scale),
                                    my - 7 * scale, 1.5 * scale, 6), closed=False,
                             thickness=1.3 * s)
            cv.blend(crease, skin * 0.6, 0.8)
            cheek = cv.ellipse(fx(side * 15), fy(10), 7 * scale, 5 * scale)
            cv.shade(cheek, 3 * s, 1.07)
    else:
        half = mouth_rng.uniform(7.5, 9.0) * scale
        upper = cv.poly(_curve(mx - half, mx + half, my, -1.8 * scale, 10)
                        + _curve(mx + half, mx - half, my, 0.4 * scale, 10))
        lower = cv.poly(_curve(mx - half, mx + half, my, 0.0, 10)
                        + _curve(mx + half, mx - half, my, 2.8 * scale, 10))
        cv.blend(upper, lip * 0.9)
        cv.blend(lower, lip)
        cv.blend(cv.line(mx - half, my, mx + half, my, 1.3 * s), (0.3, 0.12, 0.12), 0.9)
    if face.stubble:
        jaw = cv.ellipse(cx, fy(24), hw * 0.8, 16 * scale) & head
        cv.shade(jaw, 2 * s, 0.82)

    # -- eyeglasses -------------------------------------------------------------------------------
    if face.glasses:
        # frames contrast with the skin: dark on light skin, light metal / red on dark skin
        palette = ([(0.04, 0.04, 0.04), (0.2, 0.1, 0.05), (0.1, 0.1, 0.25)] if face.skin_t < SKIN_LIGHT_FRAMES
                   else [(0.85, 0.85, 0.88), (0.9, 0.75, 0.35), (0.75, 0.12, 0.12)])
        frame = _jitter(glasses_rng, palette[glasses_rng.integers(3)], 0.02)
        tint = _jitter(glasses_rng, (0.75, 0.85, 0.95), 0.05)
        round_lens = glasses_rng.random() < 0.4
        thick = glasses_rng.uniform(3.0, 4.0) * s * (1 - 0.6 * subtle)
        thin = glasses_rng.uniform(1.2, 1.6) * s * (1 - 0.35 * subtle)
        lw, lh = 10.5 * scale, 8.0 * scale
        centres = []
        for side in (-1, 1):
            ex, ey = fx(side * eye_dx) + side * yaw * -1.0 * scale, fy(eye_y + 0.5)
            centres.append((ex, ey))
            squash = 1.0 - 0.15 * max(0.0, side * -yaw)
            x0, x1 = ex - lw * squash, ex + lw * squash
            y0, y1 = ey - lh, ey + lh
            if round_lens:
                pts = _curve(x0, x1, ey - lh * 0.2, -lh * 0.8, 12) + \
                    _curve(x1, x0, ey - lh * 0.2, lh * 1.2, 12)
            else:
                pts = [(x0, y0), (x1, y0), (x1, y1 - 2 * scale), (x1 - 3 * scale, y1),
                       (x0 + 3 * scale, y1), (x0, y1 - 2 * scale)]
            lens = cv.poly(pts)
            rim = cv.poly(pts, thickness=thin)
            # browline frame: a heavy top bar, a thin rim below (keeps the cheeks clear)
            top = cv.poly([(x0 - 0.5 * scale, y0 - thick * 0.3), (x1 + 0.5 * scale, y0 - thick * 0.3),
                           (x1, y0 + thick * 0.9), (x0, y0 + thick * 0.9)])
            if subtle < 0.5:           # subtle glasses: a thin full rim only
                rim = np.maximum(rim, top)
            cv.blend(lens, tint, 0.15)
            glint = cv.line(ex - lw * 0.5, ey - lh * 0.2, ex - lw * 0.1, ey - lh * 0.6, 1.2 * s)
            cv.blend(glint, (1, 1, 1), 0.5)
            cv.blend(rim, frame)
            # temple arm toward the ear
            arm_x = cx + side * hw * 0.98
            cv.blend(cv.line(ex + side * lw * squash, ey - lh * 0.6, arm_x, ey - lh * 0.3,
                             thick * 0.9), frame)
        (lx, ly), (rx, ry) = centres
        bridge = cv.poly(_curve(lx + lw * 0.9, rx - lw * 0.9, (ly + ry) / 2 - lh * 0.45,
                                -1.5 * scale, 6), closed=False, thickness=thick)
        cv.blend(bridge, frame)

    # -- lighting, blur, noise, roll, downsample ------------------------------------------------
    lx, ly = rng.normal(0, 1, 2)
    norm = math.hypot(lx, ly) + 1e-6
    gain = 1.0 + rng.uniform(0.05, 0.25) * ((xx - 0.5) * lx + (yy - 0.5) * ly) / norm * 2
    img *= gain[..., None] * rng.uniform(0.85, 1.1)
    img[:] = cv2.GaussianBlur(img, (0, 0), 0.5 * s)
    rot = cv2.getRotationMatrix2D((cx, cy), roll, 1.0)
    img = cv2.warpAffine(img, rot, (R, R), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
    if R != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)   # sensor noise at output size
    rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


RECIPE_FILE = "synth.json"


@dataclass(frozen=True)
class Recipe:
    """How `synthesize` made a data set: enough to re-render any of its faces, alone, with
    chosen attributes changed and everything else (pose, identity, lighting, noise) as it was.
    Written as ``synth.json`` beside the images."""
    seed: int
    image_size: int
    layout: str
    hair_choices: tuple[str, ...]
    subtlety: float

    def face(self, file: str, changes: dict | None = None) -> tuple[Face, np.ndarray]:
        """The face stored as ``file`` (``000042.jpg``, or ``<domain>/000042.png`` in the
        folder layout), re-rendered with ``changes`` (FORCE_KEYS) applied."""
        path = Path(file)
        try:
            index = int(path.stem) - 1
        except ValueError:
            raise UserError(f"{file}: not a file name written by `stargan-rt data synth` "
                            "(expected a 6-digit index such as 000042.png)") from None
        force = {}
        if self.layout == "folders" and path.parent.name in FOLDER_DOMAINS:
            group, value = FOLDER_DOMAINS[path.parent.name]
            force[group] = value
        force.update(changes or {})
        return make_face(self.seed, index, self.image_size, self.hair_choices, force,
                         self.subtlety)

    def as_dict(self) -> dict:
        return {"generator": "stargan-rt data synth", "version": 1, "seed": self.seed,
                "image_size": self.image_size, "layout": self.layout,
                "hair_choices": list(self.hair_choices), "subtlety": self.subtlety}


def read_recipe(root: str | os.PathLike) -> Recipe | None:
    """The recipe of a synthetic data set, or None when ``root`` has none (e.g. CelebA)."""
    path = Path(root) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        recipe = Recipe(int(data["seed"]), int(data["image_size"]), str(data["layout"]),
                        tuple(str(h) for h in data["hair_choices"]), float(data["subtlety"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable synthetic data recipe ({exc}); re-create the data "
                        "set with `stargan-rt data synth` or delete the file") from None
    if recipe.layout not in LAYOUTS or any(h not in HAIR_DOMAINS for h in recipe.hair_choices):
        raise UserError(f"{path}: layout {recipe.layout!r} or hair colours "
                        f"{list(recipe.hair_choices)} are not ones `stargan-rt data synth` writes")
    return recipe


def face_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])


def make_face(seed: int, index: int, size: int, hair_choices=DEFAULT_CELEBA_HAIR,
              force: dict | None = None,
              subtlety: float = 0.0) -> tuple[Face, np.ndarray]:
    """The face with this (seed, index): its attributes and its uint8 BGR image."""
    rng = face_rng(seed, index)
    face = sample_face(rng, hair_choices, force)
    return face, render_face(face, rng, size, subtlety)


# ---------------------------------------------------------------------------------------------
# Writing data sets.
def _check_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out}: exists and is not a directory; give a new or empty "
                            "directory for the data set")
        if any(out.iterdir()):
            raise UserError(f"{out}: directory is not empty; give a new or empty directory "
                            "(synth never overwrites an existing data set)")


def parse_domains(text: str | None, layout: str) -> tuple[str, ...]:
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")
    if text is None:
        return DEFAULT_CELEBA_HAIR if layout == "celeba" else DEFAULT_FOLDER_DOMAINS
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    if len(names) != len(set(names)):
        raise UserError(f"--domains {text!r} lists a domain twice")
    if layout == "celeba":
        bad = [n for n in names if n not in HAIR_DOMAINS]
        if bad or not names:
            raise UserError(f"--domains for the celeba layout picks the hair colours to draw "
                            f"(all other attributes are always varied); unknown: "
                            f"{', '.join(bad) or '(none given)'}; valid: {', '.join(HAIR_DOMAINS)}")
        return tuple(names)
    bad = [n for n in names if n not in FOLDER_DOMAINS]
    if bad:
        raise UserError(f"unknown domain(s) {', '.join(bad)}; valid: {', '.join(FOLDER_DOMAINS)}")
    if len(names) < 2:
        raise UserError(f"--domains needs at least two domains, got {text!r} "
                        "(e.g. black_hair,blond_hair,brown_hair or neutral,smiling)")
    groups = {FOLDER_DOMAINS[n][0] for n in names}
    if len(groups) != 1:
        raise UserError(f"--domains {text!r} mixes attribute groups ({', '.join(sorted(groups))}); "
                        "folder domains must be mutually exclusive: all hair colours, or "
                        "neutral,smiling, or no_glasses,glasses, or female,male")
    return tuple(names)


def _encoder(fmt: str) -> list[int]:
    return [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]


def _render_job(job: tuple) -> tuple[int, list[int], bytes]:
    """(seed, index, size, hair_choices, force, fmt) -> (index, attribute vector, encoded)."""
    seed, index, size, hair_choices, force, fmt, subtlety = job
    face, image = make_face(seed, index, size, hair_choices, force, subtlety)
    ok, data = cv2.imencode("." + fmt, image, _encoder(fmt))
    if not ok:
        raise RuntimeError(f"cannot encode image {index} as {fmt}")
    return index, face.attribute_vector(), data.tobytes()


def _rendered(jobs: list[tuple], workers: int):
    """Yield the jobs' results in order, rendered in ``workers`` processes when > 1."""
    if workers <= 1 or len(jobs) < 500:   # starting processes costs ~1 s
        yield from map(_render_job, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may hold threads (torch, a progress bar) that fork would copy
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_render_job, jobs, chunksize=max(8, len(jobs) // (workers * 16)))


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def synthesize(out: str | os.PathLike, count: int = 2000, image_size: int = 64,
               layout: str = "celeba", seed: int = 0, domains: str | None = None,
               val_fraction: float = 0.1, image_format: str | None = None,
               workers: int | None = None, subtlety: float = 0.0, progress=None) -> dict:
    """Write a data set; returns a summary dict (counts, seconds, paths, positives)."""
    out = Path(out)
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise UserError(f"--count must be a positive integer, got {count!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 16 <= image_size <= 1024:
        raise UserError(f"--image-size must be an integer in 16..1024, got {image_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    chosen = parse_domains(domains, layout)
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    fmt = (image_format or ("jpg" if layout == "celeba" else "png")).lower().lstrip(".")
    if fmt not in ("jpg", "png"):
        raise UserError(f"--format must be jpg or png, got {image_format!r}")
    if layout == "folders" and count < len(chosen):
        raise UserError(f"--count {count} is less than the number of domains ({len(chosen)}); "
                        "give at least one image per domain")
    if not 0.0 <= subtlety <= 1.0:
        raise UserError(f"--subtlety must be in [0, 1], got {subtlety}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    _check_out(out)
    start = time.perf_counter()

    # Plan every file first: (relative path, job); indices are global so images are unique.
    plan: list[tuple[Path, tuple]] = []
    summary: dict = {"out": str(out), "layout": layout, "count": count, "image_size": image_size,
                     "seed": seed, "format": fmt, "subtlety": subtlety}
    if layout == "celeba":
        for index in range(count):
            plan.append((Path("images") / f"{index + 1:06d}.{fmt}",
                         (seed, index, image_size, chosen, None, fmt, subtlety)))
        summary["hair_colours"] = list(chosen)
    else:
        per_domain = [count // len(chosen) + (1 if i < count % len(chosen) else 0)
                      for i in range(len(chosen))]
        splits: dict = {}
        for domain, n in zip(chosen, per_domain):
            group, value = FOLDER_DOMAINS[domain]
            n_val = int(round(n * val_fraction)) if n > 1 else 0
            for split, n_split in (("train", n - n_val), ("val", n_val)):
                splits.setdefault(split, {})[domain] = n_split
                for _ in range(n_split):
                    index = len(plan)
                    plan.append((Path(split) / domain / f"{index + 1:06d}.{fmt}",
                                 (seed, index, image_size, DEFAULT_CELEBA_HAIR,
                                  {group: value}, fmt, subtlety)))
        summary["splits"] = splits
        summary["domains"] = list(chosen)

    try:
        out.mkdir(parents=True, exist_ok=True)
        for folder in sorted({str(rel.parent) for rel, _ in plan}):
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the data set folders ({exc.strerror or exc})")
    rows: list[str] = []
    positives = dict.fromkeys(RENDERED_ATTRIBUTES, 0)
    for done, ((rel, _), (_index, vector, data)) in enumerate(
            zip(plan, _rendered([job for _, job in plan], workers)), start=1):
        path = out / rel
        try:
            with open(path, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise UserError(f"{path}: cannot write ({exc.strerror or exc}); is the disk full? "
                            f"The data set in {out} is incomplete: delete it and run again")
        rows.append(rel.name + " " + " ".join(f"{v:2d}" for v in vector))
        for name, value in zip(CELEBA_ATTRIBUTES, vector):
            if value > 0 and name in positives:
                positives[name] += 1
        if progress:
            progress(done, count)
    summary["positives"] = positives

    hair_choices = chosen if layout == "celeba" else DEFAULT_CELEBA_HAIR
    recipe = Recipe(seed, image_size, layout, tuple(hair_choices), float(subtlety))
    try:
        (out / RECIPE_FILE).write_text(json.dumps(recipe.as_dict(), indent=2) + "\n",
                                       encoding="ascii")
    except OSError as exc:
        raise UserError(f"{out / RECIPE_FILE}: cannot write ({exc.strerror or exc}); is the disk "
                        f"full? The data set in {out} is incomplete: delete it and run again")

    # The index file last, via temp + rename: its presence marks a complete data set.
    if layout == "celeba":
        final, text = out / ATTR_FILE, (f"{count}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n"
                                         + "\n".join(rows) + "\n")
    else:
        final, text = out / DOMAINS_FILE, "\n".join(chosen) + "\n"
    write_atomic(final, text.encode("ascii"), lambda where, exc: UserError(
        f"{where}: cannot write ({exc.strerror or exc}); is the disk full?"))
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def haar_detection_rate(images, min_fraction: float = 0.25) -> float:
    """Fraction of images where OpenCV's frontal Haar cascade finds at least one face whose box
    is at least ``min_fraction`` of the image side (i.e. the synthetic face, not a texture)."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise UserError("cannot load OpenCV's Haar face cascade (opencv-python < 5 ships it)")
    hits = 0
    total = 0
    for image in images:
        total += 1
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        side = min(grey.shape)
        minimum = max(20, int(min_fraction * side))
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                         minSize=(minimum, minimum))
        hits += int(len(found) > 0)
    return hits / max(total, 1)
