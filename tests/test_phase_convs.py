"""Stride-2 transposed convolutions split into phase convolutions (export/phase_convs.py): the
same outputs as PyTorch's ConvTranspose2d, and only the shapes it can rewrite are rewritten."""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")


def _graph(layer, x):
    buf = io.BytesIO()
    torch.onnx.export(layer, x, buf, input_names=["x"], output_names=["y"], dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _run(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("kernel,pad,bias", [(4, 1, False), (4, 1, True), (2, 0, True),
                                             (6, 2, False)])
def test_split_matches_the_transposed_convolution(kernel, pad, bias):
    from stargan_rt.export.phase_convs import split_transposed_convs

    torch.manual_seed(kernel + pad)
    layer = torch.nn.ConvTranspose2d(6, 5, kernel, stride=2, padding=pad, bias=bias).eval()
    x = torch.randn(2, 6, 7, 9)
    model = _graph(layer, x)
    assert split_transposed_convs(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Conv"] * 4 + ["Concat", "DepthToSpace"]
    got = _run(model, x.numpy())
    with torch.no_grad():
        want = layer(x).numpy()
    assert got.shape == want.shape == (2, 5, 14, 18)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("layer", [
    torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1),            # output 2H - 1
    torch.nn.ConvTranspose2d(4, 3, 4, stride=1, padding=1),            # no upsampling
    torch.nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2),  # grouped
])
def test_other_transposed_convolutions_are_left_alone(layer):
    from stargan_rt.export.phase_convs import split_transposed_convs

    x = torch.randn(1, 4, 5, 5)
    model = _graph(layer.eval(), x)
    before = model.SerializeToString()
    assert split_transposed_convs(model) == 0
    assert model.SerializeToString() == before
