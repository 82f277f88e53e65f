"""Models the bench runs by default: the official network sizes with random weights (speed does
not depend on the weights; accuracy is always measured against PyTorch on the same weights)."""
from __future__ import annotations

from pathlib import Path

# name -> (arch, image size, config, domains)
OFFICIAL = {
    "official-v1": ("v1", 128, dict(conv_dim=64, c_dim=5, repeat_num=6, d_conv_dim=64,
                                    d_repeat_num=6),
                    ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]),
    # CelebA-HQ configuration: 256 px, high-pass masks from the FAN (w_hpf 1)
    "official-v2": ("v2", 256, dict(style_dim=64, latent_dim=16, max_conv_dim=512, w_hpf=1,
                                    dim_in=64, hidden_dim=512), ["female", "male"]),
}
DEFAULT_MODELS = ("official-v1", "official-v2")


def official_bundle(name: str, out: Path) -> Path:
    """Write the random-weight bundle ``name`` (see OFFICIAL) to ``out``, once."""
    import torch

    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.build import build_network

    if (out / "manifest.json").is_file():
        return out
    arch, size, config, domains = OFFICIAL[name]
    manifest = Manifest(arch=arch, image_size=size,
                        domains=[Domain(d, default_aliases(d)) for d in domains],
                        config=dict(config), name=f"{name}-random")
    nets = ["generator"] if arch == "v1" else ["generator", "mapping_network",
                                               "style_encoder", "fan"]
    torch.manual_seed(0)
    write_bundle(out, manifest, {n: build_network(manifest, n).state_dict() for n in nets})
    return out


def resolve(spec: str, workdir: Path) -> Path:
    """A --model value: official-v1 / official-v2 (random weights), or what the project's model
    resolver accepts (a bundle folder or a built-in name)."""
    if spec in OFFICIAL:
        return official_bundle(spec, workdir / spec)
    from stargan_rt.defaults import resolve_model

    return Path(resolve_model(spec))
