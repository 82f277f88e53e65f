"""Engines against the PyTorch fp32 reference: PSNR, SSIM and max absolute error per output.

The reference is independent of the export code: the bundle's torch networks called on their own
(``models/``), with the frame conversion of ``imaging`` (numpy) for the uint8 I/O variant. Each
network is fed the same inputs on both sides (v2: the generator gets the reference's styles and,
when w_hpf > 0, the reference's FAN masks, so an error is attributed to the network that makes it).

Pass criteria (defaults, configurable), by the precision the engine ran at:
  fp32: uint8 outputs max abs error <= 2 levels; float outputs max abs error <= 1e-3
  fp16: PSNR >= 40 dB;   int8: PSNR >= 30 dB
Float outputs' PSNR uses the reference's value range as the peak.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.metrics import max_abs_err, psnr, ssim

__all__ = ["MIN_FRAMES", "OutputResult", "ParityReport", "Reference", "Thresholds", "check_engines",
           "compare", "load_frames", "max_abs_err", "psnr", "ssim"]

MIN_FRAMES = 32
HELD_OUT_SEED = 7919   # synthetic parity frames differ from the calibration frames (seed 0)


@dataclass
class Thresholds:
    fp32_max_err_uint8: float = 2.0
    fp32_max_err_float: float = 1e-3
    fp16_psnr: float = 40.0
    int8_psnr: float = 30.0
    # The FAN's outputs at fp32. Its masks threshold heatmaps at 0.1, so a value at the
    # threshold flips a pixel with the summation order (OpenVINO fp32 on an AMD EPYC: max error
    # 0.43-0.57 at 66-69 dB): they are judged by PSNR. Its landmarks are crop pixels.
    fp32_mask_psnr: float = 60.0
    fp32_max_err_landmarks: float = 0.05

    def criterion(self, precision: str, is_uint8: bool = True,
                  layout: str = "") -> tuple[str, float]:
        """(metric, limit): ("max_abs_err", at most) for fp32 (masks: ("psnr_db", at least)),
        ("psnr_db", at least) otherwise."""
        if precision == "fp32":
            if layout == "nchw-mask":
                return "psnr_db", self.fp32_mask_psnr
            if layout == "landmarks":
                return "max_abs_err", self.fp32_max_err_landmarks
            return "max_abs_err", self.fp32_max_err_uint8 if is_uint8 else self.fp32_max_err_float
        return "psnr_db", self.fp16_psnr if precision == "fp16" else self.int8_psnr

    def judge(self, precision: str, is_uint8: bool, psnr_db: float, max_err: float,
              layout: str = ""):
        """(passed, criterion text)."""
        metric, limit = self.criterion(precision, is_uint8, layout)
        if metric == "max_abs_err":
            return max_err <= limit, f"max err <= {limit:g}"
        return psnr_db >= limit, f"PSNR >= {limit:g} dB"


@dataclass
class OutputResult:
    target: str
    precision: str          # the requested build precision
    network: str
    output: str
    engine: str
    engine_precision: str   # the precision this network's engine ran at
    psnr_db: float
    ssim: float | None
    max_abs_err: float
    criterion: str
    passed: bool

    def to_json(self) -> dict:
        data = asdict(self)
        data["psnr_db"] = "inf" if math.isinf(self.psnr_db) else round(self.psnr_db, 3)
        data["ssim"] = None if self.ssim is None else round(self.ssim, 6)
        data["max_abs_err"] = float(self.max_abs_err)
        return data


def compare(reference: np.ndarray, test: np.ndarray,
            layout: str) -> tuple[float, float | None, float]:
    """(PSNR dB, SSIM or None, max abs error). layout: 'nhwc-uint8', 'nchw-float', 'nchw-mask'
    (a thresholded [0, 1] map), 'vector' or 'landmarks' (N, points, (x, y, peak))."""
    if reference.shape != test.shape:
        raise UserError(f"engine output shape {test.shape} differs from the reference's "
                        f"{reference.shape}; rebuild the engine from a fresh export")
    ref = reference.astype(np.float64)
    out = test.astype(np.float64)
    max_err = max_abs_err(ref, out)
    if layout == "nhwc-uint8":
        return psnr(ref, out, 255.0), ssim(ref, out, 255.0, -1), max_err
    peak = float(ref.max() - ref.min()) or 1.0
    quality = ssim(ref, out, peak, 1) if layout in ("nchw-float", "nchw-mask") else None
    return psnr(ref, out, peak), quality, max_err


@dataclass
class ParityReport:
    model: str
    frames: dict
    thresholds: dict
    results: list[OutputResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    builds: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def to_json(self) -> dict:
        return {"model": self.model, "frames": self.frames, "thresholds": self.thresholds,
                "passed": self.passed, "results": [r.to_json() for r in self.results],
                "skipped": self.skipped, "builds": self.builds}

    def table(self) -> str:
        head = (f"{'target':<12} {'prec':<5} {'network':<22} {'output':<11} {'PSNR dB':>8} "
                f"{'SSIM':>7} {'max err':>9}  {'criterion':<18} result")
        lines = [head, "-" * len(head)]
        for r in self.results:
            p = "inf" if math.isinf(r.psnr_db) else f"{r.psnr_db:.2f}"
            s = "-" if r.ssim is None else f"{r.ssim:.4f}"
            e = f"{r.max_abs_err:.0f}" if r.max_abs_err >= 1 else f"{r.max_abs_err:.2e}"
            net = r.network if r.engine_precision == r.precision else \
                f"{r.network}({r.engine_precision})"
            lines.append(f"{r.target:<12} {r.precision:<5} {net:<22} {r.output:<11} {p:>8} "
                         f"{s:>7} {e:>9}  {r.criterion:<18} {'PASS' if r.passed else 'FAIL'}")
        for s in self.skipped:
            lines.append(f"{s['target']:<12} {s.get('precision', '*'):<5} skipped: {s['reason']}")
        return "\n".join(lines)


# -- frames ----------------------------------------------------------------------------------------
def load_frames(source, size: int, count: int = MIN_FRAMES) -> tuple[np.ndarray, str]:
    """(uint8 (count, S, S, 3) BGR frames, description): DIR or VIDEO, else held-out synthetic
    faces from the built-in demo data (not noise)."""
    from stargan_rt.export.calibration import load_calibration_frames, synthetic_faces

    if count < MIN_FRAMES:
        raise UserError(f"parity needs at least {MIN_FRAMES} frames, got --count {count}")
    if source is None:
        return synthetic_faces(size, count, seed=HELD_OUT_SEED), \
            f"{count} synthetic faces (demo data, seed {HELD_OUT_SEED})"
    return load_calibration_frames(source, size, count), f"{count} frames from {source}"


# -- the reference ---------------------------------------------------------------------------------
class Reference:
    """The bundle's torch networks and the per-network inputs every engine is fed."""

    def __init__(self, bundle, frames: np.ndarray, seed: int = 0):
        import torch

        from stargan_rt.imaging import bgr_to_unit_nchw
        from stargan_rt.models.build import load_network
        from stargan_rt.latents import latent_for_seed

        self.torch = torch
        self.bundle = bundle
        manifest = bundle.manifest
        self.arch = manifest.arch
        self.frames = frames
        self.unit = bgr_to_unit_nchw(frames)          # float32 (N, 3, S, S) RGB [-1, 1]
        n = len(frames)
        self.nets = {}
        self._cases: dict = {}
        self._load = lambda name: self.nets.setdefault(name, load_network(bundle, name))
        rng = np.random.default_rng(seed)
        num_domains = len(manifest.domains)
        self.domain = (np.arange(n) % num_domains).astype(np.int64)
        if self.arch == "v1":
            labels = (rng.random((n, num_domains)) < 0.5).astype(np.float32)
            labels[np.arange(n), self.domain] = 1.0
            self.labels = labels
        else:
            latent_dim = int(manifest.config["latent_dim"])
            self.z = np.concatenate([latent_for_seed(seed + i, latent_dim) for i in range(n)])
            with torch.no_grad():
                self.style = self._load("mapping_network")(
                    torch.from_numpy(self.z), torch.from_numpy(self.domain)).numpy()
            self.masks = None
            if manifest.config.get("w_hpf", 0) > 0:
                with torch.no_grad():
                    found = self._load("fan").masks_and_landmarks(torch.from_numpy(self.unit))
                self.masks = tuple(t.numpy() for t in found)  # face, inner, landmarks

    def image(self, io: str) -> np.ndarray:
        return self.frames if io == "uint8" else self.unit

    def case(self, network: str, io: str) -> tuple[dict, dict, dict]:
        """(engine feeds, reference outputs, output layouts) for one network (computed once)."""
        key = (network, io)
        if key not in self._cases:
            self._cases[key] = self._case(network, io)
        return self._cases[key]

    def _case(self, network: str, io: str) -> tuple[dict, dict, dict]:
        from stargan_rt.imaging import unit_nchw_to_bgr

        torch = self.torch
        t = torch.from_numpy
        x = t(self.unit)
        image_layout = "nhwc-uint8" if io == "uint8" else "nchw-float"

        def as_image(y: np.ndarray) -> np.ndarray:
            return unit_nchw_to_bgr(y) if io == "uint8" else y

        net = self._load(network)
        with torch.no_grad():
            if network == "generator" and self.arch == "v1":
                feeds = {"image": self.image(io), "labels": self.labels}
                out = {"translated": as_image(net(x, t(self.labels)).numpy())}
                return feeds, out, {"translated": image_layout}
            if network == "generator":
                feeds = {"image": self.image(io), "style": self.style}
                masks = None
                if self.masks is not None:
                    feeds.update(mask_face=self.masks[0], mask_inner=self.masks[1])
                    masks = (t(self.masks[0]), t(self.masks[1]))
                out = {"translated": as_image(net(x, t(self.style), masks).numpy())}
                return feeds, out, {"translated": image_layout}
            if network == "discriminator":
                out = {"logits": net(x)[1].numpy()}
                return {"image": self.image(io)}, out, {"logits": "vector"}
            if network == "mapping_network":
                out = {"style": self.style}
                return {"z": self.z, "domain": self.domain}, out, {"style": "vector"}
            if network == "style_encoder":
                out = {"style": net(x, t(self.domain)).numpy()}
                return {"image": self.image(io), "domain": self.domain}, out, {"style": "vector"}
            if network == "fan":
                return ({"image": self.image(io)},
                        {"mask_face": self.masks[0], "mask_inner": self.masks[1],
                         "landmarks": self.masks[2]},
                        {"mask_face": "nchw-mask", "mask_inner": "nchw-mask",
                         "landmarks": "landmarks"})
        raise UserError(f"parity does not know the {network} network")


def check_engines(reference: Reference, target: str, precision: str, engines: dict, io: str,
                  thresholds: Thresholds) -> list[OutputResult]:
    from stargan_rt.build import SUPPORT_NETWORKS, network_precision

    results = []
    for network, engine in engines.items():
        feeds, expected, layouts = reference.case(network, io)
        got = engine.run(feeds)
        engine_precision = network_precision(network, precision, target)
        # a support network below fp32 spends the build's accuracy budget: judged by its limit
        budget = precision if network in SUPPORT_NETWORKS and engine_precision != "fp32" \
            else engine_precision
        for name, ref in expected.items():
            if name not in got:
                raise UserError(f"{target} {network} engine has no output {name!r} "
                                f"(it has {sorted(got)}); rebuild it from a fresh export")
            p, s, e = compare(ref, got[name], layouts[name])
            ok, criterion = thresholds.judge(budget, ref.dtype == np.uint8, p, e, layouts[name])
            results.append(OutputResult(target, precision, network, name, engine.describe(),
                                        engine_precision, p, s, e, criterion, ok))
    return results
