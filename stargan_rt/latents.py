"""The one definition of `--seed N` for StarGAN v2 latent codes, shared by the PyTorch reference
and the torch-free runtime so that the same seed gives the same style everywhere."""
from __future__ import annotations

import numpy as np


def latent_for_seed(seed: int, latent_dim: int, count: int = 1) -> np.ndarray:
    """z ~ N(0, I), float32 (count, latent_dim), from numpy's PCG64 seeded with ``seed``."""
    rng = np.random.default_rng(int(seed))
    return rng.standard_normal((count, latent_dim), dtype=np.float32)
