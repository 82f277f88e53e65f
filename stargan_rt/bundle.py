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
import math
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
        """A manifest validated against the schema (validate_manifest); bad fields are a
        UserError naming the field, what it holds and what is allowed."""
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise UserError(f"{where}: manifest has no integer schema_version; "
                            "this is not a stargan-rt bundle (re-create it with `stargan-rt import`)")
        if version > SCHEMA_VERSION:
            raise UserError(f"{where}: bundle schema version {version} is newer than this "
                            f"stargan-rt understands ({SCHEMA_VERSION}); upgrade stargan-rt")
        validate_manifest(data, where)
        domains = [Domain(d["name"], list(d.get("aliases", []))) for d in data["domains"]]
        return cls(arch=data["arch"], image_size=data["image_size"], domains=domains,
                   config=dict(data["config"]), networks={k: dict(v) for k, v in
                                                          data["networks"].items()},
                   source=dict(data.get("source") or {}), name=data.get("name", ""),
                   schema_version=version, created=data.get("created", ""))


# -- manifest schema ---------------------------------------------------------------------------
# Every field a later stage uses, with its type and range. Bounds are generous for real models
# (official v1: conv_dim 64, repeat_num 6, 128 px; v2: 256 px, max_conv_dim 512) and keep a
# hostile manifest from building networks that would not fit in memory.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024
_INT_FIELDS = {
    "v1": {"conv_dim": (1, 1024, True), "c_dim": (1, 256, True), "repeat_num": (0, 32, True),
           "d_conv_dim": (1, 1024, False), "d_repeat_num": (1, 8, False)},
    "v2": {"style_dim": (1, 4096, True), "latent_dim": (1, 4096, True),
           "max_conv_dim": (1, 4096, True), "dim_in": (1, 4096, False),
           "hidden_dim": (1, 8192, False)},
}
_FLOAT_FIELDS = {"w_hpf": (0.0, 100.0), "crop_scale": (1.0, 5.0), "crop_shift": (-1.0, 1.0)}
V1_LABEL_KINDS = ("attributes", "classes", "joint")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIX = "fix the manifest or re-create the bundle with `stargan-rt import` or `stargan-rt train`"


def _bad(where: str, field_name: str, value, expected: str) -> UserError:
    shown = json.dumps(value)[:60] if _jsonable(value) else type(value).__name__
    return UserError(f"{where}: manifest field {field_name} is {shown}, expected {expected}; "
                     f"{_FIX}")


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(where, name, value, low, high):
    if not _is_int(value) or not low <= value <= high:
        raise _bad(where, name, value, f"an integer from {low} to {high}")


def validate_manifest(data: Mapping[str, Any], where: str) -> None:
    """Check every manifest field before anything uses it: types, ranges, cross-field rules
    (c_dim = number of domains, image size vs downsampling), network entries (known names,
    file names that stay inside the bundle directory, sha256). Raises a one-line UserError
    naming the first bad field."""
    arch = data.get("arch")
    if arch not in REQUIRED_NETWORKS:
        raise _bad(where, "arch", arch, "\"v1\" or \"v2\"")
    size = data.get("image_size")
    _check_int(where, "image_size", size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    if arch == "v2" and size & (size - 1):
        raise _bad(where, "image_size", size, "a power of two for StarGAN v2 (64, 128, 256, ...)")
    if arch == "v1" and size % 4:
        raise _bad(where, "image_size", size, "a multiple of 4 for StarGAN v1 (the generator "
                   "downsamples twice)")
    for key in ("name", "created"):
        if key in data and not isinstance(data[key], str):
            raise _bad(where, key, data[key], "a string")
    if "source" in data and not isinstance(data["source"], (dict, type(None))):
        raise _bad(where, "source", data["source"], "an object")
    domains = data.get("domains")
    if not isinstance(domains, list) or not domains or len(domains) > 256:
        raise _bad(where, "domains", domains, "a list of 1 to 256 {\"name\": ...} objects")
    seen = set()
    for i, domain in enumerate(domains):
        if not isinstance(domain, dict):
            raise _bad(where, f"domains[{i}]", domain, "an object with a \"name\"")
        name = domain.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise _bad(where, f"domains[{i}].name", name, "a non-empty string (at most 100 "
                       "characters)")
        if _normalise(name) in seen:
            raise _bad(where, f"domains[{i}].name", name, "a name no other domain has "
                       "(matching is case-insensitive)")
        seen.add(_normalise(name))
        aliases = domain.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise _bad(where, f"domains[{i}].aliases", aliases, "a list of strings")
    config = data.get("config")
    if not isinstance(config, dict):
        raise _bad(where, "config", config, "an object with the networks' settings")
    for key, (low, high, required) in _INT_FIELDS[arch].items():
        if key not in config or (key == "dim_in" and config[key] is None):
            if required:
                raise _bad(where, f"config.{key}", None, f"an integer from {low} to {high} "
                           "(missing)")
            continue
        _check_int(where, f"config.{key}", config[key], low, high)
    for key, (low, high) in _FLOAT_FIELDS.items():
        if key in config:
            value = config[key]
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or not low <= value <= high):
                raise _bad(where, f"config.{key}", value, f"a number from {low:g} to {high:g}")
    if arch == "v1":
        if config["c_dim"] != len(domains):
            raise _bad(where, "config.c_dim", config["c_dim"], f"the number of domains "
                       f"({len(domains)})")
        if config.get("labels", "attributes") not in V1_LABEL_KINDS:
            raise _bad(where, "config.labels", config.get("labels"),
                       " or ".join(f'"{k}"' for k in V1_LABEL_KINDS))
    elif "w_hpf" not in config:
        raise _bad(where, "config.w_hpf", None, "a number >= 0 (missing)")
    networks = data.get("networks")
    if not isinstance(networks, dict):
        raise _bad(where, "networks", networks, "an object {network: {\"file\": ...}}")
    known = REQUIRED_NETWORKS[arch] + OPTIONAL_NETWORKS[arch]
    for name in REQUIRED_NETWORKS[arch]:
        if name not in networks:
            raise UserError(f"{where}: {arch} bundle lacks the {name} network (manifest field "
                            "networks); re-import the checkpoint that contains it")
    files = set()
    for name, entry in networks.items():
        if name not in known:
            raise _bad(where, f"networks.{name}", "", f"only {', '.join(known)} in a {arch} "
                       "bundle")
        if not isinstance(entry, dict):
            raise _bad(where, f"networks.{name}", entry, "an object with file and sha256")
        file_name = entry.get("file")
        if not _plain_file_name(file_name):
            raise _bad(where, f"networks.{name}.file", file_name, "a plain file name inside the "
                       "bundle directory (no folders, no absolute path, no '..')")
        if file_name in files or file_name == MANIFEST:
            raise _bad(where, f"networks.{name}.file", file_name, "a file no other entry uses")
        files.add(file_name)
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _bad(where, f"networks.{name}.sha256", digest, "64 lower-case hex digits")
        if "parameters" in entry:
            _check_int(where, f"networks.{name}.parameters", entry["parameters"], 0, 10**10)
    if arch == "v1" and "discriminator" in networks:
        for key in ("d_conv_dim", "d_repeat_num"):
            if key not in config:
                low, high, _ = _INT_FIELDS["v1"][key]
                raise _bad(where, f"config.{key}", None, f"an integer from {low} to {high} "
                           "(missing; the discriminator needs it)")
        d_repeat = config["d_repeat_num"]
        if size % 2 ** d_repeat:
            raise _bad(where, "image_size", size, f"a multiple of 2**d_repeat_num "
                       f"({2 ** d_repeat}) for the discriminator")


def _plain_file_name(name) -> bool:
    """A file name that cannot leave the bundle directory: no separators, not '.' or '..'."""
    return (isinstance(name, str) and 0 < len(name) <= 200 and name not in (".", "..")
            and "/" not in name and "\\" not in name and "\0" not in name
            and not os.path.isabs(name) and not re.match(r"[A-Za-z]:", name))


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
        return cls(path, Manifest.from_dict(data, str(path)))

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
        path = self.path / self.manifest.networks[network]["file"]
        # the schema allows plain file names only; a symlink must not lead outside either
        try:
            inside = path.resolve().is_relative_to(self.path.resolve())
        except OSError:
            inside = False
        if not inside:
            raise UserError(f"{path}: manifest field networks.{network}.file leads outside the "
                            f"bundle directory {self.path}; weights are read only from inside "
                            "it: re-create the bundle")
        return path

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
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        manifest.networks = {}
        for name, state in state_dicts.items():
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
            file_name = f"{name}.safetensors"
            save_file(tensors, str(tmp / file_name), metadata={"network": name})
            _verify_written(tmp / file_name, tensors)
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
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise UserError(f"{out}: cannot write the bundle ({_write_failure(exc)}); nothing "
                            "was written: free space or choose another --out") from None
        raise
    return Bundle.open(out)


def _verify_written(path: Path, tensors: Mapping[str, Any]) -> None:
    """Read back the header of a weights file just written: every tensor, with its shape."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path.name}: the weights just written do not read back ({exc}); "
                        "nothing was written: check the disk") from None
    if shapes != {k: tuple(v.shape) for k, v in tensors.items()}:
        raise UserError(f"{path.name}: the weights just written read back differently; nothing "
                        "was written: check the disk")


def _write_failure(exc: OSError) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "the folder is not writable"
    return exc.strerror or str(exc)


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
