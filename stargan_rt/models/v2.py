"""StarGAN v2: generator with AdaIN styles, mapping network, style encoder, discriminator.

Attribute names match the official modules so ``{iter:06d}_nets_ema.ckpt`` state dicts load as is
(``from_rgb``, ``encode.N``, ``decode.N.norm1.fc``, ``to_rgb``, ``shared``, ``unshared``, ``main``).
Extra constructor arguments (``dim_in``, ``hidden_dim``) only exist so the small demo models can be
built; their defaults reproduce the official architecture.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Feature sizes at which the masked high-pass skip path joins the decoder (official choice).
HPF_SKIP_SIZES = (32, 64, 128)


def default_dim_in(img_size: int) -> int:
    return 2 ** 14 // img_size


class ResBlk(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False,
                 downsample: bool = False):
        super().__init__()
        self.actv = nn.LeakyReLU(0.2)
        self.normalize = normalize
        self.downsample = downsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv1x1(x) if self.learned_sc else x
        if self.downsample:
            shortcut = F.avg_pool2d(shortcut, 2)
        h = self.norm1(x) if self.normalize else x
        h = self.conv1(self.actv(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.normalize:
            h = self.norm2(h)
        h = self.conv2(self.actv(h))
        return (shortcut + h) / math.sqrt(2)  # keeps unit variance


class AdaIN(nn.Module):
    """(1 + gamma(s)) * instance_norm(x) + beta(s), gamma and beta per sample and channel."""

    def __init__(self, style_dim: int, num_features: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, w_hpf: float = 0,
                 upsample: bool = False):
        super().__init__()
        self.w_hpf = w_hpf
        self.actv = nn.LeakyReLU(0.2)
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        if self.learned_sc:
            # Present (and in the checkpoints) even when w_hpf > 0 makes it unused.
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.actv(self.norm1(x, s))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv2(self.actv(self.norm2(self.conv1(h), s)))
        if self.w_hpf > 0:
            return h  # the high-pass skip path carries the identity instead
        shortcut = F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x
        if self.learned_sc:
            shortcut = self.conv1x1(shortcut)
        return (h + shortcut) / math.sqrt(2)


class HighPass(nn.Module):
    """Fixed depthwise 3x3 Laplacian-like filter scaled by 1 / w_hpf."""

    def __init__(self, w_hpf: float):
        super().__init__()
        kernel = torch.full((3, 3), -1.0)
        kernel[1, 1] = 8.0
        self.register_buffer("filter", kernel / w_hpf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weight = self.filter[None, None].expand(channels, 1, 3, 3)
        return F.conv2d(x, weight, padding=1, groups=channels)


class GeneratorV2(nn.Module):
    """G(x, s, masks=None): image in [-1, 1] and style (N, style_dim) -> image (no tanh)."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512,
                 w_hpf: float = 1, dim_in: int | None = None):
        super().__init__()
        dim = dim_in or default_dim_in(img_size)
        self.img_size = img_size
        self.w_hpf = w_hpf
        self.from_rgb = nn.Conv2d(3, dim, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(dim, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(dim, 3, 1, 1, 0))
        num_down = int(math.log2(img_size)) - 4 + (1 if w_hpf > 0 else 0)
        decode_stack: list[nn.Module] = []  # built outermost-last, reversed below
        dim_out = dim
        for _ in range(num_down):
            dim_out = min(dim * 2, max_conv_dim)
            self.encode.append(ResBlk(dim, dim_out, normalize=True, downsample=True))
            decode_stack.append(AdainResBlk(dim_out, dim, style_dim, w_hpf=w_hpf, upsample=True))
            dim = dim_out
        for _ in range(2):
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            decode_stack.append(AdainResBlk(dim_out, dim_out, style_dim, w_hpf=w_hpf))
        self.decode.extend(reversed(decode_stack))
        if w_hpf > 0:
            self.hpf = HighPass(w_hpf)

    def forward(self, x: torch.Tensor, s: torch.Tensor,
                masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.from_rgb(x)
        skips: dict[int, torch.Tensor] = {}
        for block in self.encode:
            if masks is not None and x.shape[2] in HPF_SKIP_SIZES:
                skips[x.shape[2]] = x
            x = block(x)
        for block in self.decode:
            x = block(x, s)
            size = x.shape[2]
            if masks is not None and size in HPF_SKIP_SIZES:
                mask = masks[0] if size == 32 else masks[1]
                mask = F.interpolate(mask, size=size, mode="bilinear")
                x = x + self.hpf(mask * skips[size])
        return self.to_rgb(x)


def _pick_domain(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """out (N, num_domains, ...) -> out[i, y[i]]."""
    return out[torch.arange(out.shape[0], device=out.device), y]


class MappingNetwork(nn.Module):
    """F(z, y): latent (N, latent_dim) and domain index (N,) -> style (N, style_dim)."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2,
                 hidden_dim: int = 512):
        super().__init__()
        shared: list[nn.Module] = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            shared += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*shared)
        self.unshared = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                          nn.Linear(hidden_dim, style_dim))
            for _ in range(num_domains))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        return _pick_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


def _down_trunk(img_size: int, max_conv_dim: int, dim_in: int | None) -> tuple[list, int]:
    """Shared trunk of the style encoder and discriminator; returns (layers, final channels)."""
    dim = dim_in or default_dim_in(img_size)
    layers: list[nn.Module] = [nn.Conv2d(3, dim, 3, 1, 1)]
    dim_out = dim
    for _ in range(int(math.log2(img_size)) - 2):
        dim_out = min(dim * 2, max_conv_dim)
        layers.append(ResBlk(dim, dim_out, downsample=True))
        dim = dim_out
    layers += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return layers, dim_out


class StyleEncoder(nn.Module):
    """E(x, y): reference image and its domain index -> style (N, style_dim)."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2,
                 max_conv_dim: int = 512, dim_in: int | None = None):
        super().__init__()
        layers, dim_out = _down_trunk(img_size, max_conv_dim, dim_in)
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(x).flatten(1)
        return _pick_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


class DiscriminatorV2(nn.Module):
    """D(x, y): one real/fake logit per domain, the one of domain y picked."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512,
                 dim_in: int | None = None):
        super().__init__()
        layers, dim_out = _down_trunk(img_size, max_conv_dim, dim_in)
        layers.append(nn.Conv2d(dim_out, num_domains, 1, 1, 0))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _pick_domain(self.main(x).flatten(1), y)
