"""`stargan-rt webcam`: live translation from a camera, a video, an image folder or pattern.

The options are declared here; the run itself is ``stargan_rt.stream.app`` (imported when the
verb runs, so other verbs do not load OpenCV and the engines)."""
from __future__ import annotations

from stargan_rt import options
from stargan_rt.commands.server_options import add_server_options
from stargan_rt.defaults import MODEL_HELP
from stargan_rt.stream.contracts import DEFAULT_DETECTOR, DETECTORS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "webcam", help="live translation of a camera / video / image folder",
        description="Stream frames through the engine: detect faces, translate them, paste them "
                    "back; show a window, record, serve a browser page. Keys in the window: "
                    "q quit, d/D domain, 1-9 domain, n new style, r face as style, o overlay, "
                    "s side-by-side, m mirror.")
    p.add_argument("--model", help=f"{MODEL_HELP}; default demo-v1")
    p.add_argument("--domain", help="target domain / attribute, e.g. smile (default: the first)")
    p.add_argument("--labels", help="v1: full target vector A=1,B=0,... instead of --domain")
    p.add_argument("--source", default="0",
                   help="camera index (0), video file, image folder, pattern frames/%%04d.png, "
                        "or 'sample' (the shipped demo video); default 0")
    p.add_argument("--loop", action="store_true", help="restart a file source at its end")
    p.add_argument("--realtime", action="store_true",
                   help="pace a file at its own FPS and drop the oldest frames like a camera")
    p.add_argument("--streams", type=options.streams_option, default="auto",
                   help="frames in inference at once, each on its share of the cores: 1 has "
                        "the lowest latency, 2 on a CPU more frames per second when detection "
                        "and paste-back share the cores (`stargan-rt bench --pipeline --streams "
                        "1,2` measures both). Default auto: 1 for a camera, a stream or "
                        "--realtime; 2 for a file taken frame by frame on 2 or more cores")
    p.add_argument("--width", type=options.FRAME_SIDE, help="camera: requested width")
    p.add_argument("--height", type=options.FRAME_SIDE, help="camera: requested height")
    p.add_argument("--fps", type=options.FPS, help="camera: requested FPS")
    p.add_argument("--target", default="auto",
                   help="engine target: auto, tensorrt, openvino, onnxruntime (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--cache-dir", help="engine cache folder")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--seed", type=options.SEED, help="v2: latent-guided style from this seed")
    style.add_argument("--ref", help="v2: reference image whose style to use")
    p.add_argument("--psi", type=options.PSI, default=1.0, help="v2: truncation toward the mean style")
    p.add_argument("--headless", action="store_true", help="no window")
    p.add_argument("--record", metavar="OUT.mp4", help="write the result video")
    p.add_argument("--serve", metavar="HOST:PORT",
                   help="serve a live page (MJPEG + stats + buttons); host defaults to 127.0.0.1")
    p.add_argument("--token", help="--serve: the access token (at least 16 letters, digits or "
                   "-_.~; default: generated and printed at start). Needed by every request "
                   "from other machines, and on this one by API clients that change state")
    p.add_argument("--virtual-cam", nargs="?", const="", metavar="DEVICE",
                   help="also send the result to a virtual camera (pyvirtualcam; Linux: "
                        "v4l2loopback /dev/videoN, Windows/macOS: OBS)")
    p.add_argument("--max-frames", type=options.COUNT, help="stop after reading N frames")
    p.add_argument("--stats", metavar="FILE", help="write run statistics as JSON at the end")
    p.add_argument("--parity-every", type=options.EVERY_OR_OFF, default=0, metavar="N",
                   help="check every N-th frame's crops against the PyTorch reference")
    p.add_argument("--no-face", action="store_true",
                   help="translate the whole frame instead of detected faces")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help="face detector: blazeface (MediaPipe's models on OpenVINO; install "
                        "with `stargan-rt pull face-detector`) or haar (OpenCV's cascade: "
                        "no download; ~0.6 ms more CPU per frame, less steady crops) "
                        f"(default {DEFAULT_DETECTOR})")
    p.add_argument("--detect-every", type=options.EVERY, default=3, metavar="K",
                   help="run the face detector every K frames, track in between (default 3)")
    p.add_argument("--max-faces", type=options.MAX_FACES, default=8,
                   help="at most this many faces per frame (default 8)")
    p.add_argument("--crop-scale", type=options.CROP_SCALE, metavar="S",
                   help="crop side = S x the detected face width (default: the bundle's "
                        "config crop_scale, else 2.2 for v1 CelebA framing, 1.95 for v2 CelebA-HQ)")
    p.add_argument("--crop-shift", type=options.CROP_SHIFT, metavar="D",
                   help="crop centre = face centre + D x face width, downwards (default -0.15 "
                        "v1, -0.07 v2, or the bundle's crop_shift)")
    p.add_argument("--no-align", action="store_true",
                   help="plain detector framing: no eye levelling, and for v2 models with a "
                        "FAN no landmark (CelebA-HQ) alignment")
    p.add_argument("--no-colour-match", action="store_true",
                   help="paste back without matching colour at the seam")
    p.add_argument("--side-by-side", action="store_true", help="start with source | result")
    p.add_argument("--mirror", action="store_true", help="flip frames left-right (selfie view)")
    add_server_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from stargan_rt.stream.app import run_webcam
    return run_webcam(args)

