"""Build torch networks from a bundle manifest and load their weights."""
from __future__ import annotations

import torch.nn as nn

from stargan_rt.bundle import Bundle, Manifest
from stargan_rt.errors import UserError
from stargan_rt.models.fan import FAN
from stargan_rt.models.v1 import DiscriminatorV1, GeneratorV1
from stargan_rt.models.v2 import DiscriminatorV2, GeneratorV2, MappingNetwork, StyleEncoder


def build_network(manifest: Manifest, name: str) -> nn.Module:
    """An untrained network of the bundle's architecture (weights not loaded)."""
    cfg, size = manifest.config, manifest.image_size
    if manifest.arch == "v1":
        if name == "generator":
            return GeneratorV1(cfg["conv_dim"], cfg["c_dim"], cfg["repeat_num"])
        if name == "discriminator":
            return DiscriminatorV1(size, cfg["d_conv_dim"], cfg["c_dim"], cfg["d_repeat_num"])
    else:
        dim_in = cfg.get("dim_in")
        domains = len(manifest.domains)
        if name == "generator":
            return GeneratorV2(size, cfg["style_dim"], cfg["max_conv_dim"], cfg["w_hpf"], dim_in)
        if name == "mapping_network":
            return MappingNetwork(cfg["latent_dim"], cfg["style_dim"], domains,
                                  cfg.get("hidden_dim", 512))
        if name == "style_encoder":
            return StyleEncoder(size, cfg["style_dim"], domains, cfg["max_conv_dim"], dim_in)
        if name == "discriminator":
            return DiscriminatorV2(size, domains, cfg["max_conv_dim"], dim_in)
        if name == "fan":
            return FAN()
    raise UserError(f"{manifest.arch} models have no network called {name!r}")


def load_network(bundle: Bundle, name: str, device: str = "cpu") -> nn.Module:
    """Network with the bundle's weights, in eval mode."""
    net = build_network(bundle.manifest, name)
    missing, unexpected = net.load_state_dict(bundle.state_dict(name), strict=False)
    if missing or unexpected:
        raise UserError(f"{bundle.path}: {name} weights do not fit the manifest's architecture "
                        f"(missing {missing[:5]}, unexpected {unexpected[:5]}); re-create the bundle")
    return net.to(device).eval()
