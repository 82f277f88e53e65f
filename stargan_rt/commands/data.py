"""`stargan-rt data synth`: write the synthetic face data set (numpy + OpenCV, no downloads)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from stargan_rt.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="data sets: make the synthetic face data set",
        description="Data set tools. `data synth OUT` renders synthetic faces with visible "
                    "attributes (hair colour, smiling, eyeglasses, ...).")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    synth = actions.add_parser(
        "synth", help="render a synthetic face data set",
        description="Renders faces with hair colour (black/blond/brown[/gray]), smiling (open, "
                    "curved mouth with teeth) or neutral, eyeglasses on/off, gender, age, bangs, "
                    "lipstick; varied pose, skin tone, background and lighting. Deterministic for "
                    "a seed. celeba layout: OUT/images/*.jpg + OUT/list_attr_celeba.txt (written "
                    "last). folders layout: OUT/train/<domain>/*.png, OUT/val/<domain>/*.png + "
                    "OUT/domains.txt (written last).")
    synth.add_argument("out", type=Path, metavar="OUT", help="new or empty output directory")
    synth.add_argument("--count", type=int, default=2000, help="number of images (default 2000)")
    synth.add_argument("--image-size", type=int, default=64, help="side in pixels (default 64)")
    synth.add_argument("--layout", default="celeba",
                       help="celeba (attribute file) or folders (train/<domain>/); default celeba")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--domains",
                       help="folders: the exclusive domains, e.g. black_hair,blond_hair,brown_hair "
                            "(default), neutral,smiling, no_glasses,glasses, female,male; "
                            "celeba: the hair colours to draw (default black_hair,blond_hair,"
                            "brown_hair; gray_hair is available)")
    synth.add_argument("--val-fraction", type=float, default=0.1,
                       help="folders: fraction of each domain written to val/ (default 0.1)")
    synth.add_argument("--format", choices=("jpg", "png"),
                       help="image format (default: jpg for celeba, png for folders)")
    synth.add_argument("--subtlety", type=float, default=0.0,
                       help="0 (default): bold smiles and heavy browline glasses, easy to learn; "
                            "up to 1: smaller smiles and thin rims (harder, closer to real photos)")
    synth.add_argument("--workers", type=int,
                       help="render in this many processes (default: CPU count, at most 4)")
    synth.add_argument("--haar-check", type=int, default=0, metavar="N",
                       help="also render N extra faces at 256 px and print how many OpenCV's "
                            "frontal Haar cascade detects")
    synth.add_argument("--preview", type=Path, metavar="PNG",
                       help="also write a grid of up to 32 of the images (per domain for folders)")
    synth.add_argument("--json", action="store_true", help="print the summary as JSON")
    synth.set_defaults(func=run_synth)


def run_synth(args) -> int:
    from stargan_rt.synth import haar_detection_rate, make_face, synthesize

    if args.haar_check < 0:
        raise UserError(f"--haar-check must be >= 0, got {args.haar_check}")
    last = [-1]

    def progress(done: int, total: int) -> None:
        percent = done * 100 // total
        if sys.stderr.isatty() and (percent != last[0] or done == total):
            last[0] = percent
            print(f"\r  {done}/{total} images", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    summary = synthesize(args.out, count=args.count, image_size=args.image_size,
                         layout=args.layout, seed=args.seed, domains=args.domains,
                         val_fraction=args.val_fraction, image_format=args.format,
                         workers=args.workers, subtlety=args.subtlety,
                         progress=progress)
    if args.preview:
        write_preview(args.preview, args.out)
        summary["preview"] = str(args.preview)
    if args.haar_check:
        faces = (make_face(args.seed + 1_000_003, i, 256)[1] for i in range(args.haar_check))
        summary["haar_detection_rate_256px"] = haar_detection_rate(faces)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    rate = summary["count"] / max(summary["seconds"], 1e-9)
    print(f"wrote {summary['count']} {summary['image_size']}px images ({summary['layout']} layout, "
          f"seed {summary['seed']}) to {summary['out']} in {summary['seconds']:.1f} s "
          f"({rate:.0f} images/s)")
    if summary["layout"] == "celeba":
        positives = ", ".join(f"{k} {v}" for k, v in summary["positives"].items() if v)
        print(f"  positives: {positives}")
    else:
        for split, domains in summary["splits"].items():
            print(f"  {split}: " + ", ".join(f"{d} {n}" for d, n in domains.items()))
    if args.preview:
        print(f"  preview: {args.preview}")
    if "haar_detection_rate_256px" in summary:
        print(f"  Haar frontal-face detection on {args.haar_check} extra faces at 256 px: "
              f"{summary['haar_detection_rate_256px']:.0%}")
    return 0


def write_preview(path: Path, out: Path, count: int = 32, per_row: int = 8) -> None:
    """Tile the first images: CelebA layout in file order, folders round-robin over domains."""
    import numpy as np

    from stargan_rt.imaging import read_image, write_image

    if (out / "images").is_dir():
        files = sorted((out / "images").iterdir())[:count]
    else:
        per_domain = [sorted(d.iterdir()) for d in sorted((out / "train").iterdir())]
        files = [f for group in zip(*per_domain) for f in group][:count]
    tiles = [read_image(f) for f in files]
    if not tiles:
        return
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % per_row)
    rows = [np.concatenate(tiles[i:i + per_row], axis=1) for i in range(0, len(tiles), per_row)]
    write_image(path, np.concatenate(rows, axis=0))
