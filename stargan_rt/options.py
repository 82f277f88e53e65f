"""Numeric options: one range check per kind of option.

Each kind is a ``Number``: an argparse ``type=`` for the command line (a bad value is argparse's
one-line usage error, exit 2) and ``check(value, name)`` for the same value arriving another way
(the served page's API, a Python caller), which raises a UserError. Every number must be finite
and inside its bounds; nothing is clamped silently.
"""
from __future__ import annotations

import argparse
import math

from stargan_rt.errors import UserError


class Number:
    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 what: str = "", low_open: bool = False):
        self.kind, self.low, self.high, self.what, self.low_open = kind, low, high, what, low_open
        self.__name__ = what or kind.__name__  # argparse names the type in some messages

    def expected(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            if self.low_open:
                return f"{noun} above {self.low:g} and at most {self.high:g}"
            return f"{noun} from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} <= {self.high:g}"
        return noun

    def _problem(self, value) -> str | None:
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return "not an integer"
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "not a number"
            if not math.isfinite(value):
                return "not finite"
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return "too small"
        if self.high is not None and value > self.high:
            return "too large"
        return None

    def check(self, value, name: str):
        """The value, or a UserError saying what ``name`` must be."""
        problem = self._problem(value)
        if problem:
            raise UserError(f"{name} {value!r} is {problem}: expected {self.expected()}"
                            + (f" ({self.what})" if self.what else ""))
        return self.kind(value)

    def __call__(self, text: str):
        """argparse type: parse and check a command-line value."""
        try:
            value = int(text, 10) if self.kind is int else float(text)
        except (TypeError, ValueError):
            value = None
        if value is not None:
            problem = self._problem(value)
        elif self.kind is int and _is_float(text):
            problem = "not an integer"
        else:
            problem = "not a number"
        if problem:
            raise argparse.ArgumentTypeError(
                f"{text!r} is {problem}: expected {self.expected()}"
                + (f" ({self.what})" if self.what else ""))
        return value


def streams_option(text: str):
    """argparse type of the webcam verb's --streams: 'auto' or a STREAMS count."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return STREAMS(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or auto") from None


def _is_float(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


# -- the kinds of option -----------------------------------------------------------------------
SEED = Number(int, 0, 2**63 - 1, "a random seed")
PSI = Number(float, 0.0, 1.0, "truncation: 0 = the mean style, 1 = none")
IMAGE_SIZE = Number(int, 16, 1024, "pixels")
W_HPF = Number(float, 0.0, 100.0, "high-pass weight; 0 = none")
CROP_SCALE = Number(float, 1.0, 5.0, "face widths")
CROP_SHIFT = Number(float, -1.0, 1.0, "face widths, + is down")
MAX_FACES = Number(int, 1, 64, "faces per frame")
STREAMS = Number(int, 1, 16, "frames in inference at once")
FRAME_SIDE = Number(int, 16, 16384, "pixels")
FPS = Number(float, 0.0, 1000.0, "frames per second", low_open=True)
EVERY = Number(int, 1, 1_000_000, "every N-th frame")
EVERY_OR_OFF = Number(int, 0, 1_000_000, "every N-th; 0 = off")
COUNT = Number(int, 1, 10**9, "a count")
COUNT_OR_NONE = Number(int, 0, 10**9, "a count; 0 = none")
FRACTION = Number(float, 0.0, 1.0, "a fraction")
NON_NEGATIVE = Number(float, 0.0, 1e9, "0 or more")
POSITIVE = Number(float, 0.0, 1e9, "above 0", low_open=True)
MINUTES = Number(float, 0.0, 10**7, "minutes; 0 = no limit")
SECONDS = Number(float, 0.0, 10**7, "seconds", low_open=True)
PSNR_DB = Number(float, 0.0, 200.0, "dB")
THREADS = Number(int, -1, 4096, "0 = torch default, -1 = auto")
JPEG_QUALITY = Number(int, 1, 100, "JPEG quality")
