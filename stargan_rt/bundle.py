"""A model on disk: ``manifest.json`` plus one safetensors file per network.

Every later stage (export, build, translate, webcam, parity) reads bundles; nothing reads raw
checkpoints except the importer. Bundles are written into a sibling temp directory and renamed
into place, so a crash or a bad input never leaves a half-written bundle. This module does not
import torch: a deployed device reads manifests without it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

# Networks each architecture can hold; the first ones are required.
REQUIRED_NETWORKS = {"v1": ("generator",), "v2": ("generator", "mapping_network", "style_encoder")}
OPTIONAL_NETWORKS = {"v1": ("discriminator",), "v2": ("discriminator", "fan")}

HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


# v1 label vectors, manifest.config["labels"]: "attributes" (CelebA: independent binary
# attributes; the default), "classes" (RaFD-style exclusive classes) or "joint" (CelebA + RaFD
# with the mask vector: only full --labels vectors make sense).


def v1_target_labels(manifest: "Manifest", index: int, source_labels, zeros):
    """The one v1 target rule, used by the reference and the runtime translators alike.

    classes: the target class on, the others off (exact; nothing to estimate).
    attributes: the source's own attributes (``source_labels()``: the discriminator's classifier,
    which raises a clear error when the bundle has none) with ``index`` turned on.
    ``zeros()`` makes an (N, c_dim) zero array of the caller's kind (numpy or torch)."""
    if manifest.config.get("labels", "attributes") == "classes":
        labels = zeros()
        labels[:, index] = 1
        return labels
    return turn_attribute_on(source_labels(), manifest.domain_names, index)


def check_domain_target(bundle: "Bundle") -> None:
    """Refuse a --domain target that v1_target_labels cannot honour: an attribute model without
    the discriminator that estimates each face's own attributes."""
    manifest = bundle.manifest
    kind = manifest.config.get("labels", "attributes")
    if manifest.arch == "v1" and kind == "joint":
        raise UserError(f"{bundle.path} is a joint CelebA+RaFD model: give its full label vector, "
                        "mask included, with --labels A=1,B=0,...")
    if manifest.arch == "v1" and kind == "attributes" and not bundle.has("discriminator"):
        raise UserError(
            f"{bundle.path} has no discriminator to estimate each face's own attributes, which "
            "a --domain target keeps; give the full target vector with --labels A=1,B=0,..., "
            "or re-import with the -D.ckpt (or with --classes when its domains are exclusive "
            "classes, RaFD-style)")


def turn_attribute_on(labels, domain_names: list[str], index: int):
    """v1 target rule, in place on (N, c_dim) labels (numpy or torch): attribute ``index`` on,
    the other hair colours off when it is one (they are exclusive), every other attribute kept."""
    if domain_names[index] in HAIR_COLOURS:
        for other, name in enumerate(domain_names):
            if name in HAIR_COLOURS:
                labels[:, other] = 0
    labels[:, index] = 1
    return labels

# Short names people type for common domains; matched case-insensitively like the names.
_SYNONYMS = {
    "smiling": ["smile", "smiles", "happy"],
    "eyeglasses": ["glasses", "specs"],
    "black_hair": ["black"],
    "blond_hair": ["blond", "blonde"],
    "brown_hair": ["brown"],
    "gray_hair": ["gray", "grey", "grey_hair"],
    "male": ["man"],
    "female": ["woman"],
    "young": ["youth"],
    "neutral": ["none", "plain"],
}


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def default_aliases(name: str) -> list[str]:
    key = _normalise(name)
    aliases = list(_SYNONYMS.get(key, []))
    if key.endswith("_hair") and key[:-5] not in aliases:
        aliases.append(key[:-5])
    return [a for a in aliases if a != key]


@dataclass
class Domain:
    name: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    arch: str                      # "v1" | "v2"
    image_size: int
    domains: list[Domain]
    config: dict[str, Any]         # constructor arguments of the networks
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> file, sha256, ...
    source: dict[str, Any] = field(default_factory=dict)  # where the weights came from
    name: str = ""
    schema_version: int = SCHEMA_VERSION
    created: str = ""

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "Manifest":
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise UserError(f"{where}: manifest has no integer schema_version; "
                            "this is not a stargan-rt bundle (re-create it with `stargan-rt import`)")
        if version > SCHEMA_VERSION:
            raise UserError(f"{where}: bundle schema version {version} is newer than this "
                            f"stargan-rt understands ({SCHEMA_VERSION}); upgrade stargan-rt")
        try:
            domains = [Domain(d["name"], list(d.get("aliases", []))) for d in data["domains"]]
            manifest = cls(arch=data["arch"], image_size=int(data["image_size"]), domains=domains,
                           config=dict(data["config"]), networks=dict(data["networks"]),
                           source=dict(data.get("source", {})), name=data.get("name", ""),
                           schema_version=version, created=data.get("created", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: manifest is incomplete or malformed ({exc!r}); "
                            "re-create the bundle with `stargan-rt import` or `stargan-rt train`")
        if manifest.arch not in REQUIRED_NETWORKS:
            raise UserError(f"{where}: unknown architecture {manifest.arch!r}; expected v1 or v2")
        return manifest


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    """A bundle directory opened for reading."""

    def __init__(self, path: str | os.PathLike, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Bundle":
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            hint = (" (that is a file; pass the bundle directory)" if path.is_file() else "")
            raise UserError(f"{path}: not a stargan-rt bundle, no {MANIFEST} found{hint}; "
                            "create one with `stargan-rt import CKPT --out DIR` or `stargan-rt train`")
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{manifest_path}: unreadable manifest ({exc}); re-create the bundle")
        if not isinstance(data, dict):
            raise UserError(f"{manifest_path}: manifest is not a JSON object; re-create the bundle")
        manifest = Manifest.from_dict(data, str(path))
        for name in REQUIRED_NETWORKS[manifest.arch]:
            if name not in manifest.networks:
                raise UserError(f"{path}: {manifest.arch} bundle lacks the {name} network; "
                                "re-import the checkpoint that contains it")
        return cls(path, manifest)

    # -- domains ---------------------------------------------------------------------------
    def domain_index(self, name: str) -> int:
        """Index of a domain by name or alias, case-insensitively (``smile`` -> ``Smiling``)."""
        wanted = _normalise(name)
        for index, domain in enumerate(self.manifest.domains):
            if wanted == _normalise(domain.name) or wanted in map(_normalise, domain.aliases):
                return index
        known = ", ".join(f"{d.name} ({'/'.join(d.aliases)})" if d.aliases else d.name
                          for d in self.manifest.domains)
        raise UserError(f"unknown domain {name!r} for model {self.path}; known domains: {known}")

    def parse_labels(self, text: str) -> list[float]:
        """v1 ``--labels A=1,B=0,...``: the full target vector, each attribute named by its name or
        an alias (as ``domain_index`` matches them)."""
        values: list[float | None] = [None] * len(self.manifest.domains)
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep or value.strip() not in ("0", "1"):
                raise UserError(f"--labels item {item!r} is not NAME=0 or NAME=1")
            values[self.domain_index(name)] = float(value)
        missing = [d for d, v in zip(self.manifest.domain_names, values) if v is None]
        if missing:
            raise UserError(f"--labels gives the full target vector; missing: {', '.join(missing)} "
                            "(or use --domain NAME to change one attribute and keep the rest)")
        return values

    # -- networks --------------------------------------------------------------------------
    def has(self, network: str) -> bool:
        return network in self.manifest.networks

    def weights_path(self, network: str) -> Path:
        if not self.has(network):
            raise UserError(f"{self.path}: the bundle has no {network} network "
                            f"(it has: {', '.join(self.manifest.networks)})")
        return self.path / self.manifest.networks[network]["file"]

    def verify(self, network: str) -> None:
        """Check a weights file against the hash in the manifest."""
        path = self.weights_path(network)
        if not path.is_file():
            raise UserError(f"{path}: weights file missing from the bundle; re-create the bundle")
        expected = self.manifest.networks[network].get("sha256")
        if expected and sha256_file(path) != expected:
            raise UserError(f"{path}: weights do not match the manifest's sha256 (file changed or "
                            "corrupt); re-create the bundle")

    def state_dict(self, network: str):
        """The network's weights as torch tensors (needs torch)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self.verify(network)
        try:
            return load_file(str(self.weights_path(network)))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{self.weights_path(network)}: unreadable weights ({exc}); "
                            "re-create the bundle")

    @property
    def content_hash(self) -> str:
        """Identifies the bundle's contents: hash of the manifest's network hashes and config."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.manifest.config, sort_keys=True).encode())
        for name in sorted(self.manifest.networks):
            digest.update(f"{name}:{self.manifest.networks[name].get('sha256', '')}".encode())
        return digest.hexdigest()[:16]


def write_bundle(out: str | os.PathLike, manifest: Manifest, state_dicts: Mapping[str, Any],
                 overwrite: bool = False) -> Bundle:
    """Write weights and manifest to ``out`` atomically: temp directory, fsync, rename."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --force to replace it")
    missing = [n for n in REQUIRED_NETWORKS[manifest.arch] if n not in state_dicts]
    if missing:
        raise UserError(f"cannot write a {manifest.arch} bundle without: {', '.join(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        manifest.networks = {}
        for name, state in state_dicts.items():
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
            file_name = f"{name}.safetensors"
            save_file(tensors, str(tmp / file_name), metadata={"network": name})
            manifest.networks[name] = {
                "file": file_name,
                "sha256": sha256_file(tmp / file_name),
                "parameters": int(sum(t.numel() for k, t in tensors.items()
                                      if not _is_buffer_key(k))),
            }
        manifest.schema_version = SCHEMA_VERSION
        manifest.created = manifest.created or _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds")
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        for entry in tmp.iterdir():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle.open(out)


def set_config(path: str | os.PathLike, **values: Any) -> Bundle:
    """Add or change entries of a bundle's manifest config on disk (atomically), e.g. the crop
    framing (``crop_scale``, ``crop_shift``) of the faces it was trained on."""
    bundle = Bundle.open(path)
    bundle.manifest.config.update(values)
    write_atomic(bundle.path / MANIFEST, bundle.manifest.to_json())
    return Bundle.open(bundle.path)


def _is_buffer_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in {"running_mean", "running_var", "num_batches_tracked",
                                      "filter"}


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing target is moved aside first and removed after."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
