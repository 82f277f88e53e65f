"""Small bundles for the engine, runtime and parity tests (random weights, 32 px)."""
from __future__ import annotations

from pathlib import Path

SIZE = 32


def tiny_v1(out: Path, discriminator: bool = True) -> Path:
    import torch

    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.v1 import DiscriminatorV1, GeneratorV1

    torch.manual_seed(0)
    names = ["Black_Hair", "Blond_Hair", "Smiling"]
    manifest = Manifest(arch="v1", image_size=SIZE,
                        domains=[Domain(n, default_aliases(n)) for n in names],
                        config=dict(conv_dim=8, c_dim=3, repeat_num=1, d_conv_dim=8,
                                    d_repeat_num=2), name="tiny-v1")
    nets = {"generator": GeneratorV1(8, 3, 1).state_dict()}
    if discriminator:
        nets["discriminator"] = DiscriminatorV1(SIZE, 8, 3, 2).state_dict()
    write_bundle(out, manifest, nets)
    return out


def tiny_v2(out: Path) -> Path:
    import torch

    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.v2 import GeneratorV2, MappingNetwork, StyleEncoder

    torch.manual_seed(0)
    config = dict(style_dim=16, latent_dim=8, max_conv_dim=32, w_hpf=0, dim_in=16, hidden_dim=32)
    manifest = Manifest(arch="v2", image_size=SIZE,
                        domains=[Domain(n, default_aliases(n)) for n in ("neutral", "smiling")],
                        config=config, name="tiny-v2")
    write_bundle(out, manifest, {
        "generator": GeneratorV2(SIZE, 16, 32, 0, 16).state_dict(),
        "mapping_network": MappingNetwork(8, 16, 2, 32).state_dict(),
        "style_encoder": StyleEncoder(SIZE, 16, 2, 32, 16).state_dict()})
    return out
