"""`stargan-rt` command line. Each verb lives in its own module and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``. The runtime's
verbs are under stargan_rt/commands/; other packages add theirs as entry points of the group
``stargan_rt.commands`` (the training verbs: training/stargan_train/commands/), found at start."""
from __future__ import annotations

import argparse
import errno
import importlib
import re
import sys
from importlib.metadata import entry_points

from stargan_rt import __version__
from stargan_rt.errors import UserError

# Verb modules, in the order `--help` lists them.
COMMAND_MODULES = [
    "stargan_rt.commands.info",
    "stargan_rt.commands.import_ckpt",
    "stargan_rt.commands.pull",
    "stargan_rt.commands.models",
    "stargan_rt.commands.translate",
    "stargan_rt.commands.webcam",
    "stargan_rt.commands.export",
    "stargan_rt.commands.build",
    "stargan_rt.commands.parity",
    "stargan_rt.commands.serve",
    "stargan_rt.commands.data",
    "stargan_rt.commands.bench",
]
# Entry-point group other packages register their verb modules in.
PLUGIN_GROUP = "stargan_rt.commands"


def command_modules() -> list:
    """The verb modules: this package's, then the discovered ones (in name order). A discovered
    verb whose package cannot be imported here (a device without the training stage) is left
    out."""
    modules = [importlib.import_module(name) for name in COMMAND_MODULES]
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            modules.append(entry.load())
        except ImportError:
            continue
    return modules


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong and where to look), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


# Write failures that are the user's environment, not a bug: one line, exit 2.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
               errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def disk_error_line(exc: OSError) -> str:
    where = exc.filename or "a file"
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EFBIG: "the file is too large for this file system (or a size limit)",
           errno.EROFS: "the file system is read-only"}.get(exc.errno, exc.strerror or str(exc))
    return f"cannot write {where}: {why}; free space or choose a writable location"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="stargan-rt",
        description="StarGAN v1/v2 translation: import, train, build engines, stream live.")
    parser.add_argument("--version", action="version", version=f"stargan-rt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=OneLineParser)
    for module in command_modules():
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (one line, see OneLineParser), --help, --version
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"stargan-rt {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        print(f"stargan-rt {args.command}: error: {disk_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stargan-rt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
