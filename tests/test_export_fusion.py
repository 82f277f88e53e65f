"""AdaIN fusion: the fused graph computes what the unfused graph computes (onnx.reference + the
numpy AdaIN definition), with the attributes TensorRT's parser needs to find the plugin."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from export_testlib import faces, run_ort, v1_bundle, v2_bundle
from stargan_rt.export import (ADAIN_DOMAIN, adain_reference, export_bundle, fuse_adain,
                               get_metadata, load_model)
from stargan_rt.export.exporter import numpy_inputs
from stargan_rt.export.fusion import run_reference
from stargan_rt.imaging import bgr_to_unit_nchw
from stargan_rt.models.v2 import AdaIN


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    out = {}
    for w_hpf in (0, 1):
        bundle = v2_bundle(root, w_hpf)
        networks = ["generator", "fan"] if w_hpf else ["generator"]
        out[w_hpf] = export_bundle(bundle, root / f"onnx{w_hpf}", io="float", networks=networks)
    out["v1"] = export_bundle(v1_bundle(root), root / "onnx-v1", io="float",
                              networks=["generator"])
    return out


def test_numpy_adain_equals_the_torch_module():
    torch.manual_seed(0)
    module = AdaIN(style_dim=8, num_features=6).eval()
    x, s = torch.randn(3, 6, 5, 7) * 3 + 1, torch.randn(3, 8)
    with torch.no_grad():
        want = torch.nn.functional.leaky_relu(module(x, s), 0.2).numpy()
        gamma, beta = module.fc(s).chunk(2, dim=1)
    got = adain_reference(x.numpy(), gamma.numpy(), beta.numpy(), 1e-5, 0.2, 1)
    assert np.abs(got - want).max() < 1e-4
    plain = adain_reference(x.numpy(), gamma.numpy(), beta.numpy(), 1e-5, 1.0, 0)
    with torch.no_grad():
        assert np.abs(plain - module(x, s).numpy()).max() < 1e-4


@pytest.mark.parametrize("w_hpf,expected", [(0, 8), (1, 10)])  # 2 AdaIN per decoder block
def test_fused_graph_equals_unfused(graphs, tmp_path, w_hpf, expected):
    src = graphs[w_hpf]["generator"]
    dst = tmp_path / "fused.onnx"
    assert fuse_adain(src, dst) == expected
    original, fused = load_model(src), load_model(dst)  # both pass onnx.checker
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)  # noqa: E731
    assert count(fused, "AdaIN") == expected
    assert count(original, "InstanceNormalization") - count(fused, "InstanceNormalization") \
        == expected
    assert get_metadata(fused)["adain_fused"] == "1"
    assert any(o.domain == ADAIN_DOMAIN for o in fused.opset_import)
    for node in (n for n in fused.graph.node if n.op_type == "AdaIN"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == ADAIN_DOMAIN and len(node.input) == 3
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
        assert attrs["has_activation"] == 1 and abs(attrs["negative_slope"] - 0.2) < 1e-7
        assert abs(attrs["epsilon"] - 1e-5) < 1e-9

    spec = json.loads(get_metadata(original)["contract"])
    feeds = numpy_inputs(spec, 2, seed=4)
    feeds["image"] = bgr_to_unit_nchw(faces(64, 2, 5))
    if w_hpf:
        masks = run_ort(graphs[w_hpf]["fan"], {"image": feeds["image"]})
        feeds["mask_face"], feeds["mask_inner"] = masks[:2]  # (the third output: landmarks)
    fused_out = run_reference(fused, feeds)[0]
    unfused_ref = run_reference(original, feeds)[0]
    unfused_ort = run_ort(src, feeds)[0]
    assert np.abs(fused_out - unfused_ref).max() <= 1e-4
    assert np.abs(fused_out - unfused_ort).max() <= 1e-4


def test_graph_without_adain_is_left_alone(graphs, tmp_path):
    dst = tmp_path / "v1.onnx"
    assert fuse_adain(graphs["v1"]["generator"], dst) == 0
    assert [n.op_type for n in load_model(dst).graph.node] == \
        [n.op_type for n in load_model(graphs["v1"]["generator"]).graph.node]
