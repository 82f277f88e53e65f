"""Sample grids: a run's input / output images as one PNG."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from stargan_rt.files import write_atomic


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) in [-1,1] -> uint8 (N,H,W,3) RGB."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def save_grid(path: Path, columns: list[torch.Tensor]) -> None:
    """PNG grid: one row per sample, columns = [input, output per target...]; atomic."""
    cols = [to_uint8(c) for c in columns]
    rows = [np.concatenate([c[i] for c in cols], axis=1) for i in range(len(cols[0]))]
    grid = np.concatenate(rows, axis=0)[:, :, ::-1]
    ok, data = cv2.imencode(".png", grid)
    if not ok:
        return
    write_atomic(path, data.tobytes())
