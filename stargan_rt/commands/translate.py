"""`stargan-rt translate`: image files through the PyTorch reference path."""
from __future__ import annotations

from pathlib import Path

from stargan_rt import options
from stargan_rt.commands.server_options import add_server_options
from stargan_rt.defaults import MODEL_HELP
from stargan_rt.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "translate", help="translate image files with the PyTorch reference model (or a Triton "
        "server's engines)",
        description="Writes one PNG per input into --out, named after the input's stem.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files")
    parser.add_argument("--model", help=f"{MODEL_HELP}; default demo-v1")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--domain", help="target domain / attribute (e.g. smile, Blond_Hair)")
    target.add_argument("--labels", help="v1: full target vector, e.g. Black_Hair=0,Smiling=1,...")
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--seed", type=options.SEED, help="v2: latent seed for the style (default 0)")
    style.add_argument("--ref", type=Path, help="v2: reference image for the style")
    parser.add_argument("--psi", type=options.PSI, default=1.0,
                        help="v2: truncation toward the domain's mean style (1 = none)")
    add_server_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from stargan_rt.defaults import resolve_model
    from stargan_rt.imaging import fit_to_model, read_image, write_image

    stems = [p.stem for p in args.inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise UserError(f"inputs share the file stem(s) {', '.join(duplicates)}; outputs are named "
                        "after the stem, so translate them into separate --out directories")
    if args.server:
        from stargan_rt.serve.client import remote_translator

        translator = remote_translator(args.model, args.server, args.server_timeout)
    else:
        from stargan_rt.reference import TorchTranslator  # imports torch

        translator = TorchTranslator(resolve_model(args.model))
    if translator.arch == "v1":
        if args.seed is not None or args.ref is not None or args.psi != 1.0:
            raise UserError("--seed/--ref/--psi apply to StarGAN v2 models; this is v1")
        if args.labels:
            translator.set_labels(translator.bundle.parse_labels(args.labels))
        elif args.domain:
            translator.set_domain(args.domain)
        else:
            raise UserError(f"give --domain NAME or --labels (domains: "
                            f"{', '.join(translator.domains)})")
    else:
        if args.labels:
            raise UserError("--labels applies to StarGAN v1 models; give --domain for v2")
        if not args.domain:
            raise UserError(f"give --domain NAME (domains: {', '.join(translator.domains)})")
        translator.set_domain(args.domain)
        translator.set_style(seed=args.seed, psi=args.psi,
                             ref_bgr=read_image(args.ref) if args.ref else None)
    # Decode everything first: a bad input fails the run before any output is written.
    crops = np.stack([fit_to_model(read_image(p), translator.image_size) for p in args.inputs])
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a directory for the outputs")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {args.out}: cannot create the directory "
                        f"({exc.strerror or exc}); choose a writable location") from None
    for path, crop in zip(args.inputs, crops):
        out = translator(crop[None])[0]
        write_image(args.out / f"{path.stem}.png", out)
        print(f"{path} -> {args.out / (path.stem + '.png')}")
    return 0
