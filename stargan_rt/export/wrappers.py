"""torch modules that put frame I/O around the networks, so it ends up inside the ONNX graph.

uint8 variant: NHWC BGR uint8 in -> cast, / 127.5 - 1, BGR->RGB (Gather), NHWC->NCHW (Transpose);
image out -> clamp [-1, 1], (y + 1) * 127.5, round (half to even, like numpy.rint), RGB->BGR,
NCHW->NHWC, cast to uint8. The float variant passes the NCHW [-1, 1] tensors straight through.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_SWAP = [2, 1, 0]  # BGR <-> RGB


def frames_to_unit(image: torch.Tensor) -> torch.Tensor:
    """uint8 (N, S, S, 3) BGR -> float32 (N, 3, S, S) RGB in [-1, 1]."""
    x = image.to(torch.float32).permute(0, 3, 1, 2)
    x = x[:, _SWAP]
    return x * (1.0 / 127.5) - 1.0


def unit_to_frames(y: torch.Tensor) -> torch.Tensor:
    """float (N, 3, S, S) RGB (nominally [-1, 1]) -> uint8 (N, S, S, 3) BGR."""
    y = torch.round((y.clamp(-1.0, 1.0) + 1.0) * 127.5)
    y = y[:, _SWAP].permute(0, 2, 3, 1)
    return y.to(torch.uint8)


class _ImageIO(nn.Module):
    def __init__(self, net: nn.Module, io: str):
        super().__init__()
        self.net = net
        self.uint8 = io == "uint8"

    def _in(self, image: torch.Tensor) -> torch.Tensor:
        return frames_to_unit(image) if self.uint8 else image

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return unit_to_frames(y) if self.uint8 else y


class GeneratorV1IO(_ImageIO):
    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._out(self.net(self._in(image), labels))


class ClassifierV1IO(_ImageIO):
    """v1 discriminator reduced to its attribute logits."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self._in(image))[1]


class GeneratorV2IO(_ImageIO):
    def forward(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self._out(self.net(self._in(image), style))


class GeneratorV2MaskedIO(_ImageIO):
    """GeneratorV2.forward with masks, with the feature sizes as Python ints.

    The model keys its high-pass skips by ``x.shape[2]``, which is a tensor while tracing; here the
    sizes are followed statically from the fixed image size (the tests check this equals the
    model's own forward).
    """

    def forward(self, image: torch.Tensor, style: torch.Tensor, mask_face: torch.Tensor,
                mask_inner: torch.Tensor) -> torch.Tensor:
        from stargan_rt.models.v2 import HPF_SKIP_SIZES

        g = self.net
        size = g.img_size
        x = g.from_rgb(self._in(image))
        skips = {}
        for block in g.encode:
            if size in HPF_SKIP_SIZES:
                skips[size] = x
            x = block(x)
            if block.downsample:
                size //= 2
        for block in g.decode:
            x = block(x, style)
            if block.upsample:
                size *= 2
            if size in HPF_SKIP_SIZES:
                mask = mask_face if size == 32 else mask_inner
                mask = F.interpolate(mask, size=(size, size), mode="bilinear")
                skip = skips[size]
                channels = int(skip.shape[1])  # static: a constant in the traced graph
                weight = g.hpf.filter[None, None].expand(channels, 1, 3, 3)
                x = x + F.conv2d(mask * skip, weight, padding=1, groups=channels)
        return self._out(g.to_rgb(x))


class StyleEncoderIO(_ImageIO):
    def forward(self, image: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return self.net(self._in(image), domain)


class FanMasksIO(_ImageIO):
    def forward(self, image: torch.Tensor):
        # FAN.face_masks with static sizes (it computes a scale factor from a traced shape),
        # plus the landmarks the runtime aligns the next crops with (in the input's pixels).
        from stargan_rt.models.fan import FAN_INPUT_SIZE, heatmap_landmarks, heatmaps_to_masks

        x = self._in(image)
        size = x.shape[-1]
        x = F.interpolate(x, size=(FAN_INPUT_SIZE, FAN_INPUT_SIZE), mode="bilinear")
        heatmaps = self.net(x * 0.5 + 0.5)[:, :-1]  # drop the boundary channel
        landmarks = heatmap_landmarks(heatmaps, int(size))
        heatmaps = F.interpolate(heatmaps, size=(FAN_INPUT_SIZE, FAN_INPUT_SIZE),
                                 mode="bilinear", align_corners=True)
        return (*heatmaps_to_masks(heatmaps), landmarks)


class MappingIO(nn.Module):
    def __init__(self, net: nn.Module, io: str = "float"):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return self.net(z, domain)


WRAPPERS = {
    ("v1", "generator"): GeneratorV1IO,
    ("v1", "discriminator"): ClassifierV1IO,
    ("v2", "mapping_network"): MappingIO,
    ("v2", "style_encoder"): StyleEncoderIO,
    ("v2", "fan"): FanMasksIO,
}


def wrap(arch: str, network: str, net: nn.Module, io: str, w_hpf: float = 0) -> nn.Module:
    if (arch, network) == ("v2", "generator"):
        return (GeneratorV2MaskedIO if w_hpf > 0 else GeneratorV2IO)(net, io).eval()
    return WRAPPERS[(arch, network)](net, io).eval()
