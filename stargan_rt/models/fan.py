"""FAN: the face alignment network StarGAN v2 uses for its high-pass masks (w_hpf > 0).

One hourglass with CoordConv and BatchNorm predicting 98 landmark heatmaps plus a boundary
channel at 64x64. ``face_masks`` turns the heatmaps into the two masks the generator takes;
``heatmap_landmarks`` turns them into points (the runtime aligns v2 face crops with them).
Module names follow the released ``wing.ckpt`` / ``fan`` checkpoint entries.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_LANDMARKS = 98
FAN_INPUT_SIZE = 256


def _coordinate_channels(size: int, with_r: bool) -> torch.Tensor:
    """(1, 2 or 3, size, size): row coordinate, column coordinate in [-1, 1], optional radius."""
    ramp = torch.arange(size, dtype=torch.float32) / (size - 1) * 2 - 1
    rows = ramp[:, None].expand(size, size)
    cols = ramp[None, :].expand(size, size)
    channels = [rows, cols]
    if with_r:
        radius = torch.sqrt(rows ** 2 + cols ** 2)
        channels.append(radius / radius.max())
    return torch.stack(channels)[None]


class CoordConv(nn.Module):
    """Concatenate fixed coordinate channels, then convolve. Coordinates are not in the state dict."""

    def __init__(self, size: int, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0):
        super().__init__()
        self.register_buffer("coords", _coordinate_channels(size, with_r=True), persistent=False)
        self.conv = nn.Conv2d(in_channels + 3, out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = self.coords.expand(x.shape[0], -1, -1, -1).to(x.dtype)
        return self.conv(torch.cat([x, coords], dim=1))


class ConvBlock(nn.Module):
    """Pre-activation block whose three 3x3 convs (C/2, C/4, C/4) are concatenated to C."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, half, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(True),
                                            nn.Conv2d(in_planes, out_planes, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class HourGlass(nn.Module):
    def __init__(self, depth: int = 4, features: int = 256):
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(64, features, features, kernel_size=1)
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            if level == 1:
                self.add_module("b2_plus_1", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        lower = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        if level > 1:
            lower = self._level(level - 1, lower)
        else:
            lower = self._modules["b2_plus_1"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, self.coordconv(x))


class FAN(nn.Module):
    """x in [0, 1], (N, 3, 256, 256) -> heatmaps (N, 99, 64, 64) (98 landmarks + boundary)."""

    def __init__(self, num_landmarks: int = NUM_LANDMARKS):
        super().__init__()
        self.conv1 = CoordConv(FAN_INPUT_SIZE, 3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        self.m0 = HourGlass(4, 256)
        self.top_m_0 = ConvBlock(256, 256)
        self.conv_last0 = nn.Conv2d(256, 256, 1, 1, 0)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.l0 = nn.Conv2d(256, num_landmarks + 1, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        x = F.relu(self.bn_end0(self.conv_last0(x)))
        return self.l0(x)

    def face_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generator input in [-1, 1] (N, 3, S, S) -> two masks (N, 1, 256, 256) in [0, 1]."""
        face, inner, _ = self.masks_and_landmarks(x)
        return face, inner

    def masks_and_landmarks(self, x: torch.Tensor):
        """face_masks plus the landmarks (N, 98, 3) in the pixels of x (heatmap_landmarks)."""
        size = x.shape[-1]
        x = F.interpolate(x, size=FAN_INPUT_SIZE, mode="bilinear")
        heatmaps = self(x * 0.5 + 0.5)[:, :-1]  # drop the boundary channel
        landmarks = heatmap_landmarks(heatmaps, size)
        heatmaps = F.interpolate(heatmaps, scale_factor=FAN_INPUT_SIZE // heatmaps.shape[2],
                                 mode="bilinear", align_corners=True)
        return (*heatmaps_to_masks(heatmaps), landmarks)


def heatmap_landmarks(heatmaps: torch.Tensor, image_size: int) -> torch.Tensor:
    """Heatmaps (N, L, H, W) -> (N, L, 3): x, y in the pixels of the ``image_size`` image the
    heatmaps were computed from (pixel centres at integers) and each heatmap's peak value.

    The point is the centroid of the heatmap above half its peak: sub-pixel and continuous
    in the heatmap (steadier from frame to frame than an argmax on the 64x64 grid), and made of
    ops every engine runs (ReduceMax, Relu, ReduceSum)."""
    n, c, h, w = heatmaps.shape
    peak = heatmaps.amax(dim=(2, 3), keepdim=True)
    weight = F.relu(heatmaps - 0.5 * peak)
    total = weight.sum(dim=(2, 3)).clamp_min(1e-12)
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device).view(1, 1, 1, w)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device).view(1, 1, h, 1)
    gx = (weight * xs).sum(dim=(2, 3)) / total
    gy = (weight * ys).sum(dim=(2, 3)) / total
    # heatmap cell j covers image pixels [j*k, (j+1)*k): its centre is at (j + 0.5) * k - 0.5
    kx, ky = image_size / w, image_size / h
    return torch.stack([(gx + 0.5) * kx - 0.5, (gy + 0.5) * ky - 0.5, peak.view(n, c)], dim=2)


# Landmark index ranges of the 98-point (WFLW) layout.
# (60-67: the eye on the image's left, 68-75: the other eye; 76 and 82: the mouth corners.)
CHIN = (8, 25)
EYEBROWS = (33, 51)
NOSE = (51, 55)
NOSTRILS = (55, 60)
EYES = (60, 76)
LIP_UPPER = (77, 82)
LIP_LOWER = (83, 88)
LIP_INNER = (88, 96)
# Channels cleared from the first mask: the outer jaw line and the ends of eyebrows and lips.
ZEROED = list(range(0, 8)) + list(range(25, 33)) + [33, 46, 76, 82]


def _shift_up(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Move heatmap content up by ``pixels`` rows (down when negative), wrapping around."""
    return torch.roll(x, shifts=-pixels, dims=2) if pixels else x


def _group(x: torch.Tensor, channels: list[int], power: int = 1) -> torch.Tensor:
    """Sum over ``channels`` (contiguous runs, each sliced once) of x ** power: (N, 1, H, W)."""
    runs, total = [], None
    for c in sorted(channels):
        if runs and runs[-1][1] == c:
            runs[-1][1] = c + 1
        else:
            runs.append([c, c + 1])
    for lo, hi in runs:
        part = x[:, lo:hi]
        part = (part ** power if power != 1 else part).sum(dim=1, keepdim=True)
        total = part if total is None else total + part
    return total


def heatmaps_to_masks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """98 landmark heatmaps (N, 98, H, W) -> (whole-face mask, mask without chin/lips/eyebrows).

    Follows the official post-processing: drop weak responses, min-max normalise each heatmap,
    move and sharpen the heatmaps of some facial parts, sum them into masks. Each part's
    channels are summed before they are moved (a move is the same for a whole part, and
    summing commutes with it), so the full-size heatmaps are never split, moved or stacked
    again channel by channel: at 256 px those copies took two thirds of the exported FAN's time
    (OpenVINO at bf16).
    """
    n, c, h, w = x.shape
    x = torch.where(x < 0.1, 0.0, x)
    flat = x.reshape(n, c, h * w)
    low = flat.amin(dim=2, keepdim=True)
    high = flat.amax(dim=2, keepdim=True)
    x = ((flat - low) / (high - low + 1e-6)).reshape(n, c, h, w)

    scale = h // 256
    zeroed = set(ZEROED)

    def part(span: tuple[int, int], rows: int = 0, power: int = 1) -> torch.Tensor:
        kept = [i for i in range(*span) if i not in zeroed]
        return _shift_up(_group(x, kept, power), rows)

    eyes = _group(x, list(range(*EYES)), 3)
    eyes_plain = _group(x, list(range(*EYES)))
    # in both masks: the nose, nostrils, eyes and the two eye centres (96, 97)
    inner = (part((NOSE[0], NOSE[0] + 1)) + part((NOSE[0] + 1, NOSE[1]), 4 * scale)
             + part(NOSTRILS, 8 * scale, 4) + _shift_up(eyes, -8) + _shift_up(eyes_plain, -24)
             + part((LIP_INNER[1], c)))
    # the whole face adds the chin, eyebrows and lips
    face = (inner + part(CHIN, 0, 3) + part(EYEBROWS, -7 * scale, 2)
            + part(LIP_UPPER, -8 * scale, 4) + part(LIP_LOWER, 8 * scale, 4)
            + part(LIP_INNER, -2 * scale, 3))
    face = torch.nan_to_num(face, nan=0.0)
    return face.clamp(0, 1), inner.clamp(0, 1)
