"""Image and tensor comparison metrics, one definition each (numpy only): PSNR, SSIM and the
maximum absolute error, used by parity, live parity and the int8 accuracy guard."""
from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, test: np.ndarray, peak: float) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


# SSIM's constants (Wang et al. 2004); the training stage's SSIM loss uses the same.
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering over the last two axes."""
    from numpy.lib.stride_tricks import sliding_window_view

    k = len(kernel)
    rows = sliding_window_view(image, k, axis=-1) @ kernel
    return np.swapaxes(sliding_window_view(np.swapaxes(rows, -1, -2), k, axis=-1) @ kernel, -1, -2)


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float,
         channel_axis: int = -1) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) over
    images and channels. Inputs (N, H, W, C) with channel_axis=-1 or (N, C, H, W) with 1."""
    a = np.moveaxis(reference.astype(np.float64), channel_axis, 1)
    b = np.moveaxis(test.astype(np.float64), channel_axis, 1)
    if a.ndim != 4:
        raise ValueError("ssim expects 4-D image batches")
    side = min(a.shape[-2:])
    win = SSIM_WINDOW if side >= SSIM_WINDOW else (side | 1) - 2 or 1
    kernel = gaussian_kernel(win)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, kernel), _filter_valid(b, kernel)
    saa = _filter_valid(a * a, kernel) - mu_a * mu_a
    sbb = _filter_valid(b * b, kernel) - mu_b * mu_b
    sab = _filter_valid(a * b, kernel) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (saa + sbb + c2)
    return float(np.mean(num / den))


def max_abs_err(reference: np.ndarray, test: np.ndarray) -> float:
    """Largest absolute difference (0 for empty arrays); integer inputs are compared exactly."""
    if not np.size(reference):
        return 0.0
    return float(np.max(np.abs(np.asarray(reference, np.float64) - np.asarray(test, np.float64))))


def worst_psnr(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Worst PSNR over several outputs; peak 255 for uint8 frames, 2 for float images in
    [-1, 1] (N, 3, H, W), else the reference's value range (styles, masks, logits)."""
    worst = math.inf
    for g, w in zip(got, want):
        if w.dtype == np.uint8:
            peak = 255.0
        elif w.ndim == 4 and w.shape[1] == 3:
            peak = 2.0
        else:
            peak = max(float(w.max() - w.min()), 1e-6)
        worst = min(worst, psnr(w, g, peak))
    return worst
