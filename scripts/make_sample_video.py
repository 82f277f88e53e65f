#!/usr/bin/env python
"""Regenerate stargan_rt/assets/sample.mp4: the astronaut photograph from scikit-image
(NASA, public domain) seen through a slowly panning, zooming, rolling camera; 320x240, 20 fps,
3.2 s. Needs scikit-image (the test extra): python scripts/make_sample_video.py"""
import sys
from pathlib import Path

import cv2
from skimage.data import astronaut

from stargan_rt.stream.synthetic import moving_photo_frames, write_video

OUT = Path(__file__).resolve().parent.parent / "stargan_rt" / "assets" / "sample.mp4"


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    photo = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    n = write_video(out, moving_photo_frames(photo, 64), fps=20.0)
    print(f"wrote {n} frames to {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
