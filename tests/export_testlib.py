"""Small random-weight bundles and helpers for the export tests (tests/test_export*.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stargan_rt.bundle import Bundle, Domain, Manifest, write_bundle
from stargan_rt.export.calibration import synthetic_faces
from stargan_rt.imaging import bgr_to_unit_nchw, unit_nchw_to_bgr
from stargan_rt.models.build import build_network, load_network

V1_CONFIG = dict(conv_dim=8, c_dim=3, repeat_num=2, d_conv_dim=8, d_repeat_num=5)
V2_CONFIG = dict(style_dim=16, latent_dim=8, max_conv_dim=64, dim_in=16, hidden_dim=32)


def make_bundle(out: Path, arch: str, size: int, config: dict, networks: list[str],
                domains: list[str], seed: int = 0) -> Path:
    manifest = Manifest(arch=arch, image_size=size, domains=[Domain(d) for d in domains],
                        config=dict(config), name=out.name)
    torch.manual_seed(seed)
    states = {}
    for name in networks:
        net = build_network(manifest, name)
        if name == "fan":  # give the BatchNorms non-trivial statistics
            for module in net.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
        states[name] = net.state_dict()
    write_bundle(out, manifest, states, overwrite=True)
    return out


def v1_bundle(root: Path) -> Path:
    return make_bundle(root / "v1", "v1", 32, V1_CONFIG, ["generator", "discriminator"],
                       ["Black_Hair", "Blond_Hair", "Smiling"])


def v2_bundle(root: Path, w_hpf: int = 0, with_fan: bool | None = None) -> Path:
    with_fan = w_hpf > 0 if with_fan is None else with_fan
    nets = ["generator", "mapping_network", "style_encoder"] + (["fan"] if with_fan else [])
    return make_bundle(root / f"v2-hpf{w_hpf}{'' if with_fan == (w_hpf > 0) else '-nofan'}",
                       "v2", 64, dict(V2_CONFIG, w_hpf=w_hpf), nets, ["female", "male"])


def faces(size: int, count: int, seed: int = 1) -> np.ndarray:
    """Face-like uint8 BGR crops (not noise): the synthetic faces under seeds the calibration
    default (CALIBRATION_SEED) does not use."""
    return synthetic_faces(size, count, seed=1_000 + seed)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


@torch.no_grad()
def torch_outputs(bundle_path: Path, network: str, feeds: dict, io: str) -> list[np.ndarray]:
    """The PyTorch fp32 model's outputs for ONNX-style feeds (pre/post-processing in numpy)."""
    bundle = Bundle.open(bundle_path)
    net = load_network(bundle, network)
    arch = bundle.manifest.arch

    def image(a):
        return torch.from_numpy(bgr_to_unit_nchw(a) if io == "uint8" else a)

    def frames(t):
        return unit_nchw_to_bgr(t.numpy()) if io == "uint8" else t.numpy()

    t = {k: torch.from_numpy(v) for k, v in feeds.items() if k != "image"}
    if network == "generator" and arch == "v1":
        return [frames(net(image(feeds["image"]), t["labels"]))]
    if network == "discriminator":
        return [net(image(feeds["image"]))[1].numpy()]
    if network == "generator":
        masks = (t["mask_face"], t["mask_inner"]) if "mask_face" in t else None
        return [frames(net(image(feeds["image"]), t["style"], masks))]
    if network == "mapping_network":
        return [net(t["z"], t["domain"]).numpy()]
    if network == "style_encoder":
        return [net(image(feeds["image"]), t["domain"]).numpy()]
    if network == "fan":
        return [m.numpy() for m in net.masks_and_landmarks(image(feeds["image"]))]
    raise ValueError(network)


def run_ort(path, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
