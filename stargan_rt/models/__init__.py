"""PyTorch model definitions (state-dict compatible with the official StarGAN checkpoints)."""
from stargan_rt.models.fan import FAN
from stargan_rt.models.v1 import DiscriminatorV1, GeneratorV1
from stargan_rt.models.v2 import DiscriminatorV2, GeneratorV2, MappingNetwork, StyleEncoder

__all__ = ["FAN", "DiscriminatorV1", "GeneratorV1", "DiscriminatorV2", "GeneratorV2",
           "MappingNetwork", "StyleEncoder"]
