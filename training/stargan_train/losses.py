"""Loss terms both solvers add to their GAN losses: the differentiable SSIM term and the
warm-up's reconstruction loss."""
from __future__ import annotations

import torch

from stargan_rt.metrics import SSIM_K1, SSIM_K2, gaussian_kernel


def ssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM of two (N, C, H, W) image batches in [-1, 1]: eval's SSIM
    (``stargan_rt.metrics``: window, sigma, constants, valid region), in float32 and
    differentiable. Why: L1 alone lets a small G return blurred faces (the shipped 180-minute
    v1 kept only SSIM 0.78 of its own input at 25 dB); SSIM weighs local contrast and
    structure, which blur loses first."""
    with torch.autocast(a.device.type, enabled=False):  # variances cancel badly in bf16
        a, b = a.float(), b.float()
        g = torch.from_numpy(gaussian_kernel()).float().to(a.device)
        channels = a.shape[1]
        win = (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()
        blur = lambda t: torch.nn.functional.conv2d(t, win, groups=channels)  # noqa: E731
        c1, c2 = (SSIM_K1 * 2) ** 2, (SSIM_K2 * 2) ** 2     # data range 2 for [-1, 1]
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a ** 2
        var_b = blur(b * b) - mu_b ** 2
        cov = blur(a * b) - mu_a * mu_b
        ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
        return 1.0 - ssim.mean()


def autoencoder_loss(out: torch.Tensor, target: torch.Tensor, cfg: dict):
    """The warm-up's reconstruction loss: (L1, L1 + the SSIM term at the GAN phase's ratio of
    lambda_ssim to the identity weight). The L1 is what the log shows."""
    l1 = (out.float() - target.float()).abs().mean()
    if cfg.get("lambda_ssim", 0.0) <= 0:
        return l1, l1
    return l1, l1 + cfg["lambda_ssim"] / max(cfg["lambda_id"], 1.0) * ssim_loss(out, target)
