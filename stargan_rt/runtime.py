"""The runtime translator: engines for one bundle, target and precision, with the same interface as
the PyTorch reference (stargan_rt/reference.py ``TorchTranslator``); the engines come from
``stargan_rt.build`` and this module only runs them.

No torch here: a deployed device needs numpy, OpenCV and its engine's runtime. The ONNX graphs a
build needs are kept in the engine cache (``onnx/<bundle hash>/<io>/``); only when they are
missing is the bundle exported, which needs torch (``pip install 'stargan-rt[export]'``).

Per frame: v1 runs the generator (and, for ``set_domain``, the discriminator's classifier to keep
the source's other attributes); v2 runs the FAN masks engine (w_hpf > 0) and the generator. v1
label vectors and v2 styles (mapping network or style encoder engine) are computed once per
target and cached.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from stargan_rt.backends import BuildInfo, Engine
from stargan_rt.build import BuildRequest, BuildResult, build
from stargan_rt.bundle import Bundle, v1_target_labels
from stargan_rt.errors import UserError
from stargan_rt.latents import latent_for_seed
from stargan_rt.targeting import TRUNCATION_SAMPLES, TargetedTranslator

Log = Callable[[str], None]

# -- the translator --------------------------------------------------------------------------------
class Translator(TargetedTranslator):
    """Engine-backed translator; same interface as reference.TorchTranslator."""

    def __init__(self, bundle: Bundle, target: str, precision: str, engines: dict[str, Engine],
                 infos: list[BuildInfo] | None = None):
        super().__init__(bundle)
        self.target = target
        self.precision = precision
        self.engines = engines
        self.infos = infos or []

    @classmethod
    def create(cls, model=None, target: str = "auto", precision: str = "fp32", cache_dir=None,
               log: Log = print, calib=None, rebuild: bool = False,
               streams: int = 1) -> Translator:
        result = build(BuildRequest(model, target, precision, cache_dir, "uint8", calib,
                                    rebuild=rebuild, streams=streams), log)
        for info in result.infos:
            if info.built:
                log(f"built {info.target} {info.precision} {info.network} engine in "
                    f"{info.seconds:.1f} s -> {info.path}")
        return cls.from_build(result)

    @classmethod
    def from_build(cls, result: BuildResult) -> Translator:
        return cls(result.bundle, result.target, result.precision, result.engines, result.infos)

    def close(self) -> None:
        """Close the engines (idempotent); the translator cannot run afterwards."""
        for engine in self.engines.values():
            engine.close()

    def __enter__(self) -> Translator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- choosing the target -------------------------------------------------------------------
    def set_style_vector(self, style) -> None:
        """v2: use this style vector (1, style_dim) as is (parity feeds the reference's)."""
        self._style = np.asarray(style, dtype=np.float32).reshape(1, -1)

    # -- targets ---------------------------------------------------------------------------------
    def source_labels(self, crops: np.ndarray) -> np.ndarray:
        engine = self.engines.get("discriminator")
        if engine is None:
            raise UserError(f"{self.bundle.path} has no discriminator to estimate the source's "
                            "attributes; give the full target vector with --labels A=1,B=0,...")
        return (engine.run({"image": crops})["logits"] > 0).astype(np.float32)

    def _v1_labels(self, crops: np.ndarray) -> np.ndarray:
        if self._labels is not None:
            return np.repeat(self._labels, len(crops), axis=0)
        if self._domain is None:
            raise UserError("no target: give --domain NAME or --labels A=1,B=0,...")
        return v1_target_labels(self.bundle.manifest, self._domain,
                                lambda: self.source_labels(crops),
                                lambda: np.zeros((len(crops), len(self.domains)), np.float32))

    def style(self) -> np.ndarray:
        if self._style is None:
            self._require_domain()
            self._style = self._compute_style(**self._style_request)
        return self._style

    def _compute_style(self, seed: int, ref_bgr, psi: float) -> np.ndarray:
        domain = np.array([self._domain], dtype=np.int64)
        if ref_bgr is not None:
            from stargan_rt.imaging import fit_to_model

            ref = fit_to_model(np.asarray(ref_bgr, dtype=np.uint8), self.image_size)[None]
            return self.engines["style_encoder"].run({"image": ref, "domain": domain})["style"]
        latent_dim = int(self.bundle.manifest.config["latent_dim"])
        mapping = self.engines["mapping_network"]
        style = mapping.run({"z": latent_for_seed(seed, latent_dim), "domain": domain})["style"]
        if psi != 1.0:
            z = latent_for_seed(0, latent_dim, TRUNCATION_SAMPLES)
            styles = mapping.run({"z": z, "domain": np.repeat(domain, len(z))})["style"]
            mean = styles.astype(np.float64).mean(0, keepdims=True)
            style = (mean + psi * (style - mean)).astype(np.float32)
        return style

    # -- translation -------------------------------------------------------------------------------
    def feeds(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """The generator's inputs for these crops (labels / style / masks; with a FAN also
        its ``landmarks``, which the generator engine ignores)."""
        if self.arch == "v1":
            return {"image": crops, "labels": self._v1_labels(crops)}
        feeds = {"image": crops, "style": np.repeat(self.style(), len(crops), axis=0)}
        if "fan" in self.engines:
            feeds.update(self.engines["fan"].run({"image": crops}))
        return feeds

    @property
    def locates_landmarks(self) -> bool:
        """Whether translate_and_locate returns landmarks (v2 models with a FAN)."""
        return "fan" in self.engines

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) BGR crops -> uint8 (N, S, S, 3) BGR translations."""
        return self.translate_and_locate(crops)[0]

    def translate_and_locate(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Translations plus, for models with a FAN, the (N, 98, 3) landmarks (x, y in crop
        pixels, peak) that the FAN found on the way: the live runtime aligns the next crops of
        each face with them at no extra cost. None for other models."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (
                self.image_size, self.image_size, 3):
            raise UserError(f"expected uint8 crops of shape (N, {self.image_size}, "
                            f"{self.image_size}, 3), got {crops.dtype} {crops.shape}")
        if len(crops) == 0:
            return crops.copy(), None
        feeds = self.feeds(np.ascontiguousarray(crops))
        translated = self.engines["generator"].run(feeds)["translated"]
        return translated, feeds.get("landmarks")

    def describe(self) -> str:
        return self.engines["generator"].describe()
