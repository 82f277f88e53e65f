"""Import official StarGAN checkpoints into bundles.

Reads ``{iter}-G.ckpt`` (+ the matching ``-D.ckpt``) for v1 and ``{iter:06d}_nets_ema.ckpt`` for
v2 with ``torch.load(weights_only=True)`` only: a checkpoint that needs arbitrary pickled objects
is refused without running them. Everything the weights' shapes and keys tell (c_dim, number of
domains, w_hpf, image size) is inferred; only domain names must be given.
"""
from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stargan_rt.bundle import Domain, Manifest, default_aliases, sha256_file, write_bundle
from stargan_rt.errors import UserError
from stargan_rt.models.build import build_network
from stargan_rt.models.v2 import default_dim_in

V1_DEFAULT_IMAGE_SIZE = 128  # official CelebA setting; a G-only checkpoint cannot tell its size
V2_NETWORKS = ("generator", "mapping_network", "style_encoder")


@dataclass
class ImportOptions:
    arch: str | None = None
    domains: list[str] | None = None
    image_size: int | None = None
    w_hpf: float | None = None
    fan: Path | None = None
    discriminator: Path | None = None
    classes: bool = False  # v1: the domains are exclusive classes (RaFD-style)
    name: str = ""
    notes: list[str] = field(default_factory=list)  # what was inferred or assumed, for the user


def load_checkpoint(path: str | Path) -> Mapping:
    """A checkpoint's contents, read without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})")
    check_archive(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc)
        if "Weights only load failed" in reason or "Unsupported global" in reason:
            detail = next((line.strip() for line in reason.splitlines()
                           if "GLOBAL" in line or "Unsupported" in line), "")
            raise UserError(f"{path}: refused: the checkpoint holds pickled objects beyond "
                            f"tensors ({detail or 'not allowed by weights-only loading'}); "
                            "stargan-rt never runs a checkpoint's code. Re-save it from trusted "
                            "code as a plain state dict (torch.save(model.state_dict(), ...))")
        raise UserError(f"{path}: not a PyTorch checkpoint ({reason.splitlines()[0]}); "
                        "expected a file written by torch.save")
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: truncated or corrupt checkpoint ({first}); download or copy "
                        "it again")
    except Exception as exc:  # the unpickler raises KeyError, IndexError, ... on arbitrary bytes
        raise UserError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
                        "expected a file written by torch.save")
    if not isinstance(obj, Mapping):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not a state dict; expected an "
                        "official StarGAN checkpoint")
    return obj


# Limits on what a checkpoint may make the importer read. torch.save writes uncompressed zip
# entries, and weights hardly compress, so a highly compressed entry is a decompression bomb.
# The released StarGAN v2 CelebA-HQ nets_ema file is about 350 MB; 4 GiB leaves ample room.
MAX_CHECKPOINT_BYTES = 4 << 30
MAX_COMPRESSION_RATIO = 20
MAX_ARCHIVE_ENTRIES = 100_000


def check_archive(path: Path) -> None:
    """Refuse a checkpoint whose (declared) contents exceed the limits, before reading it."""
    size = path.stat().st_size
    limit = f"{MAX_CHECKPOINT_BYTES / 2**30:g} GiB"
    if size > MAX_CHECKPOINT_BYTES:
        raise UserError(f"{path}: {size / 2**30:.1f} GiB is more than the {limit} a StarGAN "
                        "checkpoint can be; expected an official -G.ckpt or nets_ema.ckpt")
    try:
        if not zipfile.is_zipfile(path):
            return  # legacy torch.save format: its contents are the file itself
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load reports it as truncated or corrupt
    if len(entries) > MAX_ARCHIVE_ENTRIES:
        raise UserError(f"{path}: refused: the archive has {len(entries)} entries (at most "
                        f"{MAX_ARCHIVE_ENTRIES}); not a checkpoint written by torch.save")
    total = sum(e.file_size for e in entries)
    if total > MAX_CHECKPOINT_BYTES:
        raise UserError(f"{path}: refused: the archive unpacks to {total / 2**30:.1f} GiB, more "
                        f"than the {limit} limit (a decompression bomb?); expected an official "
                        "StarGAN checkpoint")
    for entry in entries:
        if (entry.compress_type != zipfile.ZIP_STORED and entry.file_size > 1 << 20
                and entry.file_size > MAX_COMPRESSION_RATIO * max(entry.compress_size, 1)):
            raise UserError(f"{path}: refused: entry {entry.filename[:60]} inflates "
                            f"{entry.file_size // max(entry.compress_size, 1)} times to "
                            f"{entry.file_size / 2**20:.0f} MiB (a decompression bomb; "
                            "torch.save never compresses); expected an official StarGAN "
                            "checkpoint")


def _strip_module_prefix(state: Mapping) -> dict:
    """DataParallel checkpoints prefix every key with ``module.``; bundles never do."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def detect_arch(obj: Mapping, path: Path) -> str:
    if any(k in obj for k in V2_NETWORKS):
        return "v2"
    if "state_dict" in obj and _is_tensor_dict(obj["state_dict"]):
        raise UserError(f"{path}: this looks like FAN weights (wing.ckpt), not a generator; pass "
                        "it with --fan beside a v2 nets_ema checkpoint")
    if _is_tensor_dict(obj):
        state = _strip_module_prefix(obj)
        if "conv2.weight" in state and "conv1.weight" in state and "main.0.weight" in state:
            raise UserError(f"{path}: this is a StarGAN v1 discriminator (-D.ckpt); import the "
                            "matching -G.ckpt (the -D.ckpt beside it is picked up)")
        if "main.0.weight" in state:
            return "v1"
        if "from_rgb.weight" in state:
            raise UserError(f"{path}: a bare StarGAN v2 generator state dict; import the "
                            "{iter:06d}_nets_ema.ckpt that also holds the mapping network and "
                            "style encoder")
    keys = ", ".join(list(obj)[:6])
    raise UserError(f"{path}: not an official StarGAN checkpoint (top-level keys: {keys}); "
                    "expected {iter}-G.ckpt (v1) or {iter:06d}_nets_ema.ckpt (v2)")


def _domains(options: ImportOptions, count: int, what: str) -> list[Domain]:
    if not options.domains:
        raise UserError(f"the checkpoint has {count} {what}; name them in order with "
                        f"--domains a,b,... ({count} names)")
    if len(options.domains) != count:
        raise UserError(f"--domains lists {len(options.domains)} names but the checkpoint has "
                        f"{count} {what}; give exactly {count}, in training order")
    if len({d.lower() for d in options.domains}) != count:
        raise UserError("--domains has duplicate names (matching is case-insensitive)")
    return [Domain(name, default_aliases(name)) for name in options.domains]


def _load_strict(manifest: Manifest, name: str, state: dict, setting_hint: str) -> None:
    net = build_network(manifest, name)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:4]}"
                         f"{' ...' if len(unexpected) > 4 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch at {k}: checkpoint {tuple(state[k].shape)} vs "
                         f"model {tuple(expected[k].shape)}")
        raise UserError(f"{name} weights do not fit ({'; '.join(parts)}); probably wrong: "
                        f"{setting_hint}")
    net.load_state_dict(state, strict=True)


# -- v1 ------------------------------------------------------------------------------------------
def _count_indices(state: Mapping, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.fullmatch(k))})


def import_v1(g_path: Path, obj: Mapping, options: ImportOptions):
    g_state = _strip_module_prefix(obj)
    first = g_state["main.0.weight"]
    c_dim, conv_dim = first.shape[1] - 3, first.shape[0]
    repeat_num = len(_count_indices(g_state, r"main\.(\d+)\.main\.0\.weight"))
    config = {"conv_dim": conv_dim, "c_dim": c_dim, "repeat_num": repeat_num,
              "d_conv_dim": 64, "d_repeat_num": 6,
              "labels": "classes" if options.classes else "attributes"}
    states = {"generator": g_state}
    sources = [g_path]

    d_path = options.discriminator
    if d_path is None and g_path.name.endswith("-G.ckpt"):
        sibling = g_path.with_name(g_path.name[:-len("-G.ckpt")] + "-D.ckpt")
        d_path = sibling if sibling.is_file() else None
    image_size = options.image_size
    if d_path is not None:
        d_state = _strip_module_prefix(load_checkpoint(d_path))
        if "conv2.weight" not in d_state or "main.0.weight" not in d_state:
            raise UserError(f"{d_path}: not a StarGAN v1 discriminator state dict")
        d_repeat = len(_count_indices(d_state, r"main\.(\d+)\.weight"))
        d_size = d_state["conv2.weight"].shape[-1] * 2 ** d_repeat
        if d_state["conv2.weight"].shape[0] != c_dim:
            raise UserError(f"{d_path}: discriminator classifies {d_state['conv2.weight'].shape[0]}"
                            f" attributes but the generator takes {c_dim}; pair the -G and -D "
                            "files of the same run")
        if image_size is not None and image_size != d_size:
            raise UserError(f"--image-size {image_size} disagrees with the discriminator, which "
                            f"was built for {d_size} px; drop --image-size or fix it")
        image_size = d_size
        config.update(d_conv_dim=d_state["main.0.weight"].shape[0], d_repeat_num=d_repeat)
        states["discriminator"] = d_state
        sources.append(d_path)
        options.notes.append(f"discriminator {d_path.name}: image size {d_size} px; used to "
                             "estimate source attributes")
    elif image_size is None:
        image_size = V1_DEFAULT_IMAGE_SIZE
        options.notes.append(f"no discriminator: image size assumed {image_size} px (official "
                             "CelebA); set --image-size otherwise")
    manifest = Manifest(arch="v1", image_size=image_size,
                        domains=_domains(options, c_dim, "target attributes (c_dim)"),
                        config=config, name=options.name or g_path.stem)
    hint = "--arch (is this a v1 -G.ckpt?)"
    for name, state in states.items():
        _load_strict(manifest, name, state, hint)
    return manifest, states, sources


# -- v2 ------------------------------------------------------------------------------------------
def _fan_state(options: ImportOptions, nets: Mapping) -> tuple[dict | None, Path | None]:
    if options.fan is not None:
        obj = load_checkpoint(options.fan)
        state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
        if not _is_tensor_dict(state):
            raise UserError(f"{options.fan}: expected FAN weights (a dict with 'state_dict', as "
                            "the released wing.ckpt)")
        return _strip_module_prefix(state), options.fan
    if "fan" in nets:
        return _strip_module_prefix(nets["fan"]), None
    return None, None


def import_v2(path: Path, nets: Mapping, options: ImportOptions):
    missing = [n for n in V2_NETWORKS if n not in nets]
    if missing:
        raise UserError(f"{path}: v2 checkpoint lacks {', '.join(missing)}; import the "
                        "*_nets_ema.ckpt file (the released one holds all three)")
    g, f, e = (_strip_module_prefix(nets[n]) for n in V2_NETWORKS)
    latent_dim, hidden_dim = f["shared.0.weight"].shape[1], f["shared.0.weight"].shape[0]
    num_domains = len(_count_indices(f, r"unshared\.(\d+)\.0\.weight"))
    last = max(_count_indices(f, r"unshared\.0\.(\d+)\.weight"))
    style_dim = f[f"unshared.0.{last}.weight"].shape[0]
    e_down = len(_count_indices(e, r"shared\.(\d+)\.conv1\.weight"))
    img_size = 2 ** (e_down + 2)
    if options.image_size is not None and options.image_size != img_size:
        raise UserError(f"--image-size {options.image_size} disagrees with the checkpoint: its "
                        f"style encoder has {e_down} downsampling blocks, i.e. {img_size} px; "
                        "drop --image-size")
    dim_in = g["from_rgb.weight"].shape[0]
    encode = _count_indices(g, r"encode\.(\d+)\.conv1\.weight")
    max_conv_dim = max(g[f"encode.{i}.conv2.weight"].shape[0] for i in encode)
    extra_down = len(encode) - 2 - (int(math.log2(img_size)) - 4)
    if extra_down not in (0, 1):
        raise UserError(f"{path}: generator has {len(encode)} encoder blocks, which fits no "
                        f"w_hpf setting at {img_size} px; is this an official checkpoint?")
    if "hpf.filter" in g:
        w_hpf = float(8.0 / g["hpf.filter"][1, 1])
    elif extra_down:
        w_hpf = options.w_hpf if options.w_hpf else 1.0
        g["hpf.filter"] = HIGH_PASS_KERNEL / w_hpf  # missing from the released CelebA-HQ G
        options.notes.append(f"supplied the generator's missing hpf.filter (w_hpf {w_hpf:g})")
    else:
        w_hpf = 0.0
    if options.w_hpf is not None and (options.w_hpf > 0) != (w_hpf > 0):
        raise UserError(f"--w-hpf {options.w_hpf:g} disagrees with the checkpoint: its generator "
                        f"has {'an extra' if w_hpf > 0 else 'no extra'} downsampling block, "
                        f"i.e. w_hpf {'> 0' if w_hpf > 0 else '= 0'}; drop --w-hpf")
    config = {"style_dim": style_dim, "latent_dim": latent_dim, "max_conv_dim": max_conv_dim,
              "w_hpf": w_hpf, "dim_in": None if dim_in == default_dim_in(img_size) else dim_in,
              "hidden_dim": hidden_dim}
    manifest = Manifest(arch="v2", image_size=img_size,
                        domains=_domains(options, num_domains, "domains"),
                        config=config, name=options.name or path.stem)
    states = {"generator": g, "mapping_network": f, "style_encoder": e}
    if "discriminator" in nets:
        states["discriminator"] = _strip_module_prefix(nets["discriminator"])
    sources = [path]
    fan_state, fan_path = _fan_state(options, nets)
    if w_hpf > 0:
        if fan_state is None:
            raise UserError(f"{path}: w_hpf {w_hpf:g} needs FAN weights for the face masks and "
                            "the checkpoint has no 'fan' entry; pass --fan wing.ckpt")
        # wing.ckpt may carry extra entries; keep what FAN has (as the official loader does).
        wanted = build_network(manifest, "fan").state_dict()
        states["fan"] = {k: v for k, v in fan_state.items() if k in wanted}
        if fan_path is not None:
            sources.append(fan_path)
    elif fan_state is not None:
        options.notes.append("FAN weights ignored: w_hpf is 0, so no masks are used")
    hints = {"generator": "--w-hpf / --image-size (masks need w_hpf 1; AFHQ uses 0)",
             "mapping_network": "number of domains / latent or style dims",
             "style_encoder": "--image-size or number of domains",
             "discriminator": "--image-size or number of domains",
             "fan": "--fan (expected the released wing.ckpt)"}
    for name, state in states.items():
        _load_strict(manifest, name, state, hints[name])
    return manifest, states, sources


HIGH_PASS_KERNEL = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


def import_checkpoint(ckpt: str | Path, out: str | Path, options: ImportOptions,
                      overwrite: bool = False):
    ckpt = Path(ckpt)
    obj = load_checkpoint(ckpt)
    arch = detect_arch(obj, ckpt)
    if options.arch is not None and options.arch != arch:
        raise UserError(f"{ckpt}: --arch {options.arch} given, but this is a StarGAN {arch} "
                        f"checkpoint; pass --arch {arch} or omit --arch")
    importer = import_v1 if arch == "v1" else import_v2
    try:
        manifest, states, sources = importer(ckpt, obj, options)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        # a key or a tensor shape is not where the official code puts it
        raise UserError(f"{ckpt}: does not have the layout of an official StarGAN {arch} "
                        f"checkpoint ({type(exc).__name__}: {str(exc)[:120]}); expected the "
                        "file the official code saves, unmodified") from None
    manifest.source = {"kind": "official-import",
                       "files": [{"name": p.name, "sha256": sha256_file(p)} for p in sources],
                       "notes": list(options.notes)}
    return write_bundle(out, manifest, states, overwrite=overwrite)
