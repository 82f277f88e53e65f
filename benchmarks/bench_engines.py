"""Engines side by side: PyTorch fp32 (the reference) vs ONNX Runtime vs OpenVINO fp32/bf16/int8.

One generator call per round on a batch of face crops (uint8 in, uint8 out, the path the live
runtime takes). Run once, then print the ratio table:

    pytest benchmarks/bench_engines.py --benchmark-json bench.json
    python benchmarks/ratio_table.py bench.json

The model: $STARGAN_RT_BENCH_MODEL (a bundle, or demo-v1 / demo-v2), else a StarGAN v1 generator
with the official configuration (128 px, conv_dim 64, 6 residual blocks, c_dim 5) and random
weights. $STARGAN_RT_BENCH_BATCH sets the batch (default 1: one face). Engines are built into a
temporary cache (their build time is not measured).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

CASES = [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
         ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")]
ROUNDS = int(os.environ.get("STARGAN_RT_BENCH_ROUNDS", "10"))


def _official_v1(out):
    import torch

    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.v1 import GeneratorV1

    torch.manual_seed(0)
    names = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    manifest = Manifest(arch="v1", image_size=128,
                        domains=[Domain(n, default_aliases(n)) for n in names],
                        config=dict(conv_dim=64, c_dim=5, repeat_num=6, d_conv_dim=64,
                                    d_repeat_num=6), name="bench-v1-official-random")
    write_bundle(out, manifest, {"generator": GeneratorV1(64, 5, 6).state_dict()})
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from stargan_rt.defaults import resolve_model
    from stargan_rt.export.calibration import synthetic_faces
    from stargan_rt.bundle import Bundle

    model = os.environ.get("STARGAN_RT_BENCH_MODEL")
    root = tmp_path_factory.mktemp("bench")
    path = resolve_model(model) if model else _official_v1(root / "model")
    bundle = Bundle.open(path)
    batch = int(os.environ.get("STARGAN_RT_BENCH_BATCH", "1"))
    frames = synthetic_faces(bundle.manifest.image_size, batch, seed=99)
    return path, root / "cache", frames


def _translator(target, precision, path, cache):
    if target == "torch":
        from stargan_rt.reference import TorchTranslator

        translator = TorchTranslator(path)
    else:
        from stargan_rt.runtime import Translator

        translator = Translator.create(path, target=target, precision=precision,
                                       cache_dir=cache, log=lambda m: None)
    if translator.arch == "v1":
        translator.set_labels([1] + [0] * (len(translator.domains) - 1))
    else:
        translator.set_domain(translator.domains[-1])
        translator.set_style(seed=1)
    return translator


@pytest.mark.parametrize("target,precision", CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_generator(benchmark, setup, target, precision):
    path, cache, frames = setup
    translator = _translator(target, precision, path, cache)
    translator(frames)                                   # warm-up (and style computation)
    benchmark.extra_info.update(target=target, precision=precision, batch=len(frames),
                                engine=translator.describe(), model=str(path))
    benchmark.group = "generator"
    out = benchmark.pedantic(translator, args=(frames,), rounds=ROUNDS, iterations=1,
                             warmup_rounds=1)
    assert out.shape == frames.shape and out.dtype == np.uint8
