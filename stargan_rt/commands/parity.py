"""`stargan-rt parity`: every available engine against the PyTorch fp32 reference on face frames."""
from __future__ import annotations

import json
import time
from pathlib import Path

from stargan_rt import options
from stargan_rt.backends import PRECISIONS, TARGETS
from stargan_rt.commands.server_options import add_server_options
from stargan_rt.defaults import MODEL_HELP
from stargan_rt.parity import Thresholds


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "parity", help="check engines against the PyTorch fp32 reference (PSNR, SSIM, max error)",
        description="Builds (or reuses) the engines for each target and precision, runs them and "
                    "the PyTorch fp32 reference on the same face frames, and reports PSNR, SSIM "
                    "and max absolute error per engine and output. Exit status 1 when any "
                    "engine fails its threshold.")
    parser.add_argument("--model", help=f"{MODEL_HELP}; default demo-v1")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, action="extend",
                        help="precisions to check (default: fp32 fp16 int8)")
    parser.add_argument("--target", nargs="+", choices=TARGETS, action="extend",
                        help="targets to check (default: every one installed here)")
    parser.add_argument("--images", metavar="DIR|VIDEO",
                        help="face frames (default: held-out synthetic faces of the demo data)")
    parser.add_argument("--count", type=options.COUNT, default=32, help="frames to compare (>= 32)")
    parser.add_argument("--io", choices=("uint8", "float"), default="uint8",
                        help="graph I/O variant: uint8 frames (what engines run) or float NCHW")
    parser.add_argument("--report", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--calib", metavar="DIR|VIDEO", help="int8 calibration frames")
    parser.add_argument("--cache-dir", metavar="DIR", help="engine cache directory")
    default = Thresholds()
    parser.add_argument("--fp32-max-err", type=options.NON_NEGATIVE, default=default.fp32_max_err_uint8,
                        help="fp32: max abs error for uint8 outputs (levels; default "
                             f"{default.fp32_max_err_uint8:g})")
    parser.add_argument("--fp32-float-tol", type=options.NON_NEGATIVE, default=default.fp32_max_err_float,
                        help="fp32: max abs error for float outputs (default "
                             f"{default.fp32_max_err_float:g})")
    parser.add_argument("--fp16-psnr", type=options.PSNR_DB, default=default.fp16_psnr,
                        help=f"fp16: min PSNR dB (default {default.fp16_psnr:g})")
    parser.add_argument("--int8-psnr", type=options.PSNR_DB, default=default.int8_psnr,
                        help=f"int8: min PSNR dB (default {default.int8_psnr:g})")
    add_server_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import asdict

    from stargan_rt.bundle import Bundle
    from stargan_rt.defaults import resolve_model
    from stargan_rt.errors import UserError
    from stargan_rt.parity import ParityReport, Reference, check_engines, load_frames
    from stargan_rt.build import BuildRequest, build
    from stargan_rt.targets import probe, resolve_target

    bundle = Bundle.open(resolve_model(args.model))
    thresholds = Thresholds(args.fp32_max_err, args.fp32_float_tol, args.fp16_psnr,
                            args.int8_psnr)
    precisions = list(dict.fromkeys(args.precision or PRECISIONS))
    report_path = Path(args.report) if args.report else None
    if report_path is not None and not report_path.parent.is_dir():
        raise UserError(f"--report {report_path}: directory {report_path.parent} does not exist")

    skipped = []
    if args.server:
        if args.target or args.precision or args.io != "uint8":
            raise UserError("--server checks the served build (its target and precision, uint8 "
                            "frames); drop --target, --precision and --io")
        targets = []
    elif args.target:
        targets = [resolve_target(t, print) for t in dict.fromkeys(args.target)]
    else:
        targets = []
        for name in TARGETS:
            status = probe(name)
            if status.available:
                targets.append(name)
            else:
                skipped.append({"target": name, "reason": status.detail})
        if not targets:
            raise UserError("no engine target is installed; pip install openvino onnxruntime")

    frames, where = load_frames(args.images, bundle.manifest.image_size, args.count)
    print(f"parity: {bundle.path} ({bundle.manifest.arch}, {bundle.manifest.image_size} px), "
          f"{where}, {args.io} I/O; reference: PyTorch fp32")
    reference = Reference(bundle, frames)
    report = ParityReport(str(bundle.path), {"source": where, "count": len(frames),
                                             "io": args.io}, asdict(thresholds), skipped=skipped)
    for target in targets:
        for precision in precisions:
            start = time.perf_counter()
            try:
                built = build(BuildRequest(str(bundle.path), target, precision, args.cache_dir,
                                           args.io, args.calib))
            except UserError as exc:
                if "needs the precision converter" in str(exc):
                    report.skipped.append({"target": target, "precision": precision,
                                           "reason": str(exc)})
                    continue
                raise
            report.builds += [{"target": i.target, "network": i.network,
                               "precision": i.precision, "path": str(i.path), "size": i.size,
                               "built": i.built, "seconds": round(i.seconds, 3)}
                              for i in built.infos]
            try:
                results = check_engines(reference, target, precision, built.engines, args.io,
                                        thresholds)
            finally:
                built.close()
            report.results += results
            bad = sum(not r.passed for r in results)
            print(f"  {target} {precision}: {len(results)} output(s) checked in "
                  f"{time.perf_counter() - start:.1f} s, {bad} failed")
    if args.server:
        _check_server(args, reference, report, thresholds)
    print()
    print(report.table())
    verdict = "PASS" if report.passed else "FAIL"
    print(f"\nparity {verdict}: {sum(r.passed for r in report.results)}/{len(report.results)} "
          "outputs within thresholds")
    if report_path is not None:
        from stargan_rt.files import write_atomic

        write_atomic(report_path, json.dumps(report.to_json(), indent=2) + "\n")
        print(f"report: {report_path}")
    return 0 if report.passed else 1


def _check_server(args, reference, report, thresholds) -> None:
    """The served models against the reference, judged by the served build's precision."""
    from stargan_rt.parity import check_engines
    from stargan_rt.serve.client import remote_translator

    start = time.perf_counter()
    with remote_translator(args.model, args.server, args.server_timeout) as served:
        results = check_engines(reference, served.target, served.precision, served.engines,
                                "uint8", thresholds)
    for result in results:  # the table says where the engines ran
        result.target = f"triton:{result.target}"
    report.results += results
    bad = sum(not r.passed for r in results)
    print(f"  {args.server} ({served.target} {served.precision}): {len(results)} output(s) "
          f"checked in {time.perf_counter() - start:.1f} s, {bad} failed")
