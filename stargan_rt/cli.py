"""`stargan-rt` command line. Each verb lives in its own module under stargan_rt/commands/
and exposes ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys

from stargan_rt import __version__
from stargan_rt.errors import UserError

# Verb modules, in the order `--help` lists them.
COMMAND_MODULES = [
    "stargan_rt.commands.info",
    "stargan_rt.commands.import_ckpt",
    "stargan_rt.commands.translate",
    "stargan_rt.commands.webcam",
    "stargan_rt.commands.export",
    "stargan_rt.commands.build",
    "stargan_rt.commands.parity",
    "stargan_rt.commands.train",
    "stargan_rt.commands.data",
    "stargan_rt.commands.eval",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stargan-rt",
        description="StarGAN v1/v2 translation: import, train, build engines, stream live.")
    parser.add_argument("--version", action="version", version=f"stargan-rt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"stargan-rt {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"stargan-rt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
