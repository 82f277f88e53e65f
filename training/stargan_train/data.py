"""Training data: the CelebA layout, one-folder-per-class (RaFD style), both jointly (v1), and the
StarGAN v2 ``train/<domain>/`` layout with class-balanced sampling and reference pairs.

Images are decoded once with OpenCV, centre-cropped to a square (``crop_size``; CelebA's official
178 when the photos are that large, else the shorter side) and resized to ``image_size`` with area
interpolation, and kept in memory as uint8 (N, S, S, 3) RGB. Random parts of the transform (h-flip;
for v2 also RandomResizedCrop with p 0.5) run per batch in numpy; the output is float32 in [-1, 1]
(the official Normalize(mean 0.5, std 0.5)).

Undecodable images are SKIPPED AND COUNTED (the count and the first names are reported by the
loader and logged in the run's metrics); a data set where none, or less than half, of the images
decode is an error. Every other problem (missing or empty folders, attribute rows that do not
match the image files, unknown attribute names) is a UserError naming the file and the fix.

Sampling uses explicit numpy Generators whose state is part of the checkpoint, so a resumed run
draws exactly the batches the uninterrupted run would have drawn.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stargan_rt.bundle import HAIR_COLOURS
from stargan_rt.errors import UserError
from stargan_rt.imaging import IMAGE_SUFFIXES

ATTR_FILE = "list_attr_celeba.txt"
CELEBA_CROP = 178  # official CenterCrop for the 178x218 aligned CelebA photos


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_square(path: Path, image_size: int, crop_size: int | None) -> np.ndarray | None:
    """Decode, centre-crop to a square, resize: uint8 RGB (S, S, 3); None if undecodable."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        return None
    h, w = image.shape[:2]
    side = min(h, w) if crop_size is None else min(crop_size, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top:top + side, left:left + side]
    if side != image_size:
        interp = cv2.INTER_AREA if side > image_size else cv2.INTER_LINEAR
        image = cv2.resize(image, (image_size, image_size), interpolation=interp)
    return np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB


@dataclass
class LoadReport:
    """What happened while reading a data set (kept in the run's metrics)."""
    images: int = 0
    skipped_undecodable: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    ignored_unlisted: int = 0

    def as_dict(self) -> dict:
        return {"images": self.images, "skipped_undecodable": self.skipped_undecodable,
                "skipped_examples": self.skipped_examples[:5],
                "ignored_unlisted": self.ignored_unlisted}


def _decode_all(paths: list[Path], image_size: int, crop_size: int | None,
                report: LoadReport, where: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, S, S, 3) and the indexes (into paths) that decoded."""
    images, kept = [], []
    for i, path in enumerate(paths):
        image = _load_square(path, image_size, crop_size)
        if image is None:
            report.skipped_undecodable += 1
            report.skipped_examples.append(path.name)
            continue
        images.append(image)
        kept.append(i)
    if not images:
        raise UserError(f"{where}: none of the {len(paths)} images could be decoded "
                        f"(e.g. {', '.join(report.skipped_examples[:3])}); expected JPEG/PNG files")
    if report.skipped_undecodable * 2 > len(paths):
        raise UserError(f"{where}: {report.skipped_undecodable} of {len(paths)} images could not be "
                        f"decoded (e.g. {', '.join(report.skipped_examples[:3])}); fix or remove them")
    report.images += len(images)
    return np.stack(images), np.asarray(kept, dtype=np.int64)


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{path}: {what} does not exist; pass --data pointing at the data set")
    if not path.is_dir():
        raise UserError(f"{path}: {what} is not a directory")


# ---------------------------------------------------------------------------------------------
# CelebA layout

def read_attr_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, values int8 (N, A) of 1/-1) with strict format checks."""
    if not path.is_file():
        raise UserError(f"{path}: attribute file not found; the CelebA layout needs DIR/{ATTR_FILE} "
                        "(count line, attribute names, then `filename v1 .. vN` rows)")
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the attribute file ({exc})")
    lines = [ln for ln in lines if ln.strip()]
    if len(lines) < 2:
        raise UserError(f"{path}: expected a count line and an attribute-name line, "
                        f"found {len(lines)} non-empty lines")
    try:
        count = int(lines[0].split()[0])
    except ValueError:
        raise UserError(f"{path}: line 1 must be the number of images, got {lines[0][:40]!r}")
    names = lines[1].split()
    rows = lines[2:]
    if count != len(rows):
        raise UserError(f"{path}: line 1 says {count} images but the file has {len(rows)} rows; "
                        "the attribute file is truncated or its count is wrong")
    files, values = [], np.empty((len(rows), len(names)), dtype=np.int8)
    for i, row in enumerate(rows):
        parts = row.split()
        if len(parts) != len(names) + 1:
            raise UserError(f"{path}: row {i + 3} has {len(parts) - 1} values, expected "
                            f"{len(names)} (one per attribute): {row[:60]!r}")
        try:
            vals = [int(v) for v in parts[1:]]
        except ValueError:
            raise UserError(f"{path}: row {i + 3} has a non-integer value: {row[:60]!r}")
        if any(v not in (1, -1, 0) for v in vals):
            raise UserError(f"{path}: row {i + 3}: values must be 1 or -1: {row[:60]!r}")
        files.append(parts[0])
        values[i] = vals
    return names, files, values


def check_attrs(selected: list[str], available: list[str], where: str) -> list[int]:
    lower = {a.lower(): i for i, a in enumerate(available)}
    idx, unknown = [], []
    for name in selected:
        if name.lower() in lower:
            idx.append(lower[name.lower()])
        else:
            unknown.append(name)
    if unknown:
        raise UserError(f"{where}: unknown attribute(s) {', '.join(unknown)}; valid names: "
                        f"{', '.join(available)}")
    if len(set(idx)) != len(idx):
        raise UserError(f"attribute list {','.join(selected)} names an attribute twice")
    return idx


@dataclass
class LabelledImages:
    """In-memory images with labels: v1 multi-hot float (N, C) or class indexes (N,)."""
    images: np.ndarray          # uint8 (N, S, S, 3) RGB
    labels: np.ndarray          # float32 (N, C) for attributes, int64 (N,) for classes
    names: list[str]            # attribute or class names
    kind: str                   # "attributes" | "classes"
    files: list[str]
    report: LoadReport

    def __len__(self) -> int:
        return len(self.images)


def find_celeba_images(root: Path) -> Path:
    for name in ("images", "img_align_celeba", "celeba"):
        if (root / name).is_dir():
            return root / name
    return root


def load_celeba(root: str | os.PathLike, attrs: list[str], image_size: int,
                crop_size: int | None = None, limit: int | None = None) -> LabelledImages:
    """CelebA layout: ROOT/list_attr_celeba.txt and the images in ROOT/images (or
    ROOT/img_align_celeba, or ROOT itself)."""
    root = Path(root)
    _require_dir(root, "data directory")
    names, files, values = read_attr_file(root / ATTR_FILE)
    index = check_attrs(attrs, names, str(root / ATTR_FILE))
    folder = find_celeba_images(root)
    present = {p.name for p in _list_images(folder)}
    if not present:
        raise UserError(f"{folder}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} "
                        f"files named as in {ATTR_FILE})")
    missing = [f for f in files if f not in present]
    if missing:
        raise UserError(f"{root / ATTR_FILE}: {len(missing)} of {len(files)} rows name images that "
                        f"are not in {folder} (e.g. {', '.join(missing[:3])}); the attribute file "
                        "does not match the images")
    report = LoadReport(ignored_unlisted=len(present) - len(set(files)))
    if limit:
        files, values = files[:limit], values[:limit]
    if crop_size is None:
        # Official CenterCrop(178) for CelebA-sized photos; square crop of the shorter side else.
        probe = _load_probe_shape(folder / files[0])
        crop_size = CELEBA_CROP if probe and min(probe) >= CELEBA_CROP else None
    images, kept = _decode_all([folder / f for f in files], image_size, crop_size, report,
                               str(folder))
    labels = (values[kept][:, index] > 0).astype(np.float32)
    return LabelledImages(images, labels, [names[i] for i in index], "attributes",
                          [files[i] for i in kept], report)


def _load_probe_shape(path: Path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return None if image is None else image.shape[:2]


def class_folders(root: Path) -> tuple[Path, list[str]]:
    """The folder holding one sub-folder per class: ROOT/train if present, else ROOT."""
    _require_dir(root, "data directory")
    base = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{base}: no class sub-folders found; the folder layout is "
                        f"{base}/<class>/*.jpg|png (one folder per domain)")
    return base, classes


def load_folders(root: str | os.PathLike, image_size: int, crop_size: int | None = None,
                 domains: list[str] | None = None) -> LabelledImages:
    """One folder per class (RaFD style, or v2's train/<domain>/); class index = sorted names."""
    base, classes = class_folders(Path(root))
    if domains:
        index = check_attrs(domains, classes, f"{base} (class folders)")
        classes = [classes[i] for i in index]
    report = LoadReport()
    all_images, all_labels, all_files = [], [], []
    for ci, name in enumerate(classes):
        paths = _list_images(base / name)
        if not paths:
            raise UserError(f"{base / name}: class folder has no images; add images or remove it")
        images, kept = _decode_all(paths, image_size, crop_size, report, str(base / name))
        all_images.append(images)
        all_labels.append(np.full(len(kept), ci, dtype=np.int64))
        all_files += [f"{name}/{paths[i].name}" for i in kept]
    return LabelledImages(np.concatenate(all_images), np.concatenate(all_labels), classes,
                          "classes", all_files, report)


def detect_layout(root: str | os.PathLike) -> str:
    root = Path(root)
    _require_dir(root, "data directory")
    if (root / ATTR_FILE).exists():
        return "celeba"
    return "folders"


# ---------------------------------------------------------------------------------------------
# Augmentation and batches

def to_tensor_batch(images: np.ndarray, flip: np.ndarray | None):
    """uint8 (N, S, S, 3) RGB -> float32 torch (N, 3, S, S) in [-1, 1], optional h-flip per row."""
    import torch

    if flip is not None and flip.any():
        images = images.copy()
        images[flip] = images[flip][:, :, ::-1]
    # permute() of NHWC data is a channels-last view: make it contiguous NCHW, the layout the
    # training loop uses (mixing layouts made mkldnn's conv backward several times slower).
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    x = x.contiguous(memory_format=torch.contiguous_format).float()
    return x.div_(127.5).sub_(1.0)


def random_resized_crop(images: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                        scale=(0.8, 1.0), ratio=(0.9, 1.1)) -> np.ndarray:
    """v2 augmentation: with probability p crop an area fraction in scale, aspect in ratio, and
    resize back to the original side."""
    out = images.copy()
    n, s = images.shape[:2]
    for i in range(n):
        if rng.random() >= p:
            continue
        area = s * s * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w = int(round(np.sqrt(area * aspect)))
        h = int(round(np.sqrt(area / aspect)))
        w, h = min(max(w, 1), s), min(max(h, 1), s)
        top = int(rng.integers(0, s - h + 1))
        left = int(rng.integers(0, s - w + 1))
        out[i] = cv2.resize(images[i, top:top + h, left:left + w], (s, s),
                            interpolation=cv2.INTER_LINEAR)
    return out


class EpochSampler:
    """Indexes in shuffled epochs; with several processes each rank takes its own stride of
    the same permutation (the DistributedSampler idea) so ranks see disjoint samples."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1,
                 weights: np.ndarray | None = None):
        self.n, self.rank, self.world = n, rank, world
        self.rng = np.random.default_rng(seed)
        self.weights = None if weights is None else weights / weights.sum()
        self.perm = np.empty(0, dtype=np.int64)
        self.pos = 0

    def _refill(self) -> None:
        if self.weights is None:
            perm = self.rng.permutation(self.n)
        else:  # class-balanced: an "epoch" of n draws with probability proportional to weight
            perm = self.rng.choice(self.n, size=self.n, replace=True, p=self.weights)
        self.perm = perm[self.rank::self.world] if self.world > 1 else perm
        self.pos = 0

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.pos >= len(self.perm):
                self._refill()
            chunk = self.perm[self.pos:self.pos + k]
            self.pos += len(chunk)
            k -= len(chunk)
            out.append(chunk)
        return np.concatenate(out)

    def state_dict(self) -> dict:
        import torch
        return {"rng": self.rng.bit_generator.state, "perm": torch.from_numpy(self.perm.copy()),
                "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perm = state["perm"].numpy().astype(np.int64)
        self.pos = int(state["pos"])


class V1Batches:
    """Batches for StarGAN v1: (x float (B,3,S,S) in [-1,1], label (B,C) float for attributes or
    int64 class indexes). Training uses random h-flip."""

    def __init__(self, data: LabelledImages, batch: int, seed: int, rank: int = 0, world: int = 1,
                 flip: bool = True):
        self.data, self.batch, self.flip = data, batch, flip
        self.sampler = EpochSampler(len(data), seed, rank, world)
        self.aug_rng = np.random.default_rng(seed + 7919 * (rank + 1))

    def next(self):
        import torch
        idx = self.sampler.take(self.batch)
        flip = self.aug_rng.random(len(idx)) < 0.5 if self.flip else None
        return to_tensor_batch(self.data.images[idx], flip), torch.from_numpy(self.data.labels[idx])

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "aug": self.aug_rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.aug_rng.bit_generator.state = state["aug"]


class V2Batches:
    """Batches for StarGAN v2: sources (x, y) from class-balanced sampling, and reference pairs
    (x_ref, x_ref2, y_ref) with both references from the same domain y_ref, plus latents."""

    def __init__(self, data: LabelledImages, batch: int, seed: int, latent_dim: int,
                 rank: int = 0, world: int = 1):
        self.data, self.batch, self.latent_dim = data, batch, latent_dim
        counts = np.bincount(data.labels, minlength=len(data.names)).astype(np.float64)
        weights = 1.0 / counts[data.labels]
        self.src = EpochSampler(len(data), seed, rank, world, weights)
        self.ref = EpochSampler(len(data), seed + 1, rank, world, weights)
        self.by_class = [np.flatnonzero(data.labels == c) for c in range(len(data.names))]
        self.rng = np.random.default_rng(seed + 7919 * (rank + 1))

    def _images(self, idx):
        imgs = random_resized_crop(self.data.images[idx], self.rng)
        return to_tensor_batch(imgs, self.rng.random(len(idx)) < 0.5)

    def next(self):
        import torch
        src = self.src.take(self.batch)
        ref = self.ref.take(self.batch)
        y_ref = self.data.labels[ref]
        ref2 = np.array([self.rng.choice(self.by_class[c]) for c in y_ref], dtype=np.int64)
        z = self.rng.standard_normal((2, self.batch, self.latent_dim)).astype(np.float32)
        return {
            "x_src": self._images(src), "y_src": torch.from_numpy(self.data.labels[src]),
            "x_ref": self._images(ref), "x_ref2": self._images(ref2),
            "y_ref": torch.from_numpy(y_ref), "z_trg": torch.from_numpy(z[0]),
            "z_trg2": torch.from_numpy(z[1]),
        }

    def state_dict(self) -> dict:
        return {"src": self.src.state_dict(), "ref": self.ref.state_dict(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.src.load_state_dict(state["src"])
        self.ref.load_state_dict(state["ref"])
        self.rng.bit_generator.state = state["rng"]


def split_holdout(data: LabelledImages, fraction: float, seed: int) -> tuple[LabelledImages,
                                                                               LabelledImages]:
    """(train, held-out) split by a fixed permutation; held-out faces are for sample grids/eval."""
    n = len(data)
    k = max(1, int(round(n * fraction))) if fraction > 0 and n > 1 else 0
    perm = np.random.default_rng(seed).permutation(n)
    hold, train = np.sort(perm[:k]), np.sort(perm[k:])

    def pick(idx):
        return LabelledImages(data.images[idx], data.labels[idx], data.names, data.kind,
                              [data.files[i] for i in idx], data.report)
    return pick(train), pick(hold)


# ---------------------------------------------------------------------------------------------
# v1 target labels

def hair_indexes(names: list[str]) -> list[int]:
    return [i for i, n in enumerate(names) if n in HAIR_COLOURS]


def test_targets(c_org, names: list[str]):
    """The official create_labels: one target per selected attribute; hair colours exclusive
    (set one, clear the others), other attributes flipped. Returns a list of (B, C) tensors."""
    hair = hair_indexes(names)
    out = []
    for i in range(len(names)):
        c = c_org.clone() if hasattr(c_org, "clone") else c_org.copy()  # torch or numpy
        if i in hair:
            c[:, hair] = 0
            c[:, i] = 1
        else:
            c[:, i] = 1 - c[:, i]
        out.append(c)
    return out


def mixed_targets(c_org, names: list[str], gen, p_single: float = 0.5):
    """Training targets: the official shuffled batch labels for a (1 - p_single) share of the rows
    and, for the rest, a single test-style edit (one hair colour set exclusively or one other
    attribute flipped). Single edits teach exactly what inference asks for, which matters most for
    small features (mouth, glasses) that a shuffled target often leaves unchanged."""
    import torch
    b, c_dim = c_org.shape
    c_trg = c_org[torch.randperm(b, generator=gen)]
    if p_single <= 0:
        return c_trg
    hair = hair_indexes(names)
    single = torch.rand(b, generator=gen) < p_single
    which = torch.randint(0, c_dim, (b,), generator=gen)
    edited = c_org.clone()
    for r in range(b):
        i = int(which[r])
        if i in hair:
            if edited[r, i] > 0:  # already this colour: pick another one, so the edit changes
                others = [h for h in hair if h != i]
                if not others:
                    edited[r, i] = 0
                    continue
                i = others[int(torch.randint(0, len(others), (1,), generator=gen))]
            edited[r, hair] = 0
            edited[r, i] = 1
        else:
            edited[r, i] = 1 - edited[r, i]
    return torch.where(single[:, None], edited, c_trg)
