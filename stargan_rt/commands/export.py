"""`stargan-rt export`: bundle -> ONNX graphs (fp32, optionally fp16 / int8 and AdaIN-fused)."""
from __future__ import annotations

import time
from pathlib import Path

from stargan_rt import options
from stargan_rt.defaults import MODEL_HELP
from stargan_rt.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a bundle's networks to ONNX (fp32 / fp16 / int8 graphs)",
        description="Export every inference network of a bundle to ONNX (opset 17, dynamic batch, "
                    "frame I/O inside the graph), then optionally write fp16 / int8 versions and "
                    "AdaIN-fused versions for the TensorRT plugin.")
    parser.add_argument("--model", help=f"{MODEL_HELP}; default demo-v1 (--arch v2: demo-v2)")
    parser.add_argument("--arch", choices=("v1", "v2"), default="v1",
                        help="which built-in demo model when --model is not given (default v1)")
    parser.add_argument("--out", help="output directory (default: ./<bundle name>-onnx)")
    parser.add_argument("--io", choices=("uint8", "float"), default="uint8",
                        help="uint8: NHWC BGR frames in/out (engines); float: NCHW [-1, 1] (parity)")
    parser.add_argument("--precision", action="append", choices=("fp32", "fp16", "int8"),
                        help="graphs to write; repeat for several (default fp32)")
    parser.add_argument("--networks", help="comma-separated subset (generator, discriminator, "
                        "mapping_network, style_encoder, fan); default: all the bundle has")
    parser.add_argument("--fuse-adain", action="store_true",
                        help="also write <network>.<io>.<precision>.fused.onnx with AdaIN plugin "
                             "nodes (v2 generator; for TensorRT with the AdaIN plugin)")
    parser.add_argument("--calib", metavar="DIR|VIDEO",
                        help="int8 calibration frames (default: built-in synthetic faces)")
    parser.add_argument("--calib-count", type=options.COUNT, default=256,
                        help="calibration frames to use (at least 256)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    triton = parser.add_argument_group(
        "Triton model repository", "--triton REPO writes the bundle's networks as Triton models "
        "(with --precision once; --out, --io and --networks do not apply)")
    triton.add_argument("--triton", metavar="REPO",
                        help="write a Triton Inference Server model repository here")
    triton.add_argument("--target", choices=("openvino", "onnxruntime", "tensorrt"),
                        default="openvino", help="the engine the served graphs are for "
                        "(default openvino)")
    triton.add_argument("--backend", choices=("python", "native"), default="python",
                        help="python: stargan-rt's engines in Triton's Python backend (what "
                             "`stargan-rt serve` runs here); native: Triton's own onnxruntime / "
                             "openvino / tensorrt backends (NVIDIA's container)")
    triton.add_argument("--max-batch", type=options.COUNT, default=8,
                        help="max_batch_size of each model (default 8)")
    triton.add_argument("--queue-delay-us", type=options.NON_NEGATIVE, default=2000,
                        help="dynamic batching: how long a request waits for others (default "
                             "2000 us)")
    triton.add_argument("--instances", type=options.COUNT, default=1,
                        help="instances of each model (default 1)")
    parser.set_defaults(func=run)


def run_triton(args) -> int:
    from stargan_rt.serve.repository import Batching, write_repository

    precisions = list(dict.fromkeys(args.precision or ["fp32"]))
    if len(precisions) > 1:
        raise UserError("--triton takes one --precision (a repository serves one engine per "
                        "network); write another repository for another precision")
    if args.io != "uint8" or args.networks or args.out or args.fuse_adain:
        raise UserError("--triton writes the uint8 frame graphs of every network the runtime "
                        "needs; drop --out, --io, --networks and --fuse-adain")
    preferred = tuple(p for p in (4, 8) if p <= args.max_batch) or (args.max_batch,)
    batching = Batching(args.max_batch, preferred, int(args.queue_delay_us), args.instances)
    print(f"writing a Triton model repository ({args.backend} backend, {args.target} "
          f"{precisions[0]}) -> {args.triton}")
    names = write_repository(args.model or _demo(args.arch), args.triton, args.target,
                             precisions[0], args.backend, batching, calib=args.calib,
                             log=print)
    print(f"{len(names)} models written; every config.pbtxt parsed with Triton's model-config "
          f"protobuf. Serve it: stargan-rt serve {args.triton}")
    return 0


def _demo(arch: str) -> str:
    return "demo-v1" if arch == "v1" else "demo-v2"


def run(args) -> int:
    if args.triton:
        return run_triton(args)
    from stargan_rt.bundle import Bundle
    from stargan_rt.defaults import resolve_model
    from stargan_rt.export.calibration import MIN_CALIBRATION_FRAMES, load_calibration_frames
    from stargan_rt.export.exporter import export_bundle, onnx_file_name
    from stargan_rt.export.precision import prepare_graph

    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("export needs PyTorch: pip install 'stargan-rt[export]' (on CPU machines "
                        "install torch==2.13.0 from the CPU index first)")
    bundle_path = resolve_model(args.model, args.arch)
    bundle = Bundle.open(bundle_path)
    out = Path(args.out) if args.out else Path.cwd() / f"{bundle.path.name}-onnx"
    precisions = list(dict.fromkeys(args.precision or ["fp32"]))
    networks = [n.strip() for n in args.networks.split(",") if n.strip()] if args.networks else None
    if args.calib_count < MIN_CALIBRATION_FRAMES and "int8" in precisions:
        raise UserError(f"--calib-count {args.calib_count}: INT8 calibration needs at least "
                        f"{MIN_CALIBRATION_FRAMES} frames")
    print(f"exporting {bundle.path} ({bundle.manifest.arch}, {bundle.manifest.image_size} px, "
          f"bundle {bundle.content_hash}) -> {out}")
    fp32 = export_bundle(bundle.path, out, io=args.io, networks=networks,
                         do_simplify=not args.no_simplify, log=lambda m: print("  " + m))
    frames = None
    if "int8" in precisions:
        start = time.perf_counter()
        frames = load_calibration_frames(args.calib, bundle.manifest.image_size, args.calib_count)
        print(f"  calibration: {len(frames)} frames from {args.calib or 'built-in synthetic faces'}"
              f" ({time.perf_counter() - start:.1f} s)")
    for network, path in fp32.items():
        for precision in precisions:
            targets = [False] + ([True] if args.fuse_adain and network == "generator"
                                 and bundle.manifest.arch == "v2" else [])
            for fuse in targets:
                if precision == "fp32" and not fuse:
                    continue  # written by export_bundle
                name = onnx_file_name(network, args.io, precision)
                dest = out / (name[:-5] + ".fused.onnx" if fuse else name)
                start = time.perf_counter()
                _, fused = prepare_graph(path, dest, precision, fuse=fuse, calib_frames=frames)
                extra = f", {fused} AdaIN nodes fused" if fuse else ""
                print(f"  {precision:<5} {network} -> {dest} ({dest.stat().st_size / 1e6:.1f} MB, "
                      f"{time.perf_counter() - start:.1f} s{extra})")
    return 0
