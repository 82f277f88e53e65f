"""What a translator translates to, shared by the engine translator (``runtime.Translator``) and
the PyTorch reference (``reference.TorchTranslator``): a domain (v1: that attribute on; v2: the
domain of the style), a full v1 label vector, or a v2 style request. numpy only."""
from __future__ import annotations

from typing import Any

import numpy as np

from stargan_rt import options
from stargan_rt.bundle import Bundle, check_domain_target
from stargan_rt.errors import UserError

# Mean style for truncation (psi < 1) is taken over this many latent codes (official value).
TRUNCATION_SAMPLES = 10_000


class TargetedTranslator:
    """Base class: the model's facts and the target choice; subclasses compute styles (their
    ``_style`` cache, reset here whenever the target changes) and translate."""

    def __init__(self, bundle: Bundle):
        manifest = bundle.manifest
        self.bundle = bundle
        self.arch = manifest.arch
        self.image_size = manifest.image_size
        self.domains = manifest.domain_names
        self._domain: int | None = None
        self._labels: np.ndarray | None = None   # v1: (1, c_dim) float32 target vector
        self._style: Any = None                  # v2: (1, style_dim), in the subclass's type
        self._style_request: dict = {"seed": 0, "ref_bgr": None, "psi": 1.0}

    def set_domain(self, name: str) -> None:
        self._domain = self.bundle.domain_index(name)
        check_domain_target(self.bundle)
        self._labels = None
        self._style = None

    def set_labels(self, labels) -> None:
        """v1: the full target attribute vector (c_dim values of 0 / 1)."""
        if self.arch != "v1":
            raise UserError("--labels applies to StarGAN v1 models; v2 models take --domain")
        vector = np.asarray(labels, dtype=np.float32).reshape(1, -1)
        if vector.shape[1] != len(self.domains):
            raise UserError(f"expected {len(self.domains)} labels ({', '.join(self.domains)}), "
                            f"got {vector.shape[1]}")
        self._labels = vector
        self._domain = None

    def set_style(self, seed: int | None = None, ref_bgr: np.ndarray | None = None,
                  psi: float = 1.0) -> None:
        """v2: latent-guided (seed, optional truncation psi) or reference-guided (ref image)."""
        if self.arch != "v2":
            raise UserError("styles (--seed/--ref/--psi) apply to StarGAN v2 models only")
        self._style_request = {"seed": 0 if seed is None else options.SEED.check(seed, "seed"),
                               "ref_bgr": ref_bgr, "psi": options.PSI.check(psi, "psi")}
        self._style = None

    def _require_domain(self) -> int:
        if self._domain is None:
            raise UserError("no target domain: give --domain NAME")
        return self._domain
