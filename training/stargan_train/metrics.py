"""FID and LPIPS, computed only from weight files the user provides (nothing is downloaded).

- Frechet distance between Gaussians fitted to two feature sets:
  |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), with the trace of the matrix square root
  taken from the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric, so a plain eigen-decomposition
  suffices; no scipy).
- LPIPS: per layer, unit-normalise the feature vectors along channels, square the difference,
  weight channels with the non-negative linear layer, average over space, sum over layers.

``feature_fn(images uint8 BGR (N, S, S, 3)) -> (N, D)`` and ``lpips_fn(a, b) -> (N,)`` are plain
callables, so the computations are tested with small randomly initialised networks; the real
networks (pytorch-fid's Inception v3 pool features, LPIPS v0.1 with AlexNet) are built here and
loaded with ``torch.load(weights_only=True)`` or safetensors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stargan_rt.errors import UserError


# ---------------------------------------------------------------------------------------------
# Frechet distance
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise UserError(f"FID needs at least 2 feature vectors, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sym_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise UserError("FID: the two feature sets have different dimensions")
    root1 = _sym_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """KID (Binkowski et al. 2018): the unbiased squared MMD between two feature sets under the
    cubic polynomial kernel k(x, y) = (x.y / d + 1)^3. Unlike FID it is unbiased for small
    sets (a few hundred images), so numbers from sets of different sizes compare."""
    x, y = (np.asarray(f, dtype=np.float64) for f in (real, fake))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise UserError(f"KID needs two sets of at least 2 feature vectors of one dimension, got "
                        f"{x.shape} and {y.shape}")
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean())


# ---------------------------------------------------------------------------------------------
# LPIPS
def lpips_from_features(feats_a, feats_b, linear_weights, eps: float = 1e-10):
    """feats_*: lists of torch (N, C_l, H_l, W_l); linear_weights: list of (C_l,) non-negative
    weights (None = plain mean over channels). Returns torch (N,) distances."""
    import torch

    total = None
    for fa, fb, w in zip(feats_a, feats_b, linear_weights):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + eps)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + eps)
        diff = (na - nb).pow(2)
        if w is None:
            layer = diff.mean(1)
        else:
            layer = (diff * torch.as_tensor(w, dtype=diff.dtype).view(1, -1, 1, 1)).sum(1)
        value = layer.mean(dim=(1, 2))
        total = value if total is None else total + value
    return total


# ---------------------------------------------------------------------------------------------
# Loading user weights
def load_weights(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for bad files
            raise UserError(f"{path}: unreadable safetensors file ({exc})")
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals
        raise UserError(f"{path}: cannot load as plain weights with torch.load(weights_only=True) "
                        f"({type(exc).__name__}: {str(exc)[:200]}); give a state dict file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(net, state: dict, path, what: str, ignore=()) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.startswith(tuple(ignore))]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise UserError(f"{path}: not {what} weights (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}, wrong shapes {wrong[:3]})")
    net.load_state_dict({k: state[k] for k in expected}, strict=True)


def _to_unit(images_bgr: np.ndarray):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_bgr[..., ::-1])).permute(0, 3, 1, 2)
    return x.float().div(127.5).sub(1.0)


def inception_features_fn(path: str | Path, batch: int = 32):
    """pool3 (2048-d) features of pytorch-fid's Inception v3 with the user's weights."""
    import torch
    import torch.nn.functional as F

    from stargan_train.nets_metrics import FIDInceptionV3

    net = FIDInceptionV3()
    _load_into(net, load_weights(path), path, "pytorch-fid Inception v3", ignore=("fc.",
                                                                                   "AuxLogits."))
    net.eval()

    def features(images_bgr: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(images_bgr), batch):
                x = _to_unit(images_bgr[i:i + batch])
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                out.append(net(x).numpy())
        return np.concatenate(out).astype(np.float64)
    return features


def lpips_fn(lin_path: str | Path, backbone_path: str | Path):
    """LPIPS v0.1 (AlexNet) distance function from the user's two weight files."""
    import torch

    from stargan_train.nets_metrics import AlexNetFeatures, LPIPS_ALEX_CHANNELS, lpips_scale

    net = AlexNetFeatures()
    _load_into(net, load_weights(backbone_path), backbone_path, "torchvision AlexNet",
               ignore=("classifier.",))
    net.eval()
    lin = load_weights(lin_path)
    weights = []
    for k, channels in enumerate(LPIPS_ALEX_CHANNELS):
        key = f"lin{k}.model.1.weight"
        if key not in lin or tuple(lin[key].shape) != (1, channels, 1, 1):
            raise UserError(f"{lin_path}: not LPIPS v0.1 AlexNet linear weights (need {key} of "
                            f"shape (1, {channels}, 1, 1)); keys: {list(lin)[:6]}")
        weights.append(lin[key].float().view(-1))

    def distance(a_bgr: np.ndarray, b_bgr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            fa = net(lpips_scale(_to_unit(a_bgr)))
            fb = net(lpips_scale(_to_unit(b_bgr)))
            return lpips_from_features(fa, fb, weights).numpy()
    return distance


# ---------------------------------------------------------------------------------------------
def optional_metrics(real_by_domain: dict, outputs: dict, inception, lpips, lpips_backbone,
                     log=print) -> dict:
    """real_by_domain: name -> uint8 real images of that domain; outputs: name -> list of
    uint8 output arrays (one per seed). FID per target domain (first seed's outputs vs real
    images of the domain) and LPIPS diversity (mean pairwise distance between seeds)."""
    report: dict = {}
    if inception:
        features = inception_features_fn(inception)
        fid = {}
        for name, outs in outputs.items():
            real = real_by_domain.get(name)
            if real is None or len(real) < 2 or len(outs[0]) < 2:
                continue
            fid[name] = fid_from_features(features(real), features(np.concatenate(outs)))
        report["fid"] = fid
        report["mean_fid"] = float(np.mean(list(fid.values()))) if fid else float("nan")
        log("FID: " + ", ".join(f"{k} {v:.2f}" for k, v in fid.items()))
    if lpips:
        distance = lpips_fn(lpips, lpips_backbone)
        per = {}
        for name, outs in outputs.items():
            if len(outs) < 2:
                continue
            values = [distance(outs[a], outs[b]).mean() for a in range(len(outs))
                      for b in range(a + 1, len(outs))]
            per[name] = float(np.mean(values))
        report["lpips_diversity"] = per
        log("LPIPS diversity: " + ", ".join(f"{k} {v:.4f}" for k, v in per.items()))
    return report
