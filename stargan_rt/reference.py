"""The PyTorch fp32 reference translator: what every engine is checked against.

Same interface as the runtime ``Translator`` (stargan_rt/runtime.py): pick a target with
``set_domain`` / ``set_labels`` (v1) or ``set_domain`` + ``set_style`` (v2), then call it with
uint8 BGR crops at the model's size.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from stargan_rt.bundle import Bundle, v1_target_labels
from stargan_rt.errors import UserError
from stargan_rt.latents import latent_for_seed
from stargan_rt.imaging import bgr_to_unit_nchw, fit_to_model, unit_nchw_to_bgr
from stargan_rt.models.build import load_network
from stargan_rt.targeting import TRUNCATION_SAMPLES, TargetedTranslator

class TorchTranslator(TargetedTranslator):
    def __init__(self, bundle_path: str | os.PathLike, device: str = "cpu"):
        super().__init__(Bundle.open(bundle_path))
        manifest = self.bundle.manifest
        self.device = device
        self.target = "torch"
        self.precision = "fp32"
        self.generator = load_network(self.bundle, "generator", device)
        self.discriminator = (load_network(self.bundle, "discriminator", device)
                              if self.bundle.has("discriminator") else None)
        if self.arch == "v2":
            self.mapping = load_network(self.bundle, "mapping_network", device)
            self.style_encoder = load_network(self.bundle, "style_encoder", device)
            self.fan = None
            if manifest.config["w_hpf"] > 0:
                if not self.bundle.has("fan"):
                    raise UserError(f"{self.bundle.path}: w_hpf > 0 needs the FAN network for "
                                    "its masks; re-import with --fan wing.ckpt")
                self.fan = load_network(self.bundle, "fan", device)

    # -- translation -----------------------------------------------------------------------
    @torch.no_grad()
    def source_labels(self, x: torch.Tensor) -> torch.Tensor:
        """v1: the source's attributes, estimated by the discriminator's classifier."""
        if self.discriminator is None:
            raise UserError(f"{self.bundle.path} has no discriminator to estimate the source's "
                            "attributes; give the full target vector with --labels A=1,B=0,...")
        _, logits = self.discriminator(x)
        return (logits > 0).float()

    def _v1_targets(self, x: torch.Tensor) -> torch.Tensor:
        if self._labels is not None:
            return torch.from_numpy(self._labels).expand(x.shape[0], -1).to(self.device)
        if self._domain is None:
            raise UserError("no target: give --domain NAME or --labels A=1,B=0,...")
        return v1_target_labels(self.bundle.manifest, self._domain, lambda: self.source_labels(x),
                                lambda: x.new_zeros((x.shape[0], len(self.domains))))

    def set_style_vector(self, style) -> None:
        """v2: use this style vector (1, style_dim) as is (live parity feeds the engine's)."""
        self._style = torch.as_tensor(np.asarray(style, dtype=np.float32).reshape(1, -1),
                                      device=self.device)

    @torch.no_grad()
    def style(self) -> torch.Tensor:
        self._require_domain()
        if self._style is None:
            self._style = self._compute_style(**self._style_request)
        return self._style

    def _compute_style(self, seed: int, ref_bgr: np.ndarray | None, psi: float) -> torch.Tensor:
        y = torch.tensor([self._domain], device=self.device)
        if ref_bgr is not None:
            ref = torch.from_numpy(bgr_to_unit_nchw(fit_to_model(ref_bgr, self.image_size)[None]))
            return self.style_encoder(ref.to(self.device), y)
        latent_dim = self.bundle.manifest.config["latent_dim"]
        style = self.mapping(torch.from_numpy(latent_for_seed(seed, latent_dim)).to(self.device), y)
        if psi != 1.0:
            z = torch.from_numpy(latent_for_seed(0, latent_dim, TRUNCATION_SAMPLES))
            mean = self.mapping(z.to(self.device), y.expand(z.shape[0])).mean(0, keepdim=True)
            style = torch.lerp(mean, style, psi)
        return style

    @torch.no_grad()
    def translate_float(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, 3, S, S) RGB in [-1, 1] -> raw model output (N, 3, S, S)."""
        x = x.to(self.device)
        if self.arch == "v1":
            return self.generator(x, self._v1_targets(x))
        masks = self.fan.face_masks(x) if self.fan is not None else None
        return self.generator(x, self.style().expand(x.shape[0], -1), masks)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) BGR crops -> uint8 (N, S, S, 3) BGR translations."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (
                self.image_size, self.image_size, 3):
            raise UserError(f"expected uint8 crops of shape (N, {self.image_size}, "
                            f"{self.image_size}, 3), got {crops.dtype} {crops.shape}")
        out = self.translate_float(torch.from_numpy(bgr_to_unit_nchw(crops)))
        return unit_nchw_to_bgr(out.cpu().numpy())

    locates_landmarks = False  # the FAN's landmarks align crops in the runtime only

    def translate_and_locate(self, crops: np.ndarray) -> tuple[np.ndarray, None]:
        return self(crops), None

    def describe(self) -> str:
        return f"torch {torch.__version__} fp32 ({self.device})"
