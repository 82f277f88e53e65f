"""Differentiable augmentation of what the discriminator sees (DiffAugment's translation).

Why: with a few thousand images the discriminator's classifier head overfits and the generator
learns to satisfy it with small, non-semantic pixel changes (G's classification loss near 0 while
an independent classifier still sees the old attribute: the smile and glasses failure). Shifting
every image the discriminator sees, real and generated alike, by a random few pixels makes both
of its heads judge position-independent content, so the generator has to draw the feature.
Colour augmentations are left out on purpose: they would change the hair-colour labels.
"""
from __future__ import annotations

import torch


def translate(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Shift each image by its own random integer offset of up to ``ratio`` of its size in x and
    y, filling with zeros (mid-grey in [-1, 1]). Gradients flow to ``x``; ratio 0 returns x."""
    if ratio <= 0:
        return x
    b, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy + sy  # (b, h, 1) in padded coords
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx + sx  # (b, 1, w)
    padded = torch.nn.functional.pad(x, (sx, sx, sy, sy))
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # Advanced indexing on (batch, row, col) with channels kept: (b, h, w, c) -> (b, c, h, w).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
