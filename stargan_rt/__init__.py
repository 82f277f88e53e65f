"""stargan-rt: StarGAN v1/v2 compiled for edge devices."""
__version__ = "0.1.0"
