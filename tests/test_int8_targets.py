"""Each target's own int8 graph: NNCF's IR for OpenVINO, ONNX Runtime's U8S8 QDQ for ONNX Runtime,
the symmetric Q/DQ ONNX (TensorRT's form) otherwise; all within the int8 accuracy guard."""
from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

from engine_bundles import SIZE, tiny_v1

HAVE_NNCF = importlib.util.find_spec("nncf") is not None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8-targets")
    return tiny_v1(root / "v1", discriminator=False), root / "cache"


def _translator(bundle, cache, target, precision):
    from stargan_rt.runtime import Translator

    t = Translator.create(str(bundle), target=target, precision=precision, cache_dir=cache,
                          log=lambda m: None)
    t.set_labels([1, 0, 0])
    return t


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_onnxruntime_int8_is_u8s8_with_quantized_conv_outputs(built):
    from stargan_rt.export.calibration import synthetic_faces

    bundle, cache = built
    int8 = _translator(bundle, cache, "onnxruntime", "int8")
    fp32 = _translator(bundle, cache, "onnxruntime", "fp32")
    graph = next(cache.rglob("generator.uint8.int8-demo-g*-u8s8.onnx"))
    model = onnx.load(str(graph))
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    zero_points = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    fused = 0
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        dq = producer.get(conv.input[0])
        outs = consumers.get(conv.output[0], [])
        if dq is not None and dq.op_type == "DequantizeLinear" and outs and all(
                o.op_type == "QuantizeLinear" for o in outs):
            assert zero_points[dq.input[2]].dtype == np.uint8  # asymmetric uint8 activations
            fused += 1
    assert fused >= 3, "convolutions between DQ and Q (fused into QLinearConv by ONNX Runtime)"
    # ONNX Runtime has no integer ConvTranspose: the upsampling runs as phase convolutions
    assert not any(n.op_type == "ConvTranspose" for n in model.graph.node)
    assert sum(n.op_type == "DepthToSpace" for n in model.graph.node) == 2
    faces = synthetic_faces(SIZE, 8, seed=3)
    assert _psnr(int8(faces), fp32(faces)) >= 30


@pytest.mark.skipif(not HAVE_NNCF, reason="nncf is not installed (pip install nncf)")
def test_openvino_int8_is_quantized_by_nncf(built):
    from stargan_rt.export.calibration import synthetic_faces

    bundle, cache = built
    int8 = _translator(bundle, cache, "openvino", "int8")
    fp32 = _translator(bundle, cache, "openvino", "fp32")
    xml = next(cache.rglob("generator.uint8.int8-demo-g*-nncf*.xml"))
    assert xml.with_suffix(".bin").is_file()
    assert "FakeQuantize" in xml.read_text()
    faces = synthetic_faces(SIZE, 8, seed=3)
    assert _psnr(int8(faces), fp32(faces)) >= 30


@pytest.mark.skipif(not HAVE_NNCF, reason="nncf is not installed (pip install nncf)")
def test_openvino_int8_float_parts_at_bf16_are_checked_at_bf16(built, monkeypatch):
    # Where bf16 pays (forced here, as the CPU decides otherwise), the guard checks the int8
    # graph with its float parts at bf16, the graph is cached apart from the fp32-float one, and
    # the engine runs them at bf16.
    from stargan_rt.backends import openvino as ov_backend
    from stargan_rt.export.calibration import synthetic_faces

    if "BF16" not in ov_backend.capabilities():
        pytest.skip("this CPU has no bf16 for OpenVINO (OPTIMIZATION_CAPABILITIES lacks BF16)")
    monkeypatch.setenv(ov_backend.BF16_ENV, "1")
    bundle, cache = built
    int8 = _translator(bundle, cache, "openvino", "int8")
    fp32 = _translator(bundle, cache, "openvino", "fp32")
    assert int8.engines["generator"].hint == "bf16"
    assert next(cache.rglob("generator.uint8.int8-demo-g*-nncf-bf16.xml")).with_suffix(
        ".bin").is_file()
    faces = synthetic_faces(SIZE, 8, seed=3)
    assert _psnr(int8(faces), fp32(faces)) >= 30


@pytest.mark.skipif(not HAVE_NNCF, reason="nncf is not installed (pip install nncf)")
def test_nncf_guard_falls_back_to_convolutions_then_float_convolutions(built, tmp_path):
    # a check no int8 graph passes: the guard goes through every stage, puts all convolutions
    # in float (their FakeQuantize nodes bypassed), and when even that misses the threshold
    # (NNCF's corrected biases remain) writes the fp32 graph itself
    from stargan_rt.export.calibration import load_calibration_frames
    from stargan_rt.export.int8_nncf import to_openvino_int8

    bundle, cache = built
    _translator(bundle, cache, "openvino", "fp32")
    source = next(cache.rglob("generator.uint8.fp32.onnx"))
    logs = []
    info = to_openvino_int8(source, tmp_path / "g.xml", load_calibration_frames(None, SIZE),
                            min_psnr=99.0, log=logs.append)
    assert info["scheme"].startswith("nncf, convolutions only")
    assert info["quantized_convs"] == 0 and info["fp32_convs"] == len(info["float_convs"]) > 2
    assert "FakeQuantize" not in (tmp_path / "g.xml").read_text()
    assert any("convolutions only" in line for line in logs)
    assert any(f"{info['fp32_convs']} convolutions in float" in line for line in logs)
    assert info["scheme"].endswith("the fp32 graph") and info["check_psnr_db"] == 100.0
    assert any("keeping the fp32 graph" in line for line in logs)


def test_int8_forms():
    from stargan_rt.export.int8_targets import int8_form

    assert int8_form("tensorrt") == "qdq"
    assert int8_form("onnxruntime") == "u8s8"
    assert int8_form("openvino") == ("nncf" if HAVE_NNCF else "qdq")


def test_hidden_torch_marks_torch_absent_and_restores_it():
    import sys

    from stargan_rt.export import int8_targets

    saved = sys.modules.pop("torch", None)
    try:
        with int8_targets.hidden_torch():
            assert importlib.util.find_spec("torch") is None
            with pytest.raises(ImportError):
                import torch  # noqa: F401
        assert "torch" not in sys.modules
    finally:
        if saved is not None:
            sys.modules["torch"] = saved
