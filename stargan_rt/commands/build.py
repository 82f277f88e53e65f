"""`stargan-rt build`: export (when needed), convert to the precision graph, build or reuse the
engines for a target, and say what was built, where, how big and how long it took."""
from __future__ import annotations

import time

from stargan_rt.backends import PRECISIONS, TARGETS
from stargan_rt.defaults import MODEL_HELP


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build", help="build (or reuse cached) engines for a model",
        description="Export the model's networks to ONNX, convert them to the precision graph "
                    "and build engines for the target; engines are cached by ONNX hash, "
                    "precision, target, runtime version and device.")
    parser.add_argument("--model", help=f"{MODEL_HELP}; default demo-v1")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, fp16 (OpenVINO: the CPU's native bf16 or f16) or int8 (Q/DQ)")
    parser.add_argument("--target", default="auto", choices=("auto",) + TARGETS,
                        help=f"auto picks the first available of {', '.join(TARGETS)}")
    parser.add_argument("--calib", metavar="DIR|VIDEO",
                        help="int8 calibration frames (default: the built-in demo data)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="engine cache (default: $STARGAN_RT_CACHE or ~/.cache/stargan-rt)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even when cached")
    parser.set_defaults(func=run)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args) -> int:
    from stargan_rt.build import BuildRequest, build

    start = time.perf_counter()
    result = build(BuildRequest(args.model, args.target, args.precision, args.cache_dir,
                                calib=args.calib, rebuild=args.rebuild))
    try:
        _report(result, start)
    finally:
        result.close()
    return 0


def _report(result, start: float) -> None:
    bundle, infos = result.bundle, result.infos
    name = bundle.manifest.name or bundle.path.name
    print(f"model {name} ({bundle.manifest.arch}, {bundle.manifest.image_size} px) -> "
          f"{result.target} {result.precision}")
    for info in infos:
        verb = "built " if info.built else "cached"
        engine = result.engines[info.network]
        print(f"  {verb} {info.network:<16} {info.precision:<5} {_size(info.size):>9}  "
              f"{info.seconds:6.2f} s  {info.path}")
        print(f"         {engine.describe()}; {engine.signature()}")
        print(f"         from {result.graphs.paths[info.network]}")
    total = sum(i.size for i in infos)
    print(f"{len(infos)} engine(s), {_size(total)}, {time.perf_counter() - start:.1f} s in all")
