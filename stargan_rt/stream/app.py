"""The `webcam` verb's run: command-line options -> source, translator, face stage, sinks ->
``Pipeline`` -> statistics and a summary. Nothing here imports torch (the parity reference is
made lazily by ``_reference_factory``)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
from pathlib import Path

from stargan_rt.bundle import Bundle
from stargan_rt.defaults import demo_hint, is_builtin_demo, resolve_model
from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic
from stargan_rt.imaging import read_image
from stargan_rt.runtime import Translator
from stargan_rt.stream.contracts import Sink, StreamOptions
from stargan_rt.stream.faces import FaceStage
from stargan_rt.stream.http_guard import check_token
from stargan_rt.stream.pipeline import Pipeline
from stargan_rt.stream.sinks import ProgressSink, RecordSink, VirtualCameraSink, WindowSink, \
    gui_available
from stargan_rt.stream.sources import open_source
from stargan_rt.stream.web import HttpSink, parse_serve


def _write_stats(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n",
                 lambda where, exc: UserError(f"--stats {where}: cannot write "
                                              f"({exc.strerror or exc})"))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_options(args) -> None:
    """Everything cheap, before building engines or opening the camera."""
    # numbers are range-checked by their argparse types (stargan_rt/options.py)
    if args.token is not None:
        if not args.serve:
            raise UserError("--token applies to the served page; add --serve HOST:PORT or drop "
                            "--token")
        check_token(args.token)
    if args.server and (args.target != "auto" or args.precision != "fp32" or args.cache_dir):
        raise UserError("--server runs the engines the server was given (export --triton "
                        "--target/--precision); drop --target, --precision and --cache-dir")
    for option, value in (("--stats", args.stats), ("--record", args.record)):
        if value:  # create the output folder, like the other verbs' --out
            folder = Path(value).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"{option} {value}: cannot create the folder {folder} "
                                f"({exc.strerror or exc})") from None
            if not os.access(folder, os.W_OK):
                raise UserError(f"{option} {value}: the folder {folder} is not writable")
            if Path(value).is_dir():
                raise UserError(f"{option} {value}: that is a directory; give a file name")


def _streams(requested, live: bool) -> int:
    """--streams auto: one frame in inference at a time when frames come live (a camera, a
    stream, --realtime: the lowest latency, and the source's rate is the limit), two when a
    file is taken frame by frame on two or more cores (the most frames per second: the other
    stages then stall one frame's inference, not both cores' work)."""
    if requested != "auto":
        return int(requested)
    streams = 1 if live or (os.cpu_count() or 1) < 2 else 2
    why = "live frames: the lowest latency" if live else "a file, frame by frame"
    _log(f"streams: {streams} (auto, {why})")
    return streams


def _check_model(args, model_path) -> Bundle:
    """A bad model, an unknown domain or options of the other architecture fail before any
    engine is built."""
    bundle = Bundle.open(model_path)
    if args.domain:
        bundle.domain_index(args.domain)
    if bundle.manifest.arch != "v2" and (args.seed is not None or args.ref or args.psi != 1.0):
        raise UserError("--seed/--ref/--psi apply to StarGAN v2 models; this is a v1 model")
    if args.labels and bundle.manifest.arch != "v1":
        raise UserError("--labels applies to StarGAN v1 models; v2 models take --domain")
    return bundle


def _whole_frame(args, manifest) -> bool:
    """--no-face, or a model whose framing is the whole frame (AFHQ: subjects fill the picture)."""
    return bool(args.no_face) or manifest.config.get("framing") == "whole"


def _model_notes(args, model_path, manifest) -> None:
    """Start-up lines, once: what a demo model does to real faces and the command for real
    weights; whole-frame translation when the model's framing asks for it."""
    if is_builtin_demo(model_path):
        _log(demo_hint(manifest.arch))
    if _whole_frame(args, manifest) and not args.no_face:
        _log("whole frame: this model was trained on subjects filling the picture (its "
             "framing: whole), so frames are translated without face detection")


def _headless(args) -> bool:
    if args.headless:
        return True
    why = gui_available()
    if why:
        _log(f"no window: {why}; running headless (pass --headless to silence this)")
    return bool(why)


def _face_stage(args, translator) -> FaceStage:
    config = dict(translator.bundle.manifest.config or {})
    if args.crop_scale is not None:
        config["crop_scale"] = args.crop_scale
    if args.crop_shift is not None:
        config["crop_shift"] = args.crop_shift
    return FaceStage(translator.image_size, translator.arch, config, every=args.detect_every,
                     max_faces=args.max_faces, colour_match=not args.no_colour_match,
                     no_face=_whole_frame(args, translator.bundle.manifest),
                     align=not args.no_align, detector=args.detector)


def _reference_factory(model_path):
    """Makes the PyTorch reference for --parity-every (imports torch when called)."""
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
    return make_reference


def _sinks(args, headless: bool, serve) -> list[Sink]:
    sinks: list[Sink] = [WindowSink()] if not headless else [ProgressSink()]
    if args.record:
        sinks.append(RecordSink(args.record))
    if serve:
        sinks.append(HttpSink(*serve, token=args.token))
    if args.virtual_cam is not None:
        sinks.append(VirtualCameraSink(args.virtual_cam or None))
    return sinks


def _target(args, translator) -> tuple[str | None, list[float] | None]:
    if args.labels:
        return None, translator.bundle.parse_labels(args.labels)
    domain = args.domain
    if domain is None:
        domain = translator.domains[0]
        _log(f"no --domain given: using {domain} (known: {', '.join(translator.domains)})")
    return translator.domains[translator.bundle.domain_index(domain)], None


def run_webcam(args) -> int:
    _check_options(args)
    serve = parse_serve(args.serve) if args.serve else None
    ref_bgr = read_image(args.ref) if args.ref else None
    model_path = resolve_model(args.model)
    manifest = _check_model(args, model_path).manifest
    _model_notes(args, model_path, manifest)
    headless = _headless(args)

    source = open_source(args.source, loop=args.loop, width=args.width, height=args.height,
                         fps=args.fps)
    _log(f"source: {source.description}")
    streams = _streams(args.streams, source.live or args.realtime)
    translator = None
    try:
        if args.detector == "blazeface" and not _whole_frame(args, manifest):
            from stargan_rt.stream.blazeface import require_installed

            require_installed()  # before an engine build, not after it
        if args.server:  # the networks run on Triton; faces and paste-back stay here
            from stargan_rt.serve.client import remote_translator

            translator = remote_translator(str(model_path), args.server, args.server_timeout,
                                           log=_log)
        else:
            translator = Translator.create(model=str(model_path), target=args.target,
                                           precision=args.precision, cache_dir=args.cache_dir,
                                           log=_log, streams=streams)
        domain, labels = _target(args, translator)
        options = StreamOptions(
            realtime=args.realtime, max_frames=args.max_frames, domain=domain, labels=labels,
            seed=args.seed if args.seed is not None else 0, ref_bgr=ref_bgr, psi=args.psi,
            parity_every=args.parity_every,
            reference_factory=_reference_factory(model_path) if args.parity_every else None,
            precision=translator.precision, log=_log, model_name=str(model_path),
            side_by_side=args.side_by_side, mirror=args.mirror, streams=streams)
        sinks = _sinks(args, headless, serve)
        pipeline = Pipeline(source, translator, _face_stage(args, translator), sinks, options)
    except BaseException:
        source.close()
        if translator is not None:
            translator.close()
        raise
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGTERM, lambda *_: pipeline.stop("terminated (SIGTERM)"))

        # Ctrl-C asks the pipeline to stop, like SIGTERM, instead of raising KeyboardInterrupt at
        # whatever line the main thread is on (inside a queue's lock it could leave the lock
        # held and the threads' join waiting forever); a second Ctrl-C interrupts at once.
        def on_sigint(*_):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            pipeline.stop("interrupted (Ctrl-C)")
        signal.signal(signal.SIGINT, on_sigint)
    _log(f"streaming {source.description} -> {pipeline.engine} {translator.precision}, "
         f"{'whole frame' if _whole_frame(args, translator.bundle.manifest) else 'faces'}, "
         f"{'live: newest frame wins' if pipeline.lossy else 'every frame'}; Ctrl-C to stop")
    if serve and not source.live and not args.loop:
        _log("note: the page stops with the stream; add --loop to keep a file playing")
    try:
        code = pipeline.run()
    finally:
        translator.close()
        if main_thread:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    summary = pipeline.summary()
    if args.stats:
        _write_stats(Path(args.stats), summary)
    recorder = next((s for s in sinks if isinstance(s, RecordSink)), None)
    _report(summary, args, recorder is not None and recorder.written)
    return code


def _report(summary: dict, args, recorded: bool = False) -> None:
    lat = summary["latency_ms"]

    def p(stage):
        s = lat.get(stage)
        return f"{s['p50']:.1f}/{s['p95']:.1f}" if s and s.get("count") else "-"
    _log(f"stopped: {summary['stop_reason']}. frames in {summary['frames_in']} out "
         f"{summary['frames_out']} dropped {summary['frames_dropped']}, faces "
         f"{summary['faces_found']} in {summary['frames_with_faces']} frames, "
         f"{summary['fps'] or 0:.1f} FPS; ms p50/p95 detect {p('detect')} infer {p('infer')} "
         f"paste {p('paste')} end-to-end {p('end_to_end')}")
    parity = summary.get("parity")
    if parity and parity.get("checks"):
        _log(f"parity vs PyTorch: {parity['checks']} checks, PSNR min {parity['psnr_db']['min']} "
             f"dB, max error {parity['max_abs_err']} -> "
             f"{'ok' if parity['passed'] else 'BELOW THRESHOLD'}")
    if summary["error"]:
        _log(f"error: {summary['error']}" + ("; the recording was finalised" if recorded
                                              else ""))
    if args.stats:
        _log(f"stats written to {args.stats}")
