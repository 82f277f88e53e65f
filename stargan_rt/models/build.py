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


def expected_shapes(manifest: Manifest, name: str) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes the manifest's config implies, computed on the meta device (no
    memory is allocated however large the config claims the network is)."""
    import torch

    with torch.device("meta"):
        net = build_network(manifest, name)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_weights(bundle: Bundle, name: str, state) -> None:
    """One line naming the keys when the weights do not fit the manifest's network definition."""
    expected = expected_shapes(bundle.manifest, name)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatch(es), first {k}: file "
                     f"{tuple(state[k].shape)} vs manifest config {expected[k]}")
    raise UserError(f"{bundle.weights_path(name)}: {name} weights do not fit the manifest "
                    f"(image_size / config) ({'; '.join(parts)}); re-create the bundle")


def load_network(bundle: Bundle, name: str, device: str = "cpu") -> nn.Module:
    """Network with the bundle's weights, in eval mode. Keys and shapes are checked against the
    manifest's network definition before the network is built."""
    state = bundle.state_dict(name)
    check_weights(bundle, name, state)
    net = build_network(bundle.manifest, name)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()
