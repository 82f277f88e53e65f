#!/usr/bin/env python
"""Regenerate stargan_rt/assets/sample.mp4: the astronaut photograph from scikit-image
(NASA, public domain) seen through a slowly panning, zooming, rolling camera; 320x240, 20 fps,
3.2 s. Needs scikit-image (the test extra): python scripts/make_sample_video.py

The options make harder clips for the live pipeline's bench, e.g. the 640x480 one whose head
rolls +-15 degrees (README, Speed):
python scripts/make_sample_video.py roll15.mp4 --size 640x480 --frames 300 --fps 30 \\
    --centre 225,150 --scale 1.4 --pan 60 --zoom 0.25 --roll 15"""
import argparse
import sys
from pathlib import Path

import cv2
from skimage.data import astronaut

from stargan_rt.stream.synthetic import moving_photo_frames, write_video

OUT = Path(__file__).resolve().parent.parent / "stargan_rt" / "assets" / "sample.mp4"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, default=OUT)
    p.add_argument("--size", default="320x240", help="WxH (default 320x240)")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--centre", default="225,172", help="photo pixel the camera circles, x,y")
    p.add_argument("--scale", type=float, default=0.72, help="output pixels per photo pixel")
    p.add_argument("--pan", type=float, default=28.0, help="photo pixels")
    p.add_argument("--zoom", type=float, default=0.12, help="+- this fraction")
    p.add_argument("--roll", type=float, default=7.0, help="+- this many degrees")
    args = p.parse_args()
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        centre = tuple(float(v) for v in args.centre.split(","))
        if len(size) != 2 or len(centre) != 2 or min(size) < 16 or args.frames < 1:
            raise ValueError
    except ValueError:
        p.error(f"--size WxH (at least 16x16), --centre X,Y and --frames >= 1 expected; got "
                f"{args.size!r}, {args.centre!r}, {args.frames}")
    photo = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    frames = moving_photo_frames(photo, args.frames, size=size, centre=centre, scale=args.scale,
                                 pan=args.pan, zoom=args.zoom, angle=args.roll)
    n = write_video(args.out, frames, fps=args.fps)
    print(f"wrote {n} frames to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
