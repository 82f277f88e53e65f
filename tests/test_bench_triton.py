"""benchmarks/triton_scaling.py end to end on the demo model: a real tritonserver, 1 and 2
client processes, a local baseline; the JSON has its figures and frames were translated."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "triton_scaling.py"


def _load():
    spec = importlib.util.spec_from_file_location("triton_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_triton_scaling_demo(tmp_path):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient (stargan-rt[serve])")
    from stargan_rt.errors import UserError
    from stargan_rt.serve.server import find_tritonserver

    try:
        find_tritonserver()
    except UserError as exc:
        pytest.skip(f"no tritonserver binary: {exc}")
    bench = _load()
    out = tmp_path / "scaling.json"
    result = bench.main(["--model", "demo-v1", "--target", "openvino", "--precision", "fp32",
                         "--streams", "1,2", "--frames", "10", "--resize", "none",
                         "--no-baseline-after", "--settle-s", "0", "--out", str(out)], log=lambda m: None)
    saved = json.loads(out.read_text())
    assert saved["machine"]["cpu"] and saved["machine"]["cores"] >= 1
    assert "share" in saved["caveat"] and saved["date_utc"] and saved["command"]
    assert saved["triton"]["generator_model"] == "demo-v1-generator"
    assert saved["triton"]["exit_status"] is not None
    assert saved["local"]["fps"] > 0 and saved["local"]["before"]["frames_out"] == 10
    assert [e["streams"] for e in saved["remote"]] == [1, 2]
    for entry in saved["remote"]:
        n = entry["streams"]
        assert not entry["errors"], entry["errors"]
        assert entry["clients_ok"] == n and entry["frames_out"] == 10 * n
        assert entry["frames_with_faces"] == 10 * n  # every sample frame has a face
        assert entry["aggregate_fps"] > 0 and entry["ratio_to_local"] > 0
        assert len(entry["per_stream_fps"]) == n
        # every translated face was one generator item on the server, in some batch
        hist = {int(k): v for k, v in entry["batch_histogram"].items()}
        assert sum(size * count for size, count in hist.items()) == 10 * n
        assert max(hist) <= 8 and 1.0 <= entry["mean_batch"] <= 8
        metrics = entry["metrics"]["demo-v1-generator"]
        assert metrics["nv_inference_count"] == 10 * n
        assert metrics["nv_inference_exec_count"] == sum(hist.values())
    assert result["remote"][0]["aggregate_fps"] == saved["remote"][0]["aggregate_fps"]
