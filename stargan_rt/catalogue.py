"""Named models: the catalogue of official pretrained models, the model home they are pulled
into, and the one rule that turns a ``--model`` value into a bundle directory.

The catalogue is data (``assets/catalogue.json``); ``$STARGAN_RT_CATALOGUE`` names an extra JSON
file of the same form whose entries add to or replace the built-in ones (an organisation's own
mirror, or its own models). Pulled models live in ``$STARGAN_RT_HOME`` (default: a per-user data
folder), one bundle directory per name. No torch here: a deployed device resolves names without it.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stargan_rt.errors import UserError

CATALOGUE_FILE = Path(__file__).resolve().parent / "assets" / "catalogue.json"
HOME_ENV = "STARGAN_RT_HOME"
CATALOGUE_ENV = "STARGAN_RT_CATALOGUE"
DEMO_NAMES = ("demo-v1", "demo-v2")
FILE_KINDS = ("torch", "zip")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass
class FileSpec:
    """One file an entry downloads: its official name, where from, and what it must be."""
    name: str
    kind: str                               # "torch" (torch.save output) or "zip" (also .npz)
    urls: list[str]
    size: int | None = None
    sha256: str | None = None
    members: list[str] = field(default_factory=list)  # zip archives: the files to take out
    keep: bool = False                      # copied into the bundle as it is (not imported)


@dataclass
class Entry:
    name: str
    title: str
    arch: str
    image_size: int
    domains: list[str]
    licence: str
    files: list[FileSpec]
    importer: dict[str, Any]
    framing: dict[str, Any] = field(default_factory=dict)
    licence_url: str = ""
    home_page: str = ""
    framing_note: str = ""
    can: str = ""
    cannot: str = ""

    @property
    def non_commercial(self) -> bool:
        return "NC" in self.licence.split("(")[0]


def _entry(name: str, data: Any, where: str) -> Entry:
    def bad(what: str) -> UserError:
        return UserError(f"{where}: catalogue entry {name!r}: {what}; fix the catalogue file")

    if not NAME_PATTERN.match(name):
        raise bad("names are lower-case letters, digits, '.', '_' and '-'")
    if not isinstance(data, dict):
        raise bad("expected a JSON object")
    try:
        files = []
        for item in data["files"]:
            spec = FileSpec(name=item["name"], kind=item["kind"], urls=list(item.get("urls", [])),
                            size=item.get("size"), sha256=item.get("sha256"),
                            members=list(item.get("members", [])), keep=bool(item.get("keep")))
            if spec.kind not in FILE_KINDS:
                raise bad(f"file {spec.name!r} has kind {spec.kind!r}, expected one of "
                          f"{', '.join(FILE_KINDS)}")
            if "/" in spec.name or "\\" in spec.name or spec.name in ("", ".", ".."):
                raise bad(f"file name {spec.name!r} must be a plain file name")
            if spec.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", spec.sha256):
                raise bad(f"file {spec.name!r}: sha256 must be 64 lower-case hex digits")
            files.append(spec)
        entry = Entry(name=name, title=data["title"], arch=data["arch"],
                      image_size=int(data["image_size"]), domains=list(data["domains"]),
                      licence=data["licence"], files=files, importer=dict(data["import"]),
                      framing=dict(data.get("framing", {})),
                      licence_url=data.get("licence_url", ""),
                      home_page=data.get("home_page", ""),
                      framing_note=data.get("framing_note", ""), can=data.get("can", ""),
                      cannot=data.get("cannot", ""))
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"incomplete or malformed ({exc!r})")
    if entry.arch not in ("v1", "v2"):
        raise bad(f"arch {entry.arch!r}, expected v1 or v2")
    if not files:
        raise bad("lists no files")
    available = {m for f in files for m in f.members} | {f.name for f in files if f.kind == "torch"}
    for role in ("ckpt", "discriminator", "fan"):
        wanted = entry.importer.get(role)
        if wanted is not None and wanted not in available:
            raise bad(f"import {role} {wanted!r} is none of its files or archive members")
    if "ckpt" not in entry.importer:
        raise bad("import names no ckpt")
    return entry


def _read(path: Path) -> dict[str, Entry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable catalogue ({exc}); expected a JSON file like "
                        f"{CATALOGUE_FILE.name} in the stargan_rt package")
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UserError(f"{path}: a catalogue is a JSON object with a \"models\" object; "
                        "fix the file")
    return {name: _entry(name, value, str(path)) for name, value in data["models"].items()}


def load_catalogue() -> dict[str, Entry]:
    """The built-in entries, plus (replacing same-named ones) those of $STARGAN_RT_CATALOGUE."""
    entries = _read(CATALOGUE_FILE)
    extra = os.environ.get(CATALOGUE_ENV)
    if extra:
        entries.update(_read(Path(extra).expanduser()))
    for name in DEMO_NAMES:
        entries.pop(name, None)  # the demo names always mean the built-in demo models
    return entries


def model_home() -> Path:
    """Where pulled models live: $STARGAN_RT_HOME, else the per-user data folder."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "stargan-rt" / "models"


def installed_path(name: str) -> Path:
    return model_home() / name


def is_installed(name: str) -> bool:
    return (installed_path(name) / "manifest.json").is_file()


def installed_names() -> list[str]:
    """Bundles in the model home (pulled ones and any others placed there), by name."""
    home = model_home()
    try:
        return sorted(p.name for p in home.iterdir()
                      if not p.name.startswith(".") and (p / "manifest.json").is_file())
    except OSError:
        return []


def _looks_like_path(value: str) -> bool:
    return ("/" in value or os.sep in value or value.startswith((".", "~"))
            or bool(os.altsep and os.altsep in value))


def resolve_name(value: str) -> Path:
    """A --model value that is not a demo name: an existing path, else an installed name; a
    catalogue name that is not installed, or an unknown name, is a clear error."""
    path = Path(value).expanduser()
    if path.exists() or _looks_like_path(value):
        return path
    if is_installed(value):
        return installed_path(value)
    catalogue = load_catalogue()
    if value in catalogue:
        raise UserError(f"model {value!r} ({catalogue[value].title}) is not installed in "
                        f"{model_home()}; get it with `stargan-rt pull {value}` (or pass a bundle "
                        "directory)")
    known = list(DEMO_NAMES) + [f"{n} (installed)" for n in installed_names()]
    known += [f"{n} (stargan-rt pull {n})" for n in catalogue if not is_installed(n)]
    raise UserError(f"unknown model {value!r}: no bundle directory of that name here and no "
                    f"model of that name; known names: {', '.join(known)}; or pass a bundle "
                    "directory (`stargan-rt models` lists them all)")
