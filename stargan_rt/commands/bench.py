"""`stargan-rt bench`: this project's engines against PyTorch and the platforms' own quantizers,
side by side in one process and one run, with the machine's ceilings; or (``--pipeline``) the
live pipeline headless against its engine alone. Writes bench.md, bench.json and PNG plots."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from stargan_rt.errors import UserError
from stargan_rt.stream.contracts import DEFAULT_DETECTOR, DETECTORS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time every engine side by side (and the platforms' own quantizers)",
        description="Build every available target and precision of this project for each model, "
                    "plus PyTorch fp32 / bf16 autocast and the peers made from the same fp32 "
                    "graph (NNCF int8 for OpenVINO, ONNX Runtime quantize_static int8), check "
                    "their accuracy against PyTorch fp32, then time them in interleaved rounds "
                    "in this one process. Default models: official-size v1 128 px and v2 256 px "
                    "(w_hpf 1, with the FAN), random weights.")
    p.add_argument("--model", action="append", metavar="M",
                   help="official-v1, official-v2 (random weights), a bundle folder or a "
                        "built-in model name; repeat for several (default: official-v1 and "
                        "official-v2; with --pipeline official-v1)")
    p.add_argument("--batch", default="1,4", help="batch sizes, comma-separated (default 1,4)")
    p.add_argument("--rounds", type=int, default=20, help="timed calls per row and batch")
    p.add_argument("--targets", help="comma-separated targets (default: every available one)")
    p.add_argument("--precisions", default="fp32,fp16,int8", help="project precisions to run")
    p.add_argument("--no-peers", action="store_true", help="leave out NNCF / quantize_static")
    p.add_argument("--torch-compile", action="store_true",
                   help="also time torch.compile (compiles with the C++ toolchain: minutes)")
    p.add_argument("--calib", metavar="DIR|VIDEO", help="int8 calibration frames (default: the "
                                                        "built-in synthetic faces)")
    p.add_argument("--cache-dir", help="engine cache (default: a fresh temporary one, so build "
                                       "times are real)")
    p.add_argument("--ceiling-size", default="1024,2048",
                   help="sizes n for the ceilings, comma-separated: chains of n-sided matmuls "
                        "and of n/4-channel 3x3 convolutions; the fastest is kept "
                        "(default 1024,2048)")
    p.add_argument("--ceiling-seconds", type=float, default=0.6,
                   help="time spent on each ceiling (default 0.6)")
    p.add_argument("--out", default="bench-out", help="folder for bench.md / .json / plots")
    p.add_argument("--pipeline", action="store_true",
                   help="run the live pipeline headless on a video instead of the engine table")
    p.add_argument("--source", default="sample", help="--pipeline: video (default: the sample)")
    p.add_argument("--resize", metavar="WxH", default="640x480",
                   help="--pipeline: play the source resized to WxH (default 640x480, a webcam's "
                        "size; 'none' plays it as it is)")
    p.add_argument("--opencv-threads", default="1",
                   help="--pipeline: OpenCV threads beside the engine, comma-separated values "
                        "to compare (default 1; 'default' leaves OpenCV's own)")
    p.add_argument("--streams", default="1,2",
                   help="--pipeline: frames in inference at once, comma-separated values to "
                        "compare (default 1,2; the webcam verb's --streams)")
    p.add_argument("--realtime", action="store_true",
                   help="--pipeline: also a run paced at the video's FPS (end-to-end latency)")
    p.add_argument("--max-frames", type=int, default=300, help="--pipeline: frames per run")
    p.add_argument("--pipeline-rounds", type=int, default=3,
                   help="--pipeline: runs per setting, each between two timings of the engine "
                        "alone; the median FPS / alone is reported (default 3)")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help=f"--pipeline: face detector (default {DEFAULT_DETECTOR})")
    p.add_argument("--target", default="openvino", help="--pipeline: engine target")
    p.add_argument("--precision", default="int8", help="--pipeline: engine precision")
    p.set_defaults(func=run)


def _list(text: str, name: str, cast=str) -> list:
    try:
        values = [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--{name}: expected a comma-separated list, got {text!r}") from None
    if not values:
        raise UserError(f"--{name}: empty list")
    return values


def run(args) -> int:
    from stargan_rt.bench import report

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    batches = _list(args.batch, "batch", int)
    if any(b < 1 for b in batches) or args.rounds < 1:
        raise UserError("--batch values and --rounds must be >= 1")
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="stargan-rt-bench-") as tmp:
        result = _measure(args, Path(tmp), batches, log)
    paths = report.write_all(result, out)
    print(report.markdown(result))
    for name, path in paths.items():
        log(f"{name}: {path}")
    return 0


def _measure(args, workdir: Path, batches: list[int], log) -> dict:
    """Models, engines, caches and videos live in ``workdir`` (removed afterwards) unless
    --cache-dir keeps the engines."""
    from stargan_rt.bench import runner
    from stargan_rt.bench.models import DEFAULT_MODELS

    if args.pipeline:
        return _pipeline(args, workdir, log)
    models = args.model or list(DEFAULT_MODELS)
    targets = _list(args.targets, "targets") if args.targets else None
    ceiling_sizes = _list(args.ceiling_size, "ceiling-size", int)
    if any(n < 1 for n in ceiling_sizes):
        raise UserError(f"--ceiling-size {args.ceiling_size}: expected positive sizes, such as "
                        "1024,2048")
    return runner.run_bench(
        models, workdir=workdir, log=log, ceiling_sizes=ceiling_sizes,
        ceiling_seconds=args.ceiling_seconds, batches=batches, rounds=args.rounds,
        targets=targets, precisions=_list(args.precisions, "precisions"),
        peers=not args.no_peers, torch_compile=args.torch_compile, calib=args.calib,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None)


def _pipeline(args, workdir: Path, log) -> dict:
    from stargan_rt.bench import machine
    from stargan_rt.bench.models import resolve
    from stargan_rt.bench.pipeline import resized_video, run_pipeline
    from stargan_rt.runtime import Translator

    if args.pipeline_rounds < 1:
        raise UserError(f"--pipeline-rounds {args.pipeline_rounds}: expected 1 or more")
    info = machine.describe()
    log(f"machine: {machine.one_line(info)}")
    result = {"tool": "stargan-rt bench --pipeline", "machine": info, "models": [],
              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "command": " ".join(["stargan-rt"] + sys.argv[1:]), "pipeline": [],
              "ceilings": {}, "ceilings_start": {}}
    source = args.source
    if args.resize.lower() != "none":
        try:
            w, h = (int(x) for x in args.resize.lower().split("x"))
        except ValueError:
            raise UserError(f"--resize: expected WxH such as 640x480, got {args.resize!r}") \
                from None
        source = resized_video(source, (w, h), workdir / f"source-{w}x{h}.mp4",
                               max(args.max_frames or 300, 1))
        log(f"source: {args.source} resized to {w}x{h}")
    threads = [None if t.strip() == "default" else int(t)
               for t in args.opencv_threads.split(",")]
    stream_counts = _list(args.streams, "streams", int)
    if any(n < 1 for n in stream_counts):
        raise UserError("--streams values must be >= 1")
    for spec in args.model or ["official-v1"]:
        path = resolve(spec, workdir)
        made = {}
        try:
            for n in sorted(set(stream_counts) | {1}):
                made[n] = Translator.create(str(path), target=args.target,
                                            precision=args.precision,
                                            cache_dir=args.cache_dir or workdir / "cache",
                                            log=lambda m: None, calib=args.calib, streams=n)
            modes = [False, True] if args.realtime else [False]
            for realtime in modes:
                for n in stream_counts:
                    for count in threads:
                        result["pipeline"].append(run_pipeline(
                            spec, made[n], made[1], source, realtime, args.max_frames, log,
                            count, n, args.pipeline_rounds, args.detector))
        finally:
            for translator in made.values():
                translator.close()
    result["load_average_end"] = machine.load_average()
    return result
