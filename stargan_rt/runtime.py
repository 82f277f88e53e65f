"""The runtime translator: engines for one bundle, target and precision, with the same interface as
the PyTorch reference (stargan_rt/reference.py ``TorchTranslator``).

No torch here: a deployed device needs numpy, OpenCV and its engine's runtime. The ONNX graphs a
build needs are kept in the engine cache (``onnx/<bundle hash>/<io>/``); only when they are
missing is the bundle exported, which needs torch (``pip install 'stargan-rt[export]'``).

Per frame: v1 runs the generator (and, for ``set_domain``, the discriminator's classifier to keep
the source's other attributes); v2 runs the FAN masks engine (w_hpf > 0) and the generator. v1
label vectors and v2 styles (mapping network or style encoder engine) are computed once per
target and cached.

Which networks run at the requested precision: the per-frame generator. The classifier, FAN,
mapping network and style encoder stay fp32 (cheap, or computed once, and accuracy-sensitive).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from stargan_rt.backends import PRECISIONS, TARGETS, BuildInfo, Engine, get_engine
from stargan_rt.backends.base import INSTALL_HINTS
from stargan_rt.backends.cache import EngineCache
from stargan_rt.bundle import Bundle, check_domain_target, v1_target_labels
from stargan_rt.errors import UserError
from stargan_rt.latents import latent_for_seed  # noqa: F401 (re-exported for parity)

Log = Callable[[str], None]

# Mean style for truncation (psi < 1) is taken over this many latent codes (official value).
TRUNCATION_SAMPLES = 10_000
# Networks whose engines run at the requested precision; the rest stay fp32.
REDUCED_PRECISION_NETWORKS = ("generator",)


def networks_for(bundle: Bundle) -> list[str]:
    """The inference networks a translator needs for this bundle."""
    manifest = bundle.manifest
    if manifest.arch == "v1":
        return ["generator"] + (["discriminator"] if bundle.has("discriminator") else [])
    nets = ["generator", "mapping_network", "style_encoder"]
    if manifest.config.get("w_hpf", 0) > 0:
        if not bundle.has("fan"):
            raise UserError(f"{bundle.path}: w_hpf > 0 needs the fan network for its masks, but "
                            "the bundle has none; re-import with --fan wing.ckpt")
        nets.append("fan")
    return nets


def network_precision(network: str, precision: str) -> str:
    return precision if network in REDUCED_PRECISION_NETWORKS else "fp32"


# -- target selection ----------------------------------------------------------------------------
def resolve_target(target: str, log: Log = print) -> str:
    """``auto`` -> the first available of tensorrt, openvino, onnxruntime (saying which and why);
    an explicit target is checked to be installed."""
    from stargan_rt.targets import PROBES, probe_all

    if target == "auto":
        statuses = probe_all()
        chosen = next((s for s in statuses if s.available), None)
        if chosen is None:
            raise UserError("no engine target is available: " + "; ".join(
                f"{s.name}: {s.detail}" for s in statuses)
                + f"; install one: {INSTALL_HINTS['openvino']}")
        skipped = [f"{s.name}: {s.detail}" for s in statuses[:statuses.index(chosen)]]
        why = f" (skipped {'; '.join(skipped)})" if skipped else " (first in the preference order)"
        log(f"target auto -> {chosen.name} {chosen.version} on {chosen.detail}{why}")
        return chosen.name
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; expected auto or one of {', '.join(TARGETS)}")
    status = PROBES[target]()
    if not status.available:
        hint = ("" if "pip install" in status.detail
                else f"; install it with: {INSTALL_HINTS[target]}")
        raise UserError(f"target {target} is not available here: {status.detail}{hint}")
    return target


# -- ONNX graphs for a build -----------------------------------------------------------------------
def _calib_id(calib) -> str:
    if calib is None:
        return "demo"
    path = Path(calib)
    try:
        stamp = f"{path.resolve()}:{path.stat().st_mtime_ns}"
    except OSError:
        raise UserError(f"--calib {calib}: no such file or directory; give a folder of face "
                        "images or a video (at least 256 frames)") from None
    return hashlib.sha256(stamp.encode()).hexdigest()[:10]


@dataclass
class GraphSet:
    """The ONNX files one build uses: {network: path} plus notes for the user."""

    paths: dict[str, Path]
    notes: list[str] = field(default_factory=list)


def prepare_graphs(bundle: Bundle, target: str, precision: str, cache: EngineCache,
                   io: str = "uint8", calib=None, networks: list[str] | None = None,
                   log: Log = print) -> GraphSet:
    """Export (when not cached) and convert the graphs a target needs at a precision."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    networks = networks or networks_for(bundle)
    for net in networks:
        if not bundle.has(net):
            raise UserError(f"{bundle.path}: the bundle has no {net} network "
                            f"(it has: {', '.join(bundle.manifest.networks)})")
    folder = cache.onnx_dir(bundle.content_hash, io)
    fp32 = {net: folder / f"{net}.{io}.fp32.onnx" for net in networks}
    missing = [net for net, path in fp32.items() if not path.is_file()]
    if missing:
        if not _torch_available():
            raise UserError(f"no exported ONNX for {', '.join(missing)} of {bundle.path} in the "
                            f"engine cache {cache.root}, and exporting needs torch: "
                            "pip install 'stargan-rt[export]' (or copy the cache from a machine "
                            "that built it)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from stargan_rt.backends.cache import _disk_error
            raise _disk_error(folder, exc, cache.root) from None
        from stargan_rt.export import export_bundle

        made = export_bundle(bundle.path, folder, io=io, networks=missing, log=log)
        for net, path in made.items():
            if Path(path) != fp32[net]:
                os.replace(path, fp32[net])
    paths, notes = {}, []
    for net in networks:
        want = network_precision(net, precision)
        fuse = False
        if target == "tensorrt" and net == "generator" and bundle.manifest.arch == "v2":
            fuse, note = _tensorrt_adain_plugin()
            notes.append(note)
        if want == "fp32" and not fuse or target == "openvino" and want == "fp16":
            # OpenVINO converts the fp32 graph itself (bf16 / f16 inference hint).
            paths[net] = fp32[net]
            continue
        suffix = want if want != "int8" else f"int8-{_calib_id(calib)}"
        path = folder / f"{net}.{io}.{suffix}{'.fused' if fuse else ''}.onnx"
        if not path.is_file():
            _convert(fp32[net], path, want, fuse, calib, bundle, log)
        paths[net] = path
    return GraphSet(paths, notes)


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401  (only to know whether exporting is possible)
    except ImportError:
        return False
    return True


def _convert(source: Path, out: Path, precision: str, fuse: bool, calib, bundle: Bundle,
             log: Log) -> None:
    try:
        from stargan_rt.export.calibration import load_calibration_frames
        from stargan_rt.export.precision import prepare_graph
    except ImportError as exc:
        raise UserError(f"precision {precision} needs the precision converter "
                        f"(stargan_rt.export.precision: {exc})") from None
    frames = None
    if precision == "int8":
        frames = load_calibration_frames(calib, bundle.manifest.image_size)
        log(f"calibrating int8 on {len(frames)} frames from {calib or 'the built-in demo data'}")
    _, fused = prepare_graph(source, out, precision, fuse=fuse, calib_frames=frames)
    if fuse:
        log(f"tensorrt: fused {fused} AdaIN blocks into plugin nodes -> {out.name}")


def _tensorrt_adain_plugin() -> tuple[bool, str]:
    """Use the fused AdaIN graph when the TensorRT plugin library is there, else the unfused."""
    from stargan_rt.backends import tensorrt as trt_backend

    libs = trt_backend.plugin_libraries()
    if not libs:
        return False, (f"tensorrt: AdaIN plugin library not found (set {trt_backend.PLUGIN_ENV} "
                       f"or build {trt_backend.PLUGIN_LIBRARY}); using the unfused graph "
                       "(InstanceNormalization + Mul + Add)")
    return True, f"tensorrt: AdaIN plugin from {libs[0]}; using the fused graph"


def build_engines(model=None, target: str = "auto", precision: str = "fp32", cache_dir=None,
                  io: str = "uint8", calib=None, networks: list[str] | None = None,
                  log: Log = print, rebuild: bool = False):
    """Resolve bundle and target, prepare graphs, build or reuse engines.

    Returns (bundle, target, {network: Engine}, [BuildInfo], GraphSet)."""
    from stargan_rt.defaults import resolve_model

    bundle = Bundle.open(resolve_model(model))
    target = resolve_target(target, log)
    cache = EngineCache(cache_dir)
    graphs = prepare_graphs(bundle, target, precision, cache, io, calib, networks, log)
    for note in graphs.notes:
        log(note)
    engines, infos = {}, []
    for net, path in graphs.paths.items():
        engine, info = get_engine(target, path, net, network_precision(net, precision), cache, log,
                                  rebuild=rebuild)
        engines[net] = engine
        infos.append(info)
    return bundle, target, engines, infos, graphs


# -- the translator --------------------------------------------------------------------------------
class Translator:
    """Engine-backed translator; same interface as reference.TorchTranslator."""

    def __init__(self, bundle: Bundle, target: str, precision: str, engines: dict[str, Engine],
                 infos: list[BuildInfo] | None = None):
        manifest = bundle.manifest
        self.bundle = bundle
        self.arch = manifest.arch
        self.image_size = manifest.image_size
        self.domains = manifest.domain_names
        self.target = target
        self.precision = precision
        self.engines = engines
        self.infos = infos or []
        self._domain: int | None = None
        self._labels: np.ndarray | None = None
        self._style: np.ndarray | None = None
        self._style_request: dict = {"seed": 0, "ref_bgr": None, "psi": 1.0}

    @classmethod
    def create(cls, model=None, target: str = "auto", precision: str = "fp32", cache_dir=None,
               log: Log = print, calib=None, rebuild: bool = False) -> "Translator":
        bundle, target, engines, infos, _ = build_engines(model, target, precision, cache_dir,
                                                          "uint8", calib, None, log, rebuild)
        for info in infos:
            if info.built:
                log(f"built {info.target} {info.precision} {info.network} engine in "
                    f"{info.seconds:.1f} s -> {info.path}")
        return cls(bundle, target, precision, engines, infos)

    # -- choosing the target -------------------------------------------------------------------
    def set_domain(self, name: str) -> None:
        self._domain = self.bundle.domain_index(name)
        check_domain_target(self.bundle)
        self._labels = None
        self._style = None

    def set_labels(self, labels) -> None:
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
        if self.arch != "v2":
            raise UserError("styles (--seed/--ref/--psi) apply to StarGAN v2 models only")
        self._style_request = {"seed": 0 if seed is None else seed, "ref_bgr": ref_bgr,
                               "psi": float(psi)}
        self._style = None

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
            if self._domain is None:
                raise UserError("no target domain: give --domain NAME")
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
