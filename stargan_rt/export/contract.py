"""The I/O contract of every exported graph: names, dtypes, shapes, layouts.

This module is plain data (no torch, no onnx) so runtime code on a deployed device can read it.
Symbolic dimensions: ``N`` batch (dynamic in every graph), ``S`` the bundle's image size,
``c_dim`` v1 attribute count, ``style_dim`` / ``latent_dim`` from the v2 config. ``256`` is fixed:
the FAN always works at 256 px and its masks stay at 256 px; the generator resizes them internally
(bilinear, as the official code does) to the feature sizes where the high-pass skips join.

Two I/O variants per network that takes an image:

- ``uint8`` (what engines run): images are uint8 ``[N, S, S, 3]`` BGR (OpenCV order, HWC). The graph
  casts, scales to [-1, 1] (x / 127.5 - 1), swaps BGR->RGB and NHWC->NCHW inside. Image outputs are
  uint8 ``[N, S, S, 3]`` BGR: clamp to [-1, 1], (y + 1) * 127.5, round half to even, cast.
- ``float`` (parity / debugging): images are float32 ``[N, 3, S, S]`` RGB in [-1, 1]; image outputs
  are the raw model output float32 ``[N, 3, S, S]`` (v1: tanh, v2: unbounded).

Non-image tensors are identical in both variants.
"""
from __future__ import annotations

import copy
from typing import Any

from stargan_rt.backends.base import PRECISIONS  # noqa: F401 (one definition; re-exported)

IO_VARIANTS = ("uint8", "float")
FAN_SIZE = 256

# Prefix of every metadata_props key written into exported ONNX files.
META_PREFIX = "stargan_rt."
# metadata_props keys (each value is a string; JSON where noted).
META_KEYS = {
    "network": "network name (generator, mapping_network, style_encoder, fan, discriminator)",
    "arch": "v1 | v2",
    "bundle_hash": "Bundle.content_hash of the bundle the graph came from",
    "bundle_name": "manifest name",
    "domains": "JSON list of domain names, in index order",
    "image_size": "S, decimal",
    "io": "uint8 | float",
    "precision": "fp32 | fp16 | int8",
    "contract": "JSON: this network's entry of CONTRACT with the symbols resolved",
    "config": "JSON: the bundle's network config",
    "adain_fused": "'1' when AdaIN patterns were replaced by AdaIN plugin nodes",
    "simplified": "'onnxsim' or 'no (<reason>)'",
    "exporter": "torch version and exporter used",
}

_IMAGE_IN = {
    "uint8": {"name": "image", "dtype": "uint8", "shape": ["N", "S", "S", 3],
              "layout": "NHWC BGR 0..255"},
    "float": {"name": "image", "dtype": "float32", "shape": ["N", 3, "S", "S"],
              "layout": "NCHW RGB [-1, 1]"},
}
_IMAGE_OUT = {
    "uint8": {"name": "translated", "dtype": "uint8", "shape": ["N", "S", "S", 3],
              "layout": "NHWC BGR 0..255 (clamped, rounded)"},
    "float": {"name": "translated", "dtype": "float32", "shape": ["N", 3, "S", "S"],
              "layout": "NCHW RGB raw model output"},
}
_MASKS = [
    {"name": "mask_face", "dtype": "float32", "shape": ["N", 1, FAN_SIZE, FAN_SIZE],
     "layout": "NCHW [0, 1], whole-face mask (FAN output, always 256 px)"},
    {"name": "mask_inner", "dtype": "float32", "shape": ["N", 1, FAN_SIZE, FAN_SIZE],
     "layout": "NCHW [0, 1], face mask without chin / lips / eyebrows (always 256 px)"},
]
_LANDMARKS = {"name": "landmarks", "dtype": "float32", "shape": ["N", 98, 3],
              "layout": "per WFLW landmark: x, y in the input image's pixels (pixel centres at "
                        "integers), heatmap peak value"}
_LABELS = {"name": "labels", "dtype": "float32", "shape": ["N", "c_dim"],
           "layout": "target attribute vector, 0 / 1 per domain in manifest order"}
_STYLE_IN = {"name": "style", "dtype": "float32", "shape": ["N", "style_dim"], "layout": ""}
_STYLE_OUT = {"name": "style", "dtype": "float32", "shape": ["N", "style_dim"], "layout": ""}
_DOMAIN = {"name": "domain", "dtype": "int64", "shape": ["N"],
           "layout": "domain index in manifest order"}
_Z = {"name": "z", "dtype": "float32", "shape": ["N", "latent_dim"], "layout": "z ~ N(0, I)"}
_LOGITS = {"name": "logits", "dtype": "float32", "shape": ["N", "c_dim"],
           "layout": "v1 discriminator attribute logits (> 0 means the attribute is present)"}


def _entry(inputs: list, outputs: list) -> dict:
    return {"inputs": inputs, "outputs": outputs}


# CONTRACT[arch][network][io] -> {"inputs": [spec...], "outputs": [spec...]}
# (networks without an image input have the same entry under both io keys).
CONTRACT: dict[str, dict[str, dict[str, dict[str, list]]]] = {
    "v1": {
        "generator": {io: _entry([_IMAGE_IN[io], _LABELS], [_IMAGE_OUT[io]]) for io in IO_VARIANTS},
        # The classifier head only: what the runtime needs to estimate the source's attributes.
        "discriminator": {io: _entry([_IMAGE_IN[io]], [_LOGITS]) for io in IO_VARIANTS},
    },
    "v2": {
        # mask_face / mask_inner are inputs only when config w_hpf > 0.
        "generator": {io: _entry([_IMAGE_IN[io], _STYLE_IN] + _MASKS, [_IMAGE_OUT[io]])
                      for io in IO_VARIANTS},
        "mapping_network": {io: _entry([_Z, _DOMAIN], [_STYLE_OUT]) for io in IO_VARIANTS},
        "style_encoder": {io: _entry([_IMAGE_IN[io], _DOMAIN], [_STYLE_OUT]) for io in IO_VARIANTS},
        # FAN + the official mask post-processing; takes the generator's own input image.
        "fan": {io: _entry([_IMAGE_IN[io]], _MASKS + [_LANDMARKS]) for io in IO_VARIANTS},
    },
}

# Networks exported by default, when the bundle has them (v2 fan only when w_hpf > 0). The v2
# discriminator is not used at inference time and has no contract.
DEFAULT_NETWORKS = {"v1": ("generator", "discriminator"),
                    "v2": ("generator", "mapping_network", "style_encoder", "fan")}


def io_spec(arch: str, network: str, io: str, image_size: int,
            config: dict[str, Any], num_domains: int) -> dict[str, list]:
    """CONTRACT entry with the symbolic sizes (except N) replaced by this bundle's numbers."""
    entry = copy.deepcopy(CONTRACT[arch][network][io])
    if arch == "v2" and network == "generator" and not config.get("w_hpf", 0) > 0:
        entry["inputs"] = [s for s in entry["inputs"] if not s["name"].startswith("mask_")]
    sizes = {"S": image_size, "c_dim": config.get("c_dim", num_domains),
             "style_dim": config.get("style_dim"), "latent_dim": config.get("latent_dim")}
    for spec in entry["inputs"] + entry["outputs"]:
        spec["shape"] = [sizes.get(d, d) if isinstance(d, str) else d for d in spec["shape"]]
    return entry

# The TensorRT plugin node the AdaIN fusion pass (stargan_rt.export.fusion) writes. TensorRT's
# ONNX parser hands a node whose op_type has no built-in importer to the registered plugin with
# name = op_type, version = plugin_version, namespace = plugin_namespace; the other attributes
# arrive as plugin fields.
ADAIN_PLUGIN = {
    "op_type": "AdaIN",
    "domain": "trt.plugins",
    "plugin_version": "1",
    "plugin_namespace": "",
    "inputs": [
        {"name": "x", "dtype": "float32 | float16", "shape": ["N", "C", "H", "W"]},
        {"name": "gamma", "dtype": "same as x", "shape": ["N", "C"]},
        {"name": "beta", "dtype": "same as x", "shape": ["N", "C"]},
    ],
    "outputs": [{"name": "y", "dtype": "same as x", "shape": ["N", "C", "H", "W"]}],
    "attributes": {
        "epsilon": "float, added to the biased variance over H, W (1e-5 in StarGAN v2)",
        "negative_slope": "float, LeakyReLU slope when has_activation = 1 (0.2 in StarGAN v2)",
        "has_activation": "int 0 | 1",
    },
    "computes": "y = (1 + gamma) * (x - mean_hw) / sqrt(var_hw + epsilon) + beta, then "
                "LeakyReLU(negative_slope) if has_activation; statistics accumulated in fp32 "
                "also for fp16 x",
    "reference": "stargan_rt.export.fusion.adain_reference (numpy)",
}
