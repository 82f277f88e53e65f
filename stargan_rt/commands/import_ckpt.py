"""`stargan-rt import CKPT --out BUNDLE`: official checkpoints -> bundle."""
from __future__ import annotations

from pathlib import Path

from stargan_rt import options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import", help="import an official StarGAN checkpoint into a bundle",
        description="Import {iter}-G.ckpt (v1; the matching -D.ckpt beside it is picked up) or "
                    "{iter:06d}_nets_ema.ckpt (v2) into a bundle directory. Shapes tell the "
                    "architecture; domain names must be given.")
    parser.add_argument("ckpt", type=Path, help="checkpoint file")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--arch", choices=["v1", "v2"], help="expected architecture (checked)")
    parser.add_argument("--domains", help="domain / attribute names in training order, "
                        "comma-separated (e.g. Black_Hair,Blond_Hair,Brown_Hair,Male,Young)")
    parser.add_argument("--image-size", type=options.IMAGE_SIZE, help="image size (inferred where possible)")
    parser.add_argument("--w-hpf", type=options.W_HPF, help="v2 high-pass weight (inferred; 1 for "
                        "CelebA-HQ, 0 for AFHQ)")
    parser.add_argument("--fan", type=Path, help="FAN weights (released wing.ckpt) for v2 "
                        "models with w_hpf > 0 whose checkpoint has no 'fan' entry")
    parser.add_argument("--discriminator", type=Path, help="v1 -D.ckpt, when not beside the "
                        "-G.ckpt")
    parser.add_argument("--classes", action="store_true", help="v1: the domains are exclusive "
                        "classes (RaFD-style), so --domain X means X on and the others off; "
                        "default: independent CelebA attributes")
    parser.add_argument("--name", default="", help="model name recorded in the manifest")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.set_defaults(func=run)


def run(args) -> int:
    from stargan_rt.importer import ImportOptions, import_checkpoint

    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    options = ImportOptions(arch=args.arch, domains=domains, image_size=args.image_size,
                            w_hpf=args.w_hpf, fan=args.fan, discriminator=args.discriminator,
                            classes=args.classes, name=args.name)
    bundle = import_checkpoint(args.ckpt, args.out, options, overwrite=args.force)
    m = bundle.manifest
    print(f"imported StarGAN {m.arch} ({m.image_size} px) into {bundle.path}")
    print(f"  domains: {', '.join(m.domain_names)}")
    networks = (f"{name} ({entry['parameters']:,} params)" for name, entry in m.networks.items())
    print(f"  networks: {', '.join(networks)}")
    for note in options.notes:
        print(f"  note: {note}")
    return 0
