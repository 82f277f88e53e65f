"""`stargan-rt build` / `stargan-rt parity` and the parity metrics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine_bundles import tiny_v1, tiny_v2
from stargan_rt.parity import Thresholds, compare, psnr, ssim


# -- metrics ---------------------------------------------------------------------------------------
def _ssim_brute_force(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Direct loops over every 11x11 window of a single-channel image (slow, obvious)."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            x, y = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
            cxy = (w * (x - mx) * (y - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cxy + c2))
                          / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_equals_the_definition():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1, 20, 24, 1)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert ssim(a, b, 255.0) == pytest.approx(_ssim_brute_force(a[0, ..., 0], b[0, ..., 0], 255),
                                              rel=1e-9)
    assert ssim(a, a, 255.0) == pytest.approx(1.0)
    nchw = np.moveaxis(np.concatenate([a, b], -1), -1, 1)
    assert ssim(nchw, nchw[:, ::-1], 255.0, channel_axis=1) < 1.0


def test_psnr_and_compare():
    a = np.full((2, 4, 4, 3), 100, np.uint8)
    b = a.copy()
    assert math.isinf(psnr(a, b, 255))
    b[0, 0, 0, 0] = 110                       # mse = 100 / 96
    assert psnr(a, b, 255) == pytest.approx(10 * math.log10(255 ** 2 * 96 / 100))
    p, s, e = compare(a, b, "nhwc-uint8")
    assert e == 10 and s < 1 and p == pytest.approx(psnr(a, b, 255))
    _, s, e = compare(np.ones((3, 4), np.float32), np.ones((3, 4), np.float32) * 1.5, "vector")
    assert s is None and e == pytest.approx(0.5)


def test_thresholds():
    t = Thresholds()
    assert t.judge("fp32", True, 60, 2)[0] and not t.judge("fp32", True, 60, 3)[0]
    assert t.judge("fp32", False, 99, 1e-3)[0] and not t.judge("fp32", False, 99, 2e-3)[0]
    assert t.judge("fp16", True, 40.0, 50)[0] and not t.judge("fp16", True, 39.9, 0)[0]
    assert t.judge("int8", True, 30.0, 90)[0] and not t.judge("int8", True, 29.9, 0)[0]
    # the FAN's thresholded masks at fp32: by PSNR (one flipped pixel is no failure); landmarks
    # in crop pixels
    assert t.judge("fp32", False, 66.0, 0.57, "nchw-mask")[0]
    assert not t.judge("fp32", False, 59.9, 0.0, "nchw-mask")[0]
    assert t.judge("fp32", False, 99, 7e-3, "landmarks")[0]
    assert not t.judge("fp32", False, 99, 0.06, "landmarks")[0]
    assert t.judge("int8", False, 32.2, 1.0, "nchw-mask")[0]   # reduced precisions: unchanged


def test_a_fan_below_fp32_is_judged_by_the_builds_precision(monkeypatch):
    # OpenVINO int8 builds run the FAN at bf16 where bf16 pays: its masks then answer to the
    # int8 build's 30 dB, not to the 40 dB of an fp16 build or to fp32's tolerance.
    from stargan_rt.backends import openvino as ov_backend
    from stargan_rt.parity import check_engines

    mask = np.zeros((1, 1, 64, 64), np.float32)
    mask[0, 0, 16:48, 16:48] = 1.0
    noisy = mask + np.random.default_rng(0).normal(0, 0.02, mask.shape).astype(np.float32)  # ~34 dB

    class Reference:
        def case(self, network, io):
            return {}, {"mask_face": mask}, {"mask_face": "nchw-mask"}

    class Engine:
        def run(self, feeds):
            return {"mask_face": noisy}

        def describe(self):
            return "stand-in"

    for pays, ran_at, passed in ((True, "fp16", True), (False, "fp32", False)):
        monkeypatch.setattr(ov_backend, "bf16_pays", lambda pays=pays: pays)
        [result] = check_engines(Reference(), "openvino", "int8", {"fan": Engine()}, "uint8",
                                 Thresholds())
        assert result.engine_precision == ran_at and result.passed is passed, result
        assert result.criterion == ("PSNR >= 30 dB" if pays else "PSNR >= 60 dB")


# -- the verbs -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {"v1": tiny_v1(root / "v1"), "v2": tiny_v2(root / "v2")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_build_says_what_where_size_time_then_reuses(cli, bundles, cache_dir):
    result = cli("build", "--model", bundles["v1"], "--target", "openvino", "--precision", "fp16",
                 "--cache-dir", cache_dir)
    assert result.code == 0, result
    assert "-> openvino fp16" in result.out
    assert "built  generator" in result.out and "built  discriminator" in result.out
    assert str(cache_dir) in result.out and " KB" in result.out and " s " in result.out
    again = cli("build", "--model", bundles["v1"], "--target", "openvino", "--precision", "fp16",
                "--cache-dir", cache_dir)
    assert again.code == 0 and "cached generator" in again.out, again


def test_build_auto_and_env_cache(cli, bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("STARGAN_RT_CACHE", str(tmp_path / "env-cache"))
    result = cli("build", "--model", bundles["v1"])
    assert result.code == 0, result
    assert "target auto -> " in result.out
    assert str(tmp_path / "env-cache") in result.out


def test_parity_all_precisions_pass_with_a_readable_table_and_json(cli, bundles, cache_dir,
                                                                   tmp_path):
    report = tmp_path / "parity.json"
    result = cli("parity", "--model", bundles["v1"], "--target", "openvino", "onnxruntime",
                 "--cache-dir", cache_dir, "--report", report)
    assert result.code == 0, result
    assert "parity PASS" in result.out and "PSNR dB" in result.out and "SSIM" in result.out
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["frames"]["count"] >= 32
    seen = {(r["target"], r["precision"], r["network"]) for r in data["results"]}
    for target in ("openvino", "onnxruntime"):
        for precision in ("fp32", "fp16", "int8"):
            assert (target, precision, "generator") in seen
    row = next(r for r in data["results"] if r["precision"] == "fp32"
               and r["network"] == "generator")
    assert row["max_abs_err"] <= 2 and row["ssim"] > 0.99


def test_parity_v2_float_io(cli, bundles, cache_dir):
    result = cli("parity", "--model", bundles["v2"], "--target", "onnxruntime", "--precision",
                 "fp32", "--io", "float", "--cache-dir", cache_dir)
    assert result.code == 0, result
    for network in ("generator", "mapping_network", "style_encoder"):
        assert network in result.out
    assert "max err <= 0.001" in result.out


def test_parity_fails_with_exit_1_when_a_threshold_is_missed(cli, bundles, cache_dir, tmp_path):
    report = tmp_path / "r.json"
    result = cli("parity", "--model", bundles["v1"], "--target", "openvino", "--precision",
                 "fp16", "--fp16-psnr", "200", "--cache-dir", cache_dir, "--report", report)
    assert result.code == 1, result
    assert "FAIL" in result.out and "parity FAIL" in result.out
    assert json.loads(report.read_text())["passed"] is False


def test_parity_on_an_image_folder(cli, bundles, cache_dir, tmp_path):
    import cv2

    from stargan_rt.export.calibration import synthetic_faces

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, face in enumerate(synthetic_faces(48, 32, seed=11)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), face)
    result = cli("parity", "--model", bundles["v1"], "--target", "onnxruntime", "--precision",
                 "fp32", "--images", folder, "--cache-dir", cache_dir)
    assert result.code == 0, result
    assert f"32 frames from {folder}" in result.out


@pytest.mark.parametrize("args,words", [
    (["--target", "tensorrt"], "not available"),
    (["--count", "8"], "at least 32"),
    (["--images", "/nonexistent/faces"], "no such"),
])
def test_parity_bad_input_exits_2(cli, bundles, cache_dir, args, words):
    from stargan_rt.targets import probe

    if "tensorrt" in args and probe("tensorrt").available:
        pytest.skip("TensorRT is installed here")
    result = cli("parity", "--model", bundles["v1"], "--cache-dir", cache_dir, *args)
    assert result.code == 2, result
    assert words in result.err and "Traceback" not in result.err


def test_build_bad_input_exits_2(cli, bundles, tmp_path):
    result = cli("build", "--model", tmp_path / "no-bundle", "--cache-dir", tmp_path / "c")
    assert result.code == 2 and "not a stargan-rt bundle" in result.err, result
    few = tmp_path / "few"
    few.mkdir()
    result = cli("build", "--model", bundles["v1"], "--precision", "int8", "--target",
                 "onnxruntime", "--calib", few, "--cache-dir", tmp_path / "c")
    assert result.code == 2 and "256" in result.err, result


def test_corrupt_onnx_in_the_cache_exits_2(cli, bundles, tmp_path):
    cache = tmp_path / "c"
    assert cli("build", "--model", bundles["v1"], "--target", "onnxruntime", "--cache-dir",
               cache).code == 0
    onnx_file = next(cache.rglob("generator.uint8.fp32.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    result = cli("build", "--model", bundles["v1"], "--target", "onnxruntime", "--cache-dir",
                 cache)
    assert result.code == 2, result
    assert "corrupt" in result.err or "truncated" in result.err
