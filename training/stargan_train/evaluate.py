"""`stargan-rt eval`: the StarGAN v1 paper's protocol, plus reconstruction and v2 diversity.

1. An independent attribute classifier (a small CNN, trained here from scratch on the data set's
   own labels: the model's attributes for the CelebA layout, the domains for the folder layout)
   is trained on the training part of the data and checked on the held-out part.
2. Held-out images are translated by the PyTorch reference model to each target domain, and the
   classifier judges the outputs:
   - target accuracy per attribute / domain (does the output show the target?);
   - v1 with attributes: how often the untouched attributes are kept;
   - reconstruction L1 (v1: G(G(x, c_trg), c_org) vs x; v2: G(G(x, s_trg), E(x, y_org)) vs x);
   - v2: diversity, the mean pairwise L1 between outputs of different latent seeds.
   L1 values are mean absolute differences on the 0..1 pixel scale.
3. Fidelity, on data sets made by `stargan-rt data synth` (they carry their recipe): every
   output against the true counterfactual, next to the unchanged input (see fidelity.py). A
   classifier's verdict alone is no evidence of a good picture: generators learn to satisfy
   classifiers with patterns.
4. Realism without ground truth: KID between each target's outputs and real images showing the
   target, on the independent classifier's features.
5. FID / LPIPS only when the user provides weight files (see stargan_train.metrics).

Held-out split: the folder layout's ``val/`` when it exists, else a fixed 10 % of the images
(seeded); ``--test-data`` translates a separate data set instead (e.g. synthetic faces made with
another seed, which a model trained on ``--data`` has never seen).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.files import write_atomic
from stargan_rt.imaging import IMAGE_SUFFIXES
from stargan_rt.synth import read_recipe
from stargan_train import fidelity
from stargan_train.data import ATTR_FILE, read_attr_file, test_targets

CLASSIFIER_SIZE = 64           # the classifier sees at most 64 px (downscaled with area)


# ---------------------------------------------------------------------------------------------
# Data
@dataclass
class LabelledSet:
    images: np.ndarray          # uint8 (N, S, S, 3) BGR at the model's size
    labels: np.ndarray          # float32 (N, C) 0/1 ("attributes") or int64 (N,) ("classes")
    names: list[str]            # the model's domain names, in the model's order
    kind: str                   # "attributes" | "classes"
    files: list[str]
    skipped: list[str] = field(default_factory=list)   # undecodable files (skipped, counted)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "LabelledSet":
        index = np.asarray(index, dtype=np.int64)
        return LabelledSet(self.images[index], self.labels[index], self.names, self.kind,
                           [self.files[i] for i in index], self.skipped)

    def onehot(self) -> np.ndarray:
        """Labels as a float (N, C) 0/1 matrix (classes become one-hot)."""
        if self.kind == "attributes":
            return self.labels.astype(np.float32)
        out = np.zeros((len(self), len(self.names)), np.float32)
        out[np.arange(len(self)), self.labels] = 1
        return out


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _load_images(paths: list[Path], size: int, skipped: list[str]) -> tuple[np.ndarray, list[int]]:
    from stargan_rt.imaging import fit_to_model

    images, kept = [], []
    for i, path in enumerate(paths):
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            skipped.append(str(path))
            continue
        images.append(fit_to_model(image, size))
        kept.append(i)
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), kept
    return np.stack(images), kept


def load_celeba(root: Path, wanted: list[str], size: int) -> LabelledSet:
    names, files, values = read_attr_file(root / ATTR_FILE)
    lookup = {_norm(n): i for i, n in enumerate(names)}
    missing = [w for w in wanted if _norm(w) not in lookup]
    if missing:
        raise UserError(f"{root / ATTR_FILE}: no attribute {', '.join(missing)} (the model's "
                        f"attributes must be columns of the file); valid: {', '.join(names)}")
    columns = [lookup[_norm(w)] for w in wanted]
    folder = next((root / d for d in ("images", "img_align_celeba") if (root / d).is_dir()), root)
    present = {p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    absent = [f for f in files if f not in present]
    if absent:
        raise UserError(f"{root / ATTR_FILE}: {len(absent)} of {len(files)} rows name images "
                        f"missing from {folder} (e.g. {', '.join(absent[:3])}); the attribute "
                        "file does not match the images")
    skipped: list[str] = []
    images, kept = _load_images([folder / f for f in files], size, skipped)
    labels = (values[kept][:, columns] > 0).astype(np.float32)
    return LabelledSet(images, labels, list(wanted), "attributes", [files[i] for i in kept],
                       skipped)


def _class_dirs(base: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(base.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def load_folders(base: Path, domains: list[str], match, size: int) -> LabelledSet:
    """One sub-folder per domain; ``match(folder_name)`` -> domain index or None."""
    dirs = _class_dirs(base)
    found: dict[int, Path] = {}
    for name, path in dirs.items():
        index = match(name)
        if index is not None:
            found[index] = path
    missing = [d for i, d in enumerate(domains) if i not in found]
    if missing:
        raise UserError(f"{base}: no folder for the model's domain(s) {', '.join(missing)}; "
                        f"folders there: {', '.join(dirs) or '(none)'}")
    skipped: list[str] = []
    all_images, all_labels, all_files = [], [], []
    for index in range(len(domains)):
        paths = sorted(p for p in found[index].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images, kept = _load_images(paths, size, skipped)
        all_images.append(images)
        all_labels.append(np.full(len(kept), index, np.int64))
        all_files += [f"{found[index].name}/{paths[i].name}" for i in kept]
    return LabelledSet(np.concatenate(all_images), np.concatenate(all_labels), list(domains),
                       "classes", all_files, skipped)


def load_eval_sets(data: Path, domains: list[str], match, size: int, holdout: float = 0.1,
                   seed: int = 0, test_data: Path | None = None, check: bool = True
                   ) -> tuple[LabelledSet, LabelledSet, str]:
    """(classifier training set, held-out set, layout)."""
    if not data.is_dir():
        raise UserError(f"{data}: no such data directory (expected the CelebA layout with "
                        f"{ATTR_FILE}, or one folder per domain / train/<domain>/)")
    layout = "celeba" if (data / ATTR_FILE).is_file() else "folders"
    if layout == "celeba":
        full = load_celeba(data, domains, size)
        train, held = _split(full, holdout, seed)
    else:
        base = data / "train" if (data / "train").is_dir() else data
        train = load_folders(base, domains, match, size)
        if (data / "val").is_dir() and base != data:
            held = load_folders(data / "val", domains, match, size)
        else:
            train, held = _split(train, holdout, seed)
    if test_data is not None:
        test_sets = load_eval_sets(test_data, domains, match, size, 1.0, seed, check=False)
        if test_sets[2] != layout:
            raise UserError(f"--test-data {test_data} is in the {test_sets[2]} layout but --data "
                            f"{data} is {layout}; give both in the same layout")
        held = _concat(test_sets[0], test_sets[1])
    for what, subset in (("training", train), ("held-out", held)) if check else ():
        if len(subset) == 0:
            raise UserError(f"{data}: no decodable images for the classifier's {what} part")
    return train, held, layout


def _split(full: LabelledSet, holdout: float, seed: int) -> tuple[LabelledSet, LabelledSet]:
    n = len(full)
    if n == 0:
        return full, full
    k = n if holdout >= 1.0 else max(1, int(round(n * holdout)))
    perm = np.random.default_rng(seed).permutation(n)
    return full.subset(np.sort(perm[k:])), full.subset(np.sort(perm[:k]))


def _concat(a: LabelledSet, b: LabelledSet) -> LabelledSet:
    return LabelledSet(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]),
                       a.names, a.kind, a.files + b.files, a.skipped + b.skipped)


# ---------------------------------------------------------------------------------------------
# The independent classifier
def _to_tensor(images_bgr: np.ndarray):
    """uint8 BGR (N, S, S, 3) -> float32 torch (N, 3, s, s) RGB in [-1, 1], s <= 64."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images_bgr[..., ::-1])).permute(0, 3, 1, 2)
    x = x.float().div(127.5).sub(1.0)
    if x.shape[-1] > CLASSIFIER_SIZE:
        x = F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="area")
    return x


def build_classifier(outputs: int):
    """About 0.2 M parameters and 12 M multiply-adds per 64 px image: one full-resolution
    layer keeps 1-2 px details (glasses frames, teeth), then pooled stages."""
    import torch.nn as nn

    def stage(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(*stage(3, 12), *stage(12, 32), *stage(32, 64), *stage(64, 96),
                         *stage(96, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.1), nn.Linear(128, outputs))


def _augment(x, gen):
    """Flips, small shifts, blur / noise / contrast jitter: the classifier must also judge
    generated images, which are softer and noisier than the renders it learns from."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = max(1, h // 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    x = padded[:, :, dy:dy + h, dx:dx + w]
    blur = torch.rand(n, 1, 1, 1, generator=gen) * 0.6
    x = x * (1 - blur) + F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) * blur
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.3
    x = x * gain + torch.randn(x.shape, generator=gen) * 0.03
    return x.clamp(-1, 1)


def train_classifier(train: LabelledSet, epochs: int = 15, seconds: float = 120.0,
                     seed: int = 0, log=None):
    """Train the small CNN; returns (model in eval mode, info dict)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_classifier(len(train.names))
    x_all = _to_tensor(train.images)
    if train.kind == "attributes":
        y_all = torch.from_numpy(train.labels.astype(np.float32))
    else:
        y_all = torch.from_numpy(train.labels.astype(np.int64))
    lr = 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batch = 64
    steps_per_epoch = max(1, math.ceil(len(train) / batch))
    start = time.perf_counter()
    done_epochs = 0
    model.train()
    for epoch in range(epochs):
        # constant rate, then a tenth for the last quarter (by epochs or by the time budget)
        late = epoch >= 0.75 * epochs or time.perf_counter() - start > 0.75 * seconds
        for group in opt.param_groups:
            group["lr"] = lr * (0.1 if late else 1.0)
        perm = torch.randperm(len(train), generator=gen)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * batch:(step + 1) * batch]
            x = _augment(x_all[idx], gen)
            logits = model(x)
            if train.kind == "attributes":
                loss = F.binary_cross_entropy_with_logits(logits, y_all[idx])
            else:
                loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        done_epochs = epoch + 1
        if log:
            log(f"  classifier epoch {done_epochs}/{epochs}: loss {total / len(train):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
        if time.perf_counter() - start > seconds:
            break
    model.eval()
    return model, {"epochs": done_epochs, "seconds": round(time.perf_counter() - start, 1),
                   "train_images": len(train)}


CLASSIFIER_VERSION = 1


def classifier_key(train: LabelledSet, epochs: int, seed: int) -> str:
    """Identifies a trained classifier: its training images, labels, names and settings."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(json.dumps([CLASSIFIER_VERSION, train.names, train.kind, epochs, seed,
                              list(train.images.shape)]).encode())
    digest.update("\n".join(train.files).encode())
    digest.update(np.ascontiguousarray(train.labels).tobytes())
    digest.update(hashlib.sha256(train.images.tobytes()).digest())
    return digest.hexdigest()[:32]


def cached_classifier(path, train: LabelledSet, epochs: int, seconds: float, seed: int,
                      log=print):
    """Load the classifier from ``path`` when it was trained on exactly this data with these
    settings; otherwise train one (and save it there, atomically, when a path is given)."""
    if path is None:
        return train_classifier(train, epochs, seconds, seed, log)
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(path)
    key = classifier_key(train, epochs, seed)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                state = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as exc:  # unreadable / not safetensors
            raise UserError(f"{path}: not a classifier cache written by `stargan-rt eval` "
                            f"({exc}); delete it or give another --classifier-cache path")
        if meta.get("key") == key:
            model = build_classifier(len(train.names))
            model.load_state_dict(state)
            model.eval()
            info = json.loads(meta.get("info", "{}"))
            info["cached"] = str(path)
            log(f"classifier: loaded from {path} (same data and settings)")
            return model, info
        log(f"classifier: {path} was trained on other data or settings; retraining")
    model, info = train_classifier(train, epochs, seconds, seed, log)
    write_atomic(path, lambda tmp: save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
        metadata={"key": key, "info": json.dumps(info), "names": json.dumps(train.names)}),
        lambda where, exc: UserError(f"{where}: cannot save the classifier "
                                     f"({exc.strerror or exc})"))
    return model, info


def predict(model, images_bgr: np.ndarray, kind: str, batch: int = 256) -> np.ndarray:
    """Attributes: 0/1 (N, C) ints; classes: (N,) class indexes."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(images_bgr), batch):
            logits = model(_to_tensor(images_bgr[i:i + batch]))
            outs.append((logits > 0).int().numpy() if kind == "attributes"
                        else logits.argmax(1).numpy())
    if not outs:
        return np.zeros((0, 0) if kind == "attributes" else (0,), np.int64)
    return np.concatenate(outs)


def classifier_features(model, images_bgr: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, 128) pooled features of the independent classifier (its layers before dropout and
    the last linear layer): the feature space of eval's realism distance (KID)."""
    import torch

    body = model[:-2]
    with torch.no_grad():
        return np.concatenate([body(_to_tensor(images_bgr[i:i + batch])).numpy()
                               for i in range(0, len(images_bgr), batch)] or
                              [np.zeros((0, 128), np.float32)])


def realism(classifier, real: LabelledSet, outputs: dict[str, list[np.ndarray]]) -> dict:
    """KID x 1000 between each target's outputs and the real images that show that target, on
    the independent classifier's features (a network the translator never saw); lower is
    closer. Needs no ground truth: the realism measure for CelebA or photos."""
    from stargan_train.metrics import kernel_inception_distance

    onehot = real.onehot()
    out = {}
    for i, name in enumerate(real.names):
        fakes = [f for f in outputs.get(name, []) if len(f)]
        reals = real.images[onehot[:, i] > 0]
        if not fakes or len(reals) < 2 or sum(len(f) for f in fakes) < 2:
            continue
        real_f = classifier_features(classifier, reals)
        fake_f = classifier_features(classifier, np.concatenate(fakes))
        scale = float(np.sqrt(np.mean(real_f.astype(np.float64) ** 2))) or 1.0
        # features scaled to unit RMS on the real images: the cubic kernel then sees values
        # of the size Inception's pool features have, whatever this classifier's scale
        out[name] = 1000.0 * kernel_inception_distance(real_f / scale, fake_f / scale)
    return {"kid_x1000": out, "mean_kid_x1000": _nanmean(out.values()),
            "features": "eval classifier (128-d pooled)"}


def classifier_accuracy(model, data: LabelledSet) -> dict[str, float]:
    pred = predict(model, data.images, data.kind)
    if data.kind == "attributes":
        return {n: float((pred[:, i] == data.labels[:, i]).mean()) for i, n in enumerate(data.names)}
    out = {}
    for i, n in enumerate(data.names):
        rows = data.labels == i
        out[n] = float((pred[rows] == i).mean()) if rows.any() else float("nan")
    return out


# ---------------------------------------------------------------------------------------------
# Translators: thin adapters over the PyTorch reference translator (so tests can substitute
# an oracle or an identity translator with the same two or three methods).
class V1Adapter:
    """translate(uint8 BGR crops, float (N, C) target labels) -> uint8 BGR crops."""

    def __init__(self, translator):
        self.t = translator

    def translate(self, crops: np.ndarray, labels: np.ndarray) -> np.ndarray:
        import torch

        from stargan_rt.imaging import bgr_to_unit_nchw, unit_nchw_to_bgr

        x = torch.from_numpy(bgr_to_unit_nchw(crops)).to(self.t.device)
        c = torch.from_numpy(labels.astype(np.float32)).to(self.t.device)
        with torch.no_grad():
            out = self.t.generator(x, c)
        return unit_nchw_to_bgr(out.cpu().numpy())


class V2Adapter:
    """translate(crops, domain index, seed) and cycle(fakes, sources, source domain indexes)."""

    def __init__(self, translator):
        self.t = translator

    def translate(self, crops: np.ndarray, domain: int, seed: int) -> np.ndarray:
        self.t.set_domain(self.t.domains[domain])
        self.t.set_style(seed=seed)
        return self.t(crops)

    def cycle(self, fakes: np.ndarray, sources: np.ndarray, domains: np.ndarray) -> np.ndarray:
        import torch

        from stargan_rt.imaging import bgr_to_unit_nchw, unit_nchw_to_bgr

        t = self.t
        with torch.no_grad():
            src = torch.from_numpy(bgr_to_unit_nchw(sources)).to(t.device)
            fake = torch.from_numpy(bgr_to_unit_nchw(fakes)).to(t.device)
            style = t.style_encoder(src, torch.from_numpy(domains.astype(np.int64)).to(t.device))
            masks = t.fan.face_masks(fake) if getattr(t, "fan", None) is not None else None
            out = t.generator(fake, style, masks)
        return unit_nchw_to_bgr(out.cpu().numpy())


def _l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean absolute difference on the 0..1 scale."""
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).reshape(len(a), -1).mean(1) / 255.0


def v1_targets(c_org: np.ndarray, names: list[str], kind: str) -> list[np.ndarray]:
    """The official create_labels (stargan_train.data.test_targets); for classes (one-hot) the
    target domain's one-hot vector."""
    if kind != "classes":
        return test_targets(c_org, names)
    return [np.repeat(np.eye(len(names), dtype=c_org.dtype)[i:i + 1], len(c_org), axis=0)
            for i in range(len(names))]


def evaluate_v1(adapter, classifier, held: LabelledSet, batch: int = 32,
                samples: list | None = None, recipe=None, outputs: dict | None = None) -> dict:
    names, kind = held.names, held.kind
    c_org_all = held.onehot()
    tally = fidelity.Tally(names) if recipe is not None else None
    per = {n: {"correct": 0, "total": 0} for n in names}
    kept = {n: {"kept": 0, "total": 0} for n in names}
    rec_sum, rec_n = 0.0, 0
    for start in range(0, len(held), batch):
        x = held.images[start:start + batch]
        c_org = c_org_all[start:start + batch]
        for i, c_trg in enumerate(v1_targets(c_org, names, kind)):
            active = np.any(c_trg != c_org, axis=1)     # skip no-op targets (already that way)
            if not active.any():
                continue
            xs, ct, co = x[active], c_trg[active], c_org[active]
            fake = adapter.translate(xs, ct)
            if outputs is not None:
                outputs.setdefault(names[i], []).append(fake)
            truths = None
            if tally is not None:
                files = [held.files[start + k] for k in np.flatnonzero(active)]
                truths = _judge_against_truth(tally, names[i], recipe, files, xs, fake,
                                              [fidelity.v1_changes(names, o, t)
                                               for o, t in zip(co, ct)])
            rec = adapter.translate(fake, co)
            rec_sum += float(_l1(rec, xs).sum())
            rec_n += len(xs)
            pred = predict(classifier, fake, kind)
            if kind == "attributes":
                per[names[i]]["correct"] += int((pred[:, i] == ct[:, i]).sum())
                untouched = ct == co
                untouched[:, i] = False
                for j, n in enumerate(names):
                    rows = untouched[:, j]
                    kept[n]["kept"] += int((pred[rows, j] == co[rows, j]).sum())
                    kept[n]["total"] += int(rows.sum())
            else:
                per[names[i]]["correct"] += int((pred == i).sum())
            per[names[i]]["total"] += len(xs)
            if samples is not None and start == 0:
                samples.append((names[i], xs[:4], *([truths[:4]] if truths is not None else []),
                                fake[:4]))
    accuracy = {n: (v["correct"] / v["total"] if v["total"] else float("nan"))
                for n, v in per.items()}
    result = {"target_accuracy": accuracy, "translations": {n: v["total"] for n, v in per.items()},
              "mean_target_accuracy": _nanmean(accuracy.values()),
              "reconstruction_l1": rec_sum / rec_n if rec_n else float("nan")}
    if tally is not None:
        result["fidelity"] = tally.summary()
    if kind == "attributes":
        kept_rate = {n: (v["kept"] / v["total"] if v["total"] else float("nan"))
                     for n, v in kept.items()}
        total_kept = sum(v["kept"] for v in kept.values())
        total = sum(v["total"] for v in kept.values())
        result["untouched_kept"] = kept_rate
        result["mean_untouched_kept"] = total_kept / total if total else float("nan")
    return result


def evaluate_v2(adapter, classifier, held: LabelledSet, seeds: int = 3, batch: int = 32,
                samples: list | None = None, recipe=None, outputs: dict | None = None) -> dict:
    if held.kind != "classes":
        raise UserError("StarGAN v2 models are evaluated on the folder layout (train/<domain>/, "
                        "val/<domain>/); this data set is in the CelebA layout")
    names = held.names
    tally = fidelity.Tally(names) if recipe is not None else None
    per = {n: {"correct": 0, "total": 0} for n in names}
    diversity = {n: [] for n in names}
    rec_sum, rec_n = 0.0, 0
    for start in range(0, len(held), batch):
        x_all = held.images[start:start + batch]
        y_all = held.labels[start:start + batch]
        for t, name in enumerate(names):
            rows = y_all != t
            if not rows.any():
                continue
            xs, ys = x_all[rows], y_all[rows]
            outs = [adapter.translate(xs, t, seed) for seed in range(seeds)]
            if outputs is not None:
                outputs.setdefault(name, []).append(outs[0])
            truths = None
            if tally is not None:
                files = [held.files[start + k] for k in np.flatnonzero(rows)]
                prop = fidelity.domain_property(name)
                changes = [None if prop is None else {prop[0]: prop[1]}] * len(xs)
                for fake in outs:   # every seed is one edit
                    truths = _judge_against_truth(tally, name, recipe, files, xs, fake, changes,
                                                  truths)
            for fake in outs:
                pred = predict(classifier, fake, "classes")
                per[name]["correct"] += int((pred == t).sum())
                per[name]["total"] += len(xs)
            for a in range(len(outs)):
                for b in range(a + 1, len(outs)):
                    diversity[name].extend(_l1(outs[a], outs[b]).tolist())
            rec = adapter.cycle(outs[0], xs, ys)
            rec_sum += float(_l1(rec, xs).sum())
            rec_n += len(xs)
            if samples is not None and start == 0:
                samples.append((name, xs[:4], *([truths[:4]] if truths is not None else []),
                                *[o[:4] for o in outs]))
    accuracy = {n: (v["correct"] / v["total"] if v["total"] else float("nan"))
                for n, v in per.items()}
    div = {n: (float(np.mean(v)) if v else float("nan")) for n, v in diversity.items()}
    result = {"target_accuracy": accuracy, "translations": {n: v["total"] for n, v in per.items()},
              "mean_target_accuracy": _nanmean(accuracy.values()),
              "reconstruction_l1": rec_sum / rec_n if rec_n else float("nan"),
              "diversity_l1": div, "mean_diversity_l1": _nanmean(div.values()), "seeds": seeds}
    if tally is not None:
        result["fidelity"] = tally.summary()
    return result


def _judge_against_truth(tally, target: str, recipe, files: list[str], sources: np.ndarray,
                         outputs: np.ndarray, changes: list, truths=None) -> np.ndarray:
    """Score each output against its counterfactual (rendered unless ``truths`` are given;
    edits the renderer cannot draw are counted as unjudged); returns the counterfactuals
    (the input where there is none) for the sample grid."""
    size = sources.shape[1]
    if truths is None:
        truths = np.stack([fidelity.render(recipe, f, size, c) if c is not None else src
                           for f, c, src in zip(files, changes, sources)])
    for src, truth, out, c in zip(sources, truths, outputs, changes):
        if c is None:
            tally.unjudged[target] += 1
        else:
            tally.add(target, src, truth, out)
    return truths


def _nanmean(values) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# The whole run
def run_evaluation(model: str | os.PathLike, data: str | os.PathLike, max_images: int = 200,
                   seeds: int = 3, classifier_epochs: int = 15, classifier_seconds: float = 120.0,
                   seed: int = 0, test_data: str | os.PathLike | None = None,
                   inception: str | None = None, lpips: str | None = None,
                   lpips_backbone: str | None = None, samples_path: str | None = None,
                   classifier_cache: str | os.PathLike | None = None,
                   translator=None, adapter=None, log=print) -> dict:
    """Evaluate a bundle. Tests may pass ``translator`` (anything with bundle, domains,
    image_size, arch) and ``adapter`` (V1Adapter / V2Adapter interface) instead."""
    if max_images <= 0:
        raise UserError(f"--max-images must be positive, got {max_images}")
    if seeds < 2:
        raise UserError(f"--seeds must be at least 2 (diversity compares seeds), got {seeds}")
    if translator is None:
        from stargan_rt.reference import TorchTranslator

        translator = TorchTranslator(model)
    bundle = translator.bundle
    domains = list(translator.domains)

    def match(folder_name: str):
        try:
            return bundle.domain_index(folder_name)
        except UserError:
            return None

    start = time.perf_counter()
    train, held, layout = load_eval_sets(Path(data), domains, match, translator.image_size,
                                         seed=seed,
                                         test_data=Path(test_data) if test_data else None)
    if len(held) > max_images:
        held = held.subset(np.sort(np.random.default_rng(seed + 1).permutation(len(held))
                                   [:max_images]))
    recipe = read_recipe(test_data or data)
    if recipe is not None:   # judge against the true counterfactuals, on exact sources
        held.images = fidelity.rerender_sources(recipe, held.files, held.images)
    log(f"data: {layout} layout, classifier trains on {len(train)} images, {len(held)} held-out "
        f"images translated ({translator.arch}, {translator.image_size} px, domains "
        f"{', '.join(domains)})")
    skipped = sorted(set(train.skipped + held.skipped))
    if skipped:
        log(f"  skipped {len(skipped)} undecodable image(s), e.g. {', '.join(skipped[:3])}")
    classifier, info = cached_classifier(classifier_cache, train, classifier_epochs,
                                         classifier_seconds, seed, log)
    info["held_out_accuracy"] = classifier_accuracy(classifier, held)
    trained = "trained earlier: " if "cached" in info else ""
    accuracy = ", ".join(f"{k} {v:.1%}" for k, v in info["held_out_accuracy"].items())
    log(f"classifier: {trained}{info['epochs']} epochs in {info['seconds']} s; accuracy on "
        f"held-out real images: {accuracy}")
    samples: list = []
    outputs: dict = {}
    if translator.arch == "v1":
        result = evaluate_v1(adapter or V1Adapter(translator), classifier, held,
                             samples=samples, recipe=recipe, outputs=outputs)
    else:
        result = evaluate_v2(adapter or V2Adapter(translator), classifier, held, seeds=seeds,
                             samples=samples, recipe=recipe, outputs=outputs)
    result["realism"] = realism(classifier, train, outputs)
    report = {"model": str(model), "data": str(data), "test_data": str(test_data or ""),
              "arch": translator.arch, "image_size": translator.image_size, "layout": layout,
              "domains": domains, "held_out_images": len(held), "skipped_images": len(skipped),
              "classifier": info, **result}
    if inception or lpips:
        from stargan_train import metrics

        pool = _concat(train, held)
        if pool.kind == "attributes":
            real = {n: pool.images[pool.labels[:, i] > 0] for i, n in enumerate(pool.names)}
        else:
            real = {n: pool.images[pool.labels == i] for i, n in enumerate(pool.names)}
        report.update(metrics.optional_metrics(real, samples_all_outputs(translator, held, seed),
                                               inception, lpips, lpips_backbone, log))
    if samples_path:
        write_samples(samples_path, samples)
        report["samples"] = str(samples_path)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def samples_all_outputs(translator, held: LabelledSet, seed: int) -> dict:
    """Outputs for FID / LPIPS: v1 one translation per target attribute, v2 10 seeds per
    target domain (LPIPS diversity is measured over those)."""
    out = {}
    if translator.arch == "v1":
        adapter = V1Adapter(translator)
        c_org = held.onehot()
        for i, c_trg in enumerate(v1_targets(c_org, held.names, held.kind)):
            out[held.names[i]] = [np.concatenate([adapter.translate(held.images[s:s + 32],
                                                                    c_trg[s:s + 32])
                                                  for s in range(0, len(held), 32)])]
    else:
        adapter = V2Adapter(translator)
        for t, name in enumerate(held.names):
            rows = held.labels != t
            xs = held.images[rows]
            out[name] = [adapter.translate(xs, t, seed + k) for k in range(10)]
    return out


def write_samples(path, samples) -> None:
    """A PNG grid: per target one row block of [input | output(s)] for up to 4 inputs."""
    if not samples:
        return
    rows = []
    for name, *columns in samples:
        n = len(columns[0])
        block = np.concatenate([np.concatenate([col[k] for col in columns], axis=1)
                                for k in range(n)], axis=0)
        label = np.full((14, block.shape[1], 3), 255, np.uint8)
        cv2.putText(label, name, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
        rows.append(np.concatenate([label, block], axis=0))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    from stargan_rt.imaging import write_image

    write_image(path, np.concatenate(rows, axis=0))


def format_table(report: dict) -> str:
    lines = []
    names = report["domains"]
    header = f"{'target':<16} {'accuracy':>9} {'n':>6}"
    has_kept = "untouched_kept" in report
    has_div = "diversity_l1" in report
    if has_kept:
        header += f" {'kept':>8}"
    if has_div:
        header += f" {'diversity':>10}"
    header += f" {'classifier':>11}"
    lines.append(header)
    lines.append("-" * len(header))
    for n in names:
        row = (f"{n:<16} {_pct(report['target_accuracy'][n]):>9} "
               f"{report['translations'][n]:>6}")
        if has_kept:
            row += f" {_pct(report['untouched_kept'][n]):>8}"
        if has_div:
            row += f" {report['diversity_l1'][n]:>10.4f}"
        row += f" {_pct(report['classifier']['held_out_accuracy'][n]):>11}"
        lines.append(row)
    lines.append("-" * len(header))
    summary = f"mean target accuracy {_pct(report['mean_target_accuracy'])}"
    if has_kept:
        summary += f"; untouched attributes kept {_pct(report['mean_untouched_kept'])}"
    summary += f"; reconstruction L1 {report['reconstruction_l1']:.4f}"
    if has_div:
        summary += f"; diversity L1 {report['mean_diversity_l1']:.4f} ({report['seeds']} seeds)"
    lines.append(summary)
    for key in ("fid", "lpips_diversity"):
        if key in report:
            value = report[key]
            text = (", ".join(f"{k} {v:.3f}" for k, v in value.items())
                    if isinstance(value, dict) else f"{value:.3f}")
            lines.append(f"{key}: {text}")
    lines.append("(accuracy: classifier agrees the output shows the target; kept: other attributes "
                 "unchanged; classifier: its accuracy on held-out real images; L1 on 0..1 pixels)")
    if "realism" in report and report["realism"]["kid_x1000"]:
        kid = report["realism"]["kid_x1000"]
        lines.append("realism, KID x 1000 to real images of the target on the eval classifier's "
                     "features (lower is closer): " + ", ".join(f"{k} {v:.2f}"
                                                               for k, v in kid.items()))
    if "fidelity" in report:
        lines += ["", *format_fidelity(report["fidelity"])]
    return "\n".join(lines)


def format_fidelity(fid: dict) -> list[str]:
    """The counterfactual table: the model's PSNR / SSIM next to the unchanged input's."""
    header = (f"{'target':<16} {'edits':>6} {'PSNR dB':>8} {'input':>7} {'SSIM':>6} "
              f"{'input':>6} {'bg err':>7}")
    lines = ["fidelity against the true counterfactual (input: returning the input unchanged)",
             header, "-" * len(header)]

    def row(name, v):
        return (f"{name:<16} {v['edits']:>6} {v['psnr']:>8.2f} {v['baseline_psnr']:>7.2f} "
                f"{v['ssim']:>6.3f} {v['baseline_ssim']:>6.3f} {v['background_error']:>7.2f}")

    lines += [row(n, v) for n, v in fid["per_target"].items() if v["edits"]]
    lines += ["-" * len(header), row("all edits", fid["overall"]),
              "(bg err: mean absolute error in levels of 255 where the edit changes nothing)"]
    return lines


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{v:.1%}"


def write_report(path: str | os.PathLike, report: dict) -> None:
    text = json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False) + "\n"
    write_atomic(path, text, lambda where, exc: UserError(
        f"{where}: cannot write the report ({exc.strerror or exc})"))


def _finite(value):
    """NaN (nothing to measure) becomes null: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
