"""Precision graphs: fp16 and int8 Q/DQ checked on CPU against PyTorch on face-like frames."""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch

from export_testlib import faces, psnr, run_ort, torch_outputs, v1_bundle, v2_bundle
from stargan_rt.bundle import Bundle
from stargan_rt.errors import UserError
from stargan_rt.export.int8 import INT8_MIN_PSNR
from stargan_rt.export import (export_bundle, fuse_adain, get_metadata, load_calibration_frames,
                               load_model, prepare_graph, to_precision)
from stargan_rt.models.build import load_network

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    v1, v2 = v1_bundle(root), v2_bundle(root, 0)
    return {
        "v1": (v1, export_bundle(v1, root / "v1", networks=["generator"])),
        "v2": (v2, export_bundle(v2, root / "v2", networks=["generator", "mapping_network"])),
        "root": root,
    }


def _test_feeds(key, bundle, count=16):
    """Held-out face-like frames (the calibration uses other seeds) with realistic conditions."""
    size = Bundle.open(bundle).manifest.image_size
    rng = np.random.default_rng(42)
    feeds = {"image": faces(size, count, seed=1234)}
    if key == "v1":
        feeds["labels"] = (rng.random((count, 3)) < 0.5).astype(np.float32)
    else:
        mapping = load_network(Bundle.open(bundle), "mapping_network")
        with torch.no_grad():
            z = torch.from_numpy(rng.standard_normal((count, 8)).astype(np.float32))
            feeds["style"] = mapping(z, torch.arange(count) % 2).numpy()
    return feeds


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return types


@pytest.mark.parametrize("key", ["v1", "v2"])
def test_fp16_graph(setup, tmp_path, key):
    bundle, graphs = setup[key]
    out = to_precision(graphs["generator"], tmp_path / "g16.onnx", "fp16")
    model = load_model(out)
    assert get_metadata(model)["precision"] == "fp16"
    original = load_model(graphs["generator"])
    assert [(i.name, i.type) for i in model.graph.input] == \
        [(i.name, i.type) for i in original.graph.input]  # uint8 / float32 I/O kept
    assert [(o.name, o.type) for o in model.graph.output] == \
        [(o.name, o.type) for o in original.graph.output]
    types = _types(model)
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert norms and all(types[n.input[0]] == FLOAT and types[n.output[0]] == FLOAT
                         for n in norms), "normalisation statistics must stay fp32"
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert sum(types.get(n.input[1]) == FLOAT16 for n in convs) >= len(convs) - 1
    feeds = _test_feeds(key, bundle)
    got = run_ort(out, feeds)[0]
    want = torch_outputs(bundle, "generator", feeds, "uint8")[0]
    assert psnr(got, want) >= 40.0


def _check_qdq_structure(model):
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for n in qdq:
        if len(n.input) > 2:
            assert not np.any(inits[n.input[2]]), "zero points must be 0 (symmetric)"
            assert inits[n.input[2]].dtype == np.int8
    for conv in (n for n in nodes if n.op_type in ("Conv", "ConvTranspose")):
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # left fp32 (first / last conv, accuracy guard)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == (0 if conv.op_type == "Conv" else 1), conv.name
        assert inits[dq.input[1]].size == inits[dq.input[0]].shape[axis]  # per channel
        act = producer.get(conv.input[0])
        assert act is not None and act.op_type == "DequantizeLinear"
        assert not any(c.op_type == "QuantizeLinear" for c in consumers.get(conv.output[0], []))
    for n in nodes:  # normalisation, resizing and AdaIN run in float: no DQ feeds them
        if n.op_type in ("InstanceNormalization", "Resize", "AdaIN", "Add", "Mul"):
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                       for i in n.input), n.name


@pytest.mark.parametrize("key", ["v1", "v2"])
def test_int8_graph(setup, tmp_path, key):
    bundle, graphs = setup[key]
    size = Bundle.open(bundle).manifest.image_size
    frames = load_calibration_frames(None, size, 256)
    out, fused = prepare_graph(graphs["generator"], tmp_path / "g8.onnx", "int8",
                               calib_frames=frames)
    if key == "v2":  # quantize unfused (ORT calibrates it), then fuse: what prepare_graph does
        fused = fuse_adain(out, tmp_path / "g8.fused.onnx")
    model = load_model(out)
    meta = get_metadata(model)
    assert meta["precision"] == "int8" and meta["calibration_frames"] == "256"
    info = json.loads(meta["int8"])
    assert info["quantized_convs"] >= 5 and info["check_psnr_db"] >= INT8_MIN_PSNR
    assert fused == (8 if key == "v2" else 0)
    _check_qdq_structure(model)
    feeds = _test_feeds(key, bundle)
    want = torch_outputs(bundle, "generator", feeds, "uint8")[0]
    if key == "v2":  # the fused graph runs on CPU through onnx.reference + the numpy AdaIN op
        from stargan_rt.export.fusion import run_reference

        fused_model = load_model(tmp_path / "g8.fused.onnx")
        _check_qdq_structure(fused_model)
        got = run_reference(fused_model, {k: v[:4] for k, v in feeds.items()})[0]
        assert psnr(got, want[:4]) >= 30.0
    unfused = out
    got = run_ort(unfused, feeds)[0]
    assert psnr(got, want) >= 30.0
    import openvino as ov  # the same Q/DQ file serves OpenVINO

    compiled = ov.Core().compile_model(str(unfused), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ov_out = compiled(feeds)[compiled.output(0)]
    assert ov_out.dtype == np.uint8 and psnr(ov_out, want) >= 30.0


def test_calibration_sources(tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for i, face in enumerate(faces(40, 10)):
        cv2.imwrite(str(few / f"{i}.png"), face)
    with pytest.raises(UserError, match="found 10 usable calibration frame"):
        load_calibration_frames(few, 32)
    frames = load_calibration_frames(few, 32, count=8)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (48, 48))
    for face in faces(48, 40, seed=3):
        writer.write(face)
    writer.release()
    clip = load_calibration_frames(video, 32, count=30)
    assert clip.shape == (30, 32, 32, 3) and clip.std() > 10
    with pytest.raises(UserError, match="found 40 usable"):
        load_calibration_frames(video, 32)
    with pytest.raises(UserError, match="no such calibration"):
        load_calibration_frames(tmp_path / "missing", 32)
    demo = load_calibration_frames(None, 32, 256)
    assert demo.shape == (256, 32, 32, 3) and len({f.tobytes() for f in demo}) == 256


def test_int8_refuses_too_few_frames(setup, tmp_path):
    _, graphs = setup["v1"]
    with pytest.raises(UserError, match="100 calibration frames given.*at least 256"):
        to_precision(graphs["generator"], tmp_path / "x.onnx", "int8",
                     load_calibration_frames(None, 32, 100))
    with pytest.raises(UserError, match="needs calibration frames"):
        to_precision(graphs["generator"], tmp_path / "x.onnx", "int8")
    assert not (tmp_path / "x.onnx").exists()
