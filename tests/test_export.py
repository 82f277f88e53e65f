"""ONNX export: graphs match PyTorch, carry their contract and metadata, and fail clearly."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from export_testlib import faces, run_ort, torch_outputs, v1_bundle, v2_bundle
from stargan_rt.bundle import Bundle
from stargan_rt.errors import UserError
from stargan_rt.export import export_bundle, get_metadata, io_spec, load_model
from stargan_rt.export.exporter import numpy_inputs
from stargan_rt.imaging import bgr_to_unit_nchw

ONNX_DTYPES = {"uint8": onnx.TensorProto.UINT8, "float32": onnx.TensorProto.FLOAT,
               "int64": onnx.TensorProto.INT64}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-bundles")
    return {"v1": v1_bundle(root), "v2": v2_bundle(root, 0), "v2h": v2_bundle(root, 1)}


@pytest.fixture(scope="module")
def exported(bundles, tmp_path_factory):
    out = {}
    for key, path in bundles.items():
        for io in ("uint8", "float"):
            out[key, io] = export_bundle(path, tmp_path_factory.mktemp(f"onnx-{key}-{io}"), io=io)
    return out


def _feeds(path, batch, seed=0, noise=False):
    model = load_model(path)
    spec = json.loads(get_metadata(model)["contract"])
    feeds = numpy_inputs(spec, batch, seed)
    if "image" in feeds and not noise:
        size = spec["inputs"][0]["shape"][1 if feeds["image"].dtype == np.uint8 else 2]
        crops = faces(size, batch, seed + 1)
        feeds["image"] = crops if feeds["image"].dtype == np.uint8 else bgr_to_unit_nchw(crops)
    return feeds


def _max_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("key,networks", [("v1", ["generator", "discriminator"]),
                                          ("v2", ["generator", "mapping_network",
                                                  "style_encoder"])])
@pytest.mark.parametrize("io", ["uint8", "float"])
def test_onnx_matches_pytorch(bundles, exported, key, networks, io):
    assert sorted(exported[key, io]) == sorted(networks)
    for network in networks:
        path = exported[key, io][network]
        # traced with batch 2: the batch axis is really dynamic; face-like and noise images
        for batch, seed, noise in ((3, 0, False), (1, 7, False), (2, 5, True)):
            feeds = _feeds(path, batch, seed, noise)
            got, want = run_ort(path, feeds), torch_outputs(bundles[key], network, feeds, io)
            for g, w in zip(got, want):
                assert g.shape == w.shape and g.dtype == w.dtype, network
                limit = 1 if g.dtype == np.uint8 else 1e-3
                assert _max_err(g, w) <= limit, (network, io, _max_err(g, w))


@pytest.mark.parametrize("io", ["uint8", "float"])
def test_hpf_generator_and_fan_match_pytorch(bundles, exported, io):
    graphs = exported["v2h", io]
    assert sorted(graphs) == ["fan", "generator", "mapping_network", "style_encoder"]
    fan_feeds = _feeds(graphs["fan"], 2, 3)
    *masks, landmarks = run_ort(graphs["fan"], fan_feeds)
    *want, want_landmarks = torch_outputs(bundles["v2h"], "fan", fan_feeds, io)
    for g, w in zip(masks, want):
        assert g.shape == (2, 1, 256, 256) and g.dtype == np.float32
        assert _max_err(g, w) <= 1e-3
    assert masks[0].max() > 0.1, "the masks should not be empty for this test to mean something"
    size = Bundle.open(bundles["v2h"]).manifest.image_size
    assert landmarks.shape == (2, 98, 3) and landmarks.dtype == np.float32
    assert _max_err(landmarks, want_landmarks) <= 1e-3 * size
    assert (landmarks[..., :2] >= -0.5).all() and (landmarks[..., :2] <= size - 0.5).all()
    feeds = _feeds(graphs["generator"], 2, 3)
    feeds["mask_face"], feeds["mask_inner"] = masks
    got = run_ort(graphs["generator"], feeds)[0]
    ref = torch_outputs(bundles["v2h"], "generator", feeds, io)[0]
    assert _max_err(got, ref) <= (1 if io == "uint8" else 1e-3)


def test_graph_properties(bundles, exported):
    for (key, io), graphs in exported.items():
        bundle = Bundle.open(bundles[key])
        manifest = bundle.manifest
        for network, path in graphs.items():
            model = load_model(path)  # runs onnx.checker
            assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
            meta = get_metadata(model)
            assert meta["bundle_hash"] == bundle.content_hash
            assert json.loads(meta["domains"]) == manifest.domain_names
            assert meta["image_size"] == str(manifest.image_size)
            assert meta["io"] == io and meta["precision"] == "fp32" and meta["network"] == network
            assert meta["simplified"] == "onnxsim"
            spec = io_spec(manifest.arch, network, io, manifest.image_size, manifest.config,
                           len(manifest.domains))
            assert json.loads(meta["contract"]) == spec
            for values, specs in ((model.graph.input, spec["inputs"]),
                                  (model.graph.output, spec["outputs"])):
                assert [v.name for v in values] == [s["name"] for s in specs]
                for v, s in zip(values, specs):
                    assert v.type.tensor_type.elem_type == ONNX_DTYPES[s["dtype"]]
                    dims = v.type.tensor_type.shape.dim
                    assert dims[0].dim_param == "N", (network, v.name)  # dynamic batch
                    assert [d.dim_value for d in dims[1:]] == s["shape"][1:]
            ops = {n.op_type for n in model.graph.node}
            if network == "generator":
                assert "InstanceNormalization" in ops
            if key == "v1" and network == "generator":
                # instance statistics, not running statistics
                assert not ops & {"BatchNormalization", "Tile"}, ops
            if io == "uint8" and "image" in [s["name"] for s in spec["inputs"]]:
                assert {"Cast", "Transpose"} <= ops  # frame I/O inside the graph


def test_v1_instance_norm_uses_instance_statistics(bundles, exported):
    """Two different images in one batch are normalised separately (no shared/running stats)."""
    path = exported["v1", "float"]["generator"]
    feeds = _feeds(path, 2, 11)
    both = run_ort(path, feeds)[0]
    single = run_ort(path, {k: v[1:] for k, v in feeds.items()})[0]
    assert _max_err(both[1:], single) < 1e-5


def test_corrupt_or_truncated_onnx_is_a_clear_error(exported, tmp_path):
    good = exported["v1", "uint8"]["generator"].read_bytes()
    cases = {"truncated.onnx": good[: len(good) // 3], "empty.onnx": b"",
             "garbage.onnx": b"\x00\xffnot an onnx model" * 50}
    from stargan_rt.export import fuse_adain, to_precision

    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for call in (lambda p=path: load_model(p), lambda p=path: fuse_adain(p, tmp_path / "o.onnx"),
                     lambda p=path: to_precision(p, tmp_path / "o.onnx", "fp16")):
            with pytest.raises(UserError) as err:
                call()
            assert str(path) in str(err.value) and "export" in str(err.value)
    assert not (tmp_path / "o.onnx").exists()
    with pytest.raises(UserError, match="no such ONNX file"):
        load_model(tmp_path / "missing.onnx")


def test_bundle_without_a_network_is_a_clear_error(bundles, tmp_path):
    no_fan = v2_bundle(tmp_path, w_hpf=1, with_fan=False)
    with pytest.raises(UserError, match="fan"):
        export_bundle(no_fan, tmp_path / "out")
    with pytest.raises(UserError, match="has no fan network"):
        export_bundle(no_fan, tmp_path / "out", networks=["fan"])
    with pytest.raises(UserError, match="cannot export v1 network 'mapping_network'"):
        export_bundle(bundles["v1"], tmp_path / "out", networks=["mapping_network"])
    with pytest.raises(UserError, match="unknown I/O variant"):
        export_bundle(bundles["v1"], tmp_path / "out", io="float16")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.onnx"))


def test_export_command(cli, bundles, tmp_path):
    result = cli("export", "--model", bundles["v2"], "--out", tmp_path / "g", "--precision",
                 "fp32", "--precision", "fp16", "--networks", "generator", "--fuse-adain")
    assert result.code == 0, result
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == ["generator.uint8.fp16.fused.onnx", "generator.uint8.fp16.onnx",
                     "generator.uint8.fp32.fused.onnx", "generator.uint8.fp32.onnx"]
    assert "8 AdaIN nodes fused" in result.out
    bad = cli("export", "--model", tmp_path / "nowhere", "--out", tmp_path / "x")
    assert bad.code == 2 and "not a stargan-rt bundle" in bad.err
    few = cli("export", "--model", bundles["v1"], "--out", tmp_path / "x", "--precision", "int8",
              "--calib", tmp_path / "g")
    assert few.code == 2 and "found 0 usable calibration frame" in few.err


def test_onnxsim_failure_falls_back_and_says_so(bundles, tmp_path, monkeypatch):
    import onnxsim

    def broken(model):
        raise RuntimeError("boom")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    logs: list[str] = []
    paths = export_bundle(bundles["v1"], tmp_path, networks=["generator"], log=logs.append)
    meta = get_metadata(load_model(paths["generator"]))
    assert meta["simplified"] == "no (onnxsim failed: RuntimeError: boom)"
    assert "simplified: no (onnxsim failed" in logs[0]
    assert [p.name for p in tmp_path.iterdir()] == ["generator.uint8.fp32.onnx"]  # no temp files
    feeds = _feeds(paths["generator"], 2)
    got = run_ort(paths["generator"], feeds)[0]
    assert _max_err(got, torch_outputs(bundles["v1"], "generator", feeds, "uint8")[0]) <= 1
