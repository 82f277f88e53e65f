"""StarGAN v1: generator (label-conditioned) and PatchGAN discriminator with classifier head.

Module indexes inside ``main`` follow the official layout so official ``{iter}-G.ckpt`` /
``{iter}-D.ckpt`` state dicts load unchanged (keys such as ``main.9.main.0.weight``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class InstanceNormAlwaysBatchStats(nn.InstanceNorm2d):
    """InstanceNorm2d with checkpoint-compatible running stats that are never used.

    The official code trains with ``track_running_stats=True`` but never calls ``.eval()``, so
    every output it published used per-instance statistics. Using the running stats at inference
    breaks the outputs (official issue #102); this layer always normalises per instance, in train
    and eval mode alike, and keeps the buffers only so state dicts round-trip.
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            # Keep updating the buffers while training, as the official code does.
            return super().forward(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, use_input_stats=True,
                               eps=self.eps)


def _conv_norm_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, InstanceNormAlwaysBatchStats(channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), InstanceNormAlwaysBatchStats(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), InstanceNormAlwaysBatchStats(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class GeneratorV1(nn.Module):
    """G(x, c): image in [-1, 1] (N,3,H,W) and target labels (N,c_dim) -> image in [-1, 1]."""

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        self.c_dim = c_dim
        layers = _conv_norm_relu(nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False), conv_dim)
        dim = conv_dim
        for _ in range(2):
            layers += _conv_norm_relu(nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), dim * 2)
            dim *= 2
        layers += [ResidualBlock(dim) for _ in range(repeat_num)]
        for _ in range(2):
            layers += _conv_norm_relu(nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False),
                                      dim // 2)
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # Tiling the label over the image is an expand + concat: no copy of c per pixel in Python.
        c_map = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, c_map], dim=1))


class DiscriminatorV1(nn.Module):
    """D(x) -> (PatchGAN real/fake map, attribute logits (N, c_dim))."""

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5,
                 repeat_num: int = 6):
        super().__init__()
        if image_size % (2 ** repeat_num):
            raise ValueError(f"image_size {image_size} must be a multiple of 2**{repeat_num}")
        layers: list[nn.Module] = []
        dim_in, dim = 3, conv_dim
        for _ in range(repeat_num):
            layers += [nn.Conv2d(dim_in, dim, 4, 2, 1), nn.LeakyReLU(0.01)]
            dim_in, dim = dim, dim * 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim_in, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(dim_in, c_dim, image_size // 2 ** repeat_num, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)
