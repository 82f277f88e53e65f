"""The exponential moving average of a network's weights (the G_ema a bundle ships)."""
from __future__ import annotations

import torch


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float, step: int) -> None:
    """ema = b * ema + (1 - b) * model, for parameters; buffers copied. b = min(beta,
    (1 + step) / (10 + step)): without this warm-up a short run's EMA (0.999 over 1000 steps)
    still holds 37 % of the random initial weights; after a few thousand steps b = beta."""
    beta = min(beta, (1.0 + step) / (10.0 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - beta)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)
