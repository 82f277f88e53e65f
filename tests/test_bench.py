"""`stargan-rt bench` on a tiny model: it runs, writes its table, JSON and plots, puts the peers'
rows in when their packages are installed and skips them with a reason when not. No timings are
asserted (they are benchmarks)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from engine_bundles import tiny_v1, tiny_v2

HAVE_NNCF = importlib.util.find_spec("nncf") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-models")
    return (tiny_v1(root / "v1", discriminator=False), tiny_v2(root / "v2"),
            root / "cache")  # one engine cache: each model is exported once


def _rows(result: dict) -> dict:
    return {row["label"]: row for row in result["models"][0]["rows"]}


def test_bench_writes_table_json_and_plots(cli, tiny, tmp_path):
    out = tmp_path / "out"
    # the project's int8 graphs are tested in test_int8_targets.py: fp32 here, and the peers
    result = cli("bench", "--model", tiny[0], "--rounds", "1", "--batch", "1,2",
                 "--precisions", "fp32", "--targets", "onnxruntime,openvino",
                 "--ceiling-size", "32,64", "--ceiling-seconds", "0.02",
                 "--cache-dir", tiny[2], "--out", out)
    assert result.code == 0, result
    data = json.loads((out / "bench.json").read_text())
    assert data["machine"]["cpu"] and data["machine"]["load_average"] is not None
    assert set(data["ceilings"]["onnxruntime"]) == {"fp32", "int8"}
    # a ceiling is the fastest kernel (matmul and 3x3 convolution chains at each size), each
    # kernel's figures kept
    start = data["ceilings_start"]
    assert start["kernels"] == ["matmul 32x32 x4", "conv3x3 8ch 32x32 x8",
                                "matmul 64x64 x4", "conv3x3 16ch 32x32 x8"]
    assert set(start["by_kernel"]) == set(start["kernels"])
    for rt in ("onnxruntime", "openvino"):
        for prec, value in start[rt].items():
            assert value == max(start["by_kernel"][k][rt][prec] for k in start["kernels"])
    # the machine's ceiling at a precision is the best runtime's, so no row can be nearer to it
    for per_precision in data["ceilings"].values():
        for prec, value in per_precision.items():
            assert value is None or data["machine_ceilings"][prec] >= value
    rows = _rows(data)
    for label in ("PyTorch fp32 eager", "PyTorch bf16 autocast",
                  "onnxruntime fp32 (this project)", "openvino fp32 (this project)",
                  "onnxruntime int8 by quantize_static (peer)", "openvino int8 by NNCF (peer)"):
        assert label in rows, sorted(rows)
    for label, row in rows.items():
        if row["skipped"]:
            assert label == "openvino int8 by NNCF (peer)" and not HAVE_NNCF
            assert "nncf" in row["skipped"]
            continue
        for batch in ("1", "2"):
            stats = row["batches"][batch]
            assert stats["calls"] == 2 and stats["p50_ms"] > 0 and stats["p95_ms"] >= \
                stats["p50_ms"] and stats["gflops"] >= 0
        assert row["accuracy"]["frames"] == 8 and row["build_s"] is not None
        first = row["batches"]["1"]
        assert first["fraction_of_machine_ceiling"] <= first["fraction_of_ceiling"]
    assert rows["PyTorch fp32 eager"]["accuracy"]["max_abs_err"] == 0
    assert rows["onnxruntime fp32 (this project)"]["accuracy"]["max_abs_err"] <= 2
    assert rows["onnxruntime int8 by quantize_static (peer)"]["accuracy"]["psnr_db"] >= 25
    table = (out / "bench.md").read_text()
    assert "| engine |" in table and data["machine"]["cpu"] in table
    assert "openvino int8 by NNCF (peer)" in table
    if HAVE_MPL:
        assert (out / "latency.png").stat().st_size > 1000
        assert (out / "psnr_speed.png").stat().st_size > 1000


def test_peer_without_its_package_is_skipped_with_a_reason(cli, tiny, tmp_path, monkeypatch):
    import stargan_rt.export.int8_nncf as int8_nncf

    monkeypatch.setattr(int8_nncf, "nncf_available", lambda: "nncf is not installed (test)")
    out = tmp_path / "out"
    result = cli("bench", "--model", tiny[1], "--rounds", "1", "--batch", "1",
                 "--precisions", "fp32", "--targets", "openvino", "--ceiling-size", "64",
                 "--ceiling-seconds", "0.02", "--cache-dir", tiny[2], "--out", out)
    assert result.code == 0, result
    rows = _rows(json.loads((out / "bench.json").read_text()))
    assert rows["openvino int8 by NNCF (peer)"]["skipped"] == "nncf is not installed (test)"
    assert "onnxruntime int8 by quantize_static (peer)" not in rows  # target not benched
    assert "skipped: nncf is not installed" in (out / "bench.md").read_text()


def test_pipeline_mode(cli, tiny, tmp_path):
    import cv2

    threads = cv2.getNumThreads()
    out = tmp_path / "pipe"
    result = cli("bench", "--pipeline", "--model", tiny[0], "--target", "onnxruntime",
                 "--precision", "fp32", "--max-frames", "12", "--opencv-threads", "1,default",
                 "--streams", "1,2", "--pipeline-rounds", "2", "--cache-dir", tiny[2],
                 "--out", out)
    assert result.code == 0, result
    data = json.loads((out / "bench.json").read_text())
    assert [(r["streams"], r["opencv_threads"]) for r in data["pipeline"]] == [
        (1, 1), (1, None), (2, 1), (2, None)]
    run = data["pipeline"][0]
    # each setting ran twice between engine-alone timings; one of the two is reported
    assert all(len(r["rounds"]) == 2 for r in data["pipeline"])
    assert run["fps_fraction_of_alone"] in [r["fps_fraction_of_alone"] for r in run["rounds"]]
    assert "640x480" in run["source"]["description"]
    assert all(r["frames_out"] == 12 for r in data["pipeline"])
    assert run["engine_alone_fps"] > 0 and data["pipeline"][2]["streams_alone_fps"] > 0
    assert run["stages"]["infer"]["count"] > 0 and run["fps_fraction_of_alone"] > 0
    assert all(r["detector"] == "blazeface" for r in data["pipeline"])  # the webcam's default
    assert "| blazeface |" in (out / "bench.md").read_text()
    assert "Live pipeline" in (out / "bench.md").read_text()
    assert cv2.getNumThreads() == threads  # the pipeline's OpenCV thread budget is undone


def test_bad_options(cli, tmp_path):
    assert cli("bench", "--batch", "0", "--out", tmp_path).code == 2
    assert cli("bench", "--pipeline", "--pipeline-rounds", "0", "--out", tmp_path).code == 2
    assert cli("bench", "--batch", "x", "--out", tmp_path).code == 2
    result = cli("bench", "--ceiling-size", "1024,0", "--out", tmp_path)
    assert result.code == 2 and "expected positive sizes" in result.err
