"""`stargan-rt webcam`: live translation from a camera, a video, an image folder or pattern."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from stargan_rt.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "webcam", help="live translation of a camera / video / image folder",
        description="Stream frames through the engine: detect faces, translate them, paste them "
                    "back; show a window, record, serve a browser page. Keys in the window: "
                    "q quit, d/D domain, 1-9 domain, n new style, r face as style, o overlay, "
                    "s side-by-side, m mirror.")
    p.add_argument("--model", help="model bundle (default: the built-in demo model)")
    p.add_argument("--domain", help="target domain / attribute, e.g. smile (default: the first)")
    p.add_argument("--labels", help="v1: full target vector A=1,B=0,... instead of --domain")
    p.add_argument("--source", default="0",
                   help="camera index (0), video file, image folder, pattern frames/%%04d.png, "
                        "or 'sample' (the shipped demo video); default 0")
    p.add_argument("--loop", action="store_true", help="restart a file source at its end")
    p.add_argument("--realtime", action="store_true",
                   help="pace a file at its own FPS and drop the oldest frames like a camera")
    p.add_argument("--width", type=int, help="camera: requested width")
    p.add_argument("--height", type=int, help="camera: requested height")
    p.add_argument("--fps", type=float, help="camera: requested FPS")
    p.add_argument("--target", default="auto",
                   help="engine target: auto, tensorrt, openvino, onnxruntime (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--cache-dir", help="engine cache folder")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--seed", type=int, help="v2: latent-guided style from this seed")
    style.add_argument("--ref", help="v2: reference image whose style to use")
    p.add_argument("--psi", type=float, default=1.0, help="v2: truncation toward the mean style")
    p.add_argument("--headless", action="store_true", help="no window")
    p.add_argument("--record", metavar="OUT.mp4", help="write the result video")
    p.add_argument("--serve", metavar="HOST:PORT",
                   help="serve a live page (MJPEG + stats + buttons); host defaults to 127.0.0.1")
    p.add_argument("--virtual-cam", nargs="?", const="", metavar="DEVICE",
                   help="also send the result to a virtual camera (pyvirtualcam; Linux: "
                        "v4l2loopback /dev/videoN, Windows/macOS: OBS)")
    p.add_argument("--max-frames", type=int, help="stop after reading N frames")
    p.add_argument("--stats", metavar="FILE", help="write run statistics as JSON at the end")
    p.add_argument("--parity-every", type=int, default=0, metavar="N",
                   help="check every N-th frame's crops against the PyTorch reference")
    p.add_argument("--no-face", action="store_true",
                   help="translate the whole frame instead of detected faces")
    p.add_argument("--detect-every", type=int, default=3, metavar="K",
                   help="run the face detector every K frames, track in between (default 3)")
    p.add_argument("--max-faces", type=int, default=8)
    p.add_argument("--crop-scale", type=float, metavar="S",
                   help="crop side = S x the detected face width (default: the bundle's "
                        "config crop_scale, else 2.2 for v1 CelebA framing, 1.95 for v2 CelebA-HQ)")
    p.add_argument("--crop-shift", type=float, metavar="D",
                   help="crop centre = face centre + D x face width, downwards (default -0.15 "
                        "v1, -0.07 v2, or the bundle's crop_shift)")
    p.add_argument("--no-align", action="store_true",
                   help="plain detector framing: no eye levelling, and for v2 models with a "
                        "FAN no landmark (CelebA-HQ) alignment")
    p.add_argument("--no-colour-match", action="store_true",
                   help="paste back without matching colour at the seam")
    p.add_argument("--side-by-side", action="store_true", help="start with source | result")
    p.add_argument("--mirror", action="store_true", help="flip frames left-right (selfie view)")
    p.set_defaults(func=run)


def _parse_labels(text: str, domains: list[str]) -> list[float]:
    values = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or value.strip() not in ("0", "1"):
            raise UserError(f"--labels: expected A=1,B=0,... got {item!r}")
        match = next((d for d in domains if d.lower() == name.strip().lower()), None)
        if match is None:
            raise UserError(f"--labels: unknown attribute {name!r}; known: {', '.join(domains)}")
        values[match] = float(value)
    missing = [d for d in domains if d not in values]
    if missing:
        raise UserError(f"--labels must give every attribute; missing: {', '.join(missing)}")
    return [values[d] for d in domains]


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"--stats {path}: cannot write ({exc.strerror or exc})") from None


def run(args) -> int:
    from stargan_rt.defaults import resolve_model
    from stargan_rt.stream.faces import SYNTHETIC_FRAMING, FaceStage
    from stargan_rt.stream.pipeline import Pipeline
    from stargan_rt.stream.sinks import HttpSink, ProgressSink, RecordSink, VirtualCameraSink, \
        WindowSink, gui_available, parse_serve
    from stargan_rt.stream.sources import open_source

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    # check everything cheap before building engines or opening the camera
    if args.parity_every < 0:
        raise UserError("--parity-every must be >= 1 (or 0 for off)")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be >= 1")
    serve = parse_serve(args.serve) if args.serve else None
    stats_path = Path(args.stats) if args.stats else None
    for option, value in (("--stats", stats_path), ("--record", args.record)):
        if value:  # create the output folder, like the other verbs' --out
            folder = Path(value).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"{option} {value}: cannot create the folder {folder} "
                                f"({exc.strerror or exc})") from None
            if not os.access(folder, os.W_OK):
                raise UserError(f"{option} {value}: the folder {folder} is not writable")
    ref_bgr = None
    if args.ref:
        from stargan_rt.imaging import read_image
        ref_bgr = read_image(args.ref)
    model_path = resolve_model(args.model)
    from stargan_rt.bundle import Bundle
    bundle = Bundle.open(model_path)  # bad model / unknown domain fail before any engine build
    if args.domain:
        bundle.domain_index(args.domain)
    if bundle.manifest.arch != "v2" and (args.seed is not None or args.ref or args.psi != 1.0):
        raise UserError("--seed/--ref/--psi apply to StarGAN v2 models; this is a v1 model")
    if args.labels and bundle.manifest.arch != "v1":
        raise UserError("--labels applies to StarGAN v1 models; v2 models take --domain")
    if args.crop_scale is not None and not 1.0 <= args.crop_scale <= 5.0:
        raise UserError("--crop-scale must be between 1 and 5 (face widths)")
    if args.detect_every < 1:
        raise UserError("--detect-every must be >= 1")
    headless = args.headless
    if not headless:
        why = gui_available()
        if why:
            log(f"no window: {why}; running headless (pass --headless to silence this)")
            headless = True

    source = open_source(args.source, loop=args.loop, width=args.width, height=args.height,
                         fps=args.fps)
    log(f"source: {source.description}")
    try:
        from stargan_rt.runtime import Translator

        translator = Translator.create(model=str(model_path), target=args.target,
                                       precision=args.precision, cache_dir=args.cache_dir,
                                       log=log)
        domain = args.domain
        labels = None
        if args.labels:
            labels = _parse_labels(args.labels, list(translator.domains))
        elif domain is None:
            domain = translator.domains[0]
            log(f"no --domain given: using {domain} (known: {', '.join(translator.domains)})")
        if domain is not None:
            domain = _canonical(translator, domain)
        manifest = getattr(getattr(translator, "bundle", None), "manifest", None)
        config = dict(getattr(manifest, "config", None) or {})
        if "crop_scale" not in config and _is_demo(model_path):
            config.update(SYNTHETIC_FRAMING)  # the demo faces are framed tighter than CelebA
        if args.crop_scale is not None:
            config["crop_scale"] = args.crop_scale
        if args.crop_shift is not None:
            config["crop_shift"] = args.crop_shift
        faces = FaceStage(translator.image_size, translator.arch, config,
                          every=args.detect_every, max_faces=args.max_faces,
                          colour_match=not args.no_colour_match, no_face=args.no_face,
                          align=not args.no_align)
        reference_factory = None
        if args.parity_every:
            import importlib.util
            if importlib.util.find_spec("torch") is None:
                raise UserError("--parity-every needs PyTorch for the reference; install it "
                                "with pip install 'stargan-rt[torch]' or drop --parity-every")

            def make_reference():
                import torch

                from stargan_rt.reference import TorchTranslator  # lazily: imports torch
                # one thread: the reference runs beside the engine and must not fight it for
                # cores (measured here: 2 threads 1180 ms, 1 thread 8 ms per tiny-model call)
                torch.set_num_threads(1)
                return TorchTranslator(model_path)
            reference_factory = make_reference
        sinks = [WindowSink()] if not headless else [ProgressSink()]
        if args.record:
            sinks.append(RecordSink(args.record))
        if serve:
            sinks.append(HttpSink(*serve))
        if args.virtual_cam is not None:
            sinks.append(VirtualCameraSink(args.virtual_cam or None))
        pipeline = Pipeline(source, translator, faces, sinks, realtime=args.realtime,
                            max_frames=args.max_frames, domain=domain, labels=labels,
                            seed=args.seed if args.seed is not None else 0, ref_bgr=ref_bgr,
                            psi=args.psi, parity_every=args.parity_every,
                            reference_factory=reference_factory, precision=args.precision,
                            log=log, model_name=str(model_path))
        pipeline.view["side_by_side"] = args.side_by_side
        pipeline.view["mirror"] = args.mirror
    except BaseException:
        source.close()
        raise
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: pipeline.stop("terminated (SIGTERM)"))
    log(f"streaming {source.description} -> {pipeline.engine} {args.precision}, "
        f"{'whole frame' if args.no_face else 'faces'}, "
        f"{'live: newest frame wins' if pipeline.lossy else 'every frame'}; Ctrl-C to stop")
    if serve and not source.live and not args.loop:
        log("note: the page stops with the stream; add --loop to keep a file playing")
    code = pipeline.run()
    summary = pipeline.summary()
    if stats_path:
        _write_json_atomic(stats_path, summary)
    lat = summary["latency_ms"]

    def p(stage):
        s = lat.get(stage)
        return f"{s['p50']:.1f}/{s['p95']:.1f}" if s and s.get("count") else "-"
    log(f"stopped: {summary['stop_reason']}. frames in {summary['frames_in']} out "
        f"{summary['frames_out']} dropped {summary['frames_dropped']}, faces "
        f"{summary['faces_found']} in {summary['frames_with_faces']} frames, "
        f"{summary['fps'] or 0:.1f} FPS; ms p50/p95 detect {p('detect')} infer {p('infer')} "
        f"paste {p('paste')} end-to-end {p('end_to_end')}")
    parity = summary.get("parity")
    if parity and parity.get("checks"):
        log(f"parity vs PyTorch: {parity['checks']} checks, PSNR min {parity['psnr_db']['min']} "
            f"dB, max error {parity['max_abs_err']} -> "
            f"{'ok' if parity['passed'] else 'BELOW THRESHOLD'}")
    if summary["error"]:
        log(f"error: {summary['error']}" + ("; the recording was finalised" if args.record
                                             else ""))
    if stats_path:
        log(f"stats written to {stats_path}")
    return code


def _is_demo(model_path) -> bool:
    from stargan_rt.defaults import DEMO_MODELS
    try:
        return any(Path(model_path).resolve() == p.resolve() for p in DEMO_MODELS.values())
    except OSError:
        return False


def _canonical(translator, name: str) -> str:
    """The domain's own name for an alias (smile -> Smiling), via the bundle when there is one."""
    bundle = getattr(translator, "bundle", None)
    if bundle is not None:
        return translator.domains[bundle.domain_index(name)]
    match = next((d for d in translator.domains if d.lower() == name.lower()), None)
    if match is None:
        raise UserError(f"unknown domain {name!r}; known: {', '.join(translator.domains)}")
    return match
