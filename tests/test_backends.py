"""Engine backends and the engine cache, on a small hand-built ONNX graph (no torch needed).

The graph has the engines' frame I/O: uint8 NHWC frames in and out, a float vector beside them.
TensorRT tests run only where TensorRT and an NVIDIA GPU are present.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from stargan_rt.backends import get_backend, get_engine
from stargan_rt.backends import onnxruntime as ort_backend
from stargan_rt.backends import openvino as ov_backend
from stargan_rt.backends.cache import EngineCache, write_atomic
from stargan_rt.errors import UserError

SIZE = 8
CPU_TARGETS = ["onnxruntime", "openvino"]


def make_graph(path: Path, scale: float = 0.5) -> Path:
    """translated = uint8(clip(round(image * scale + 10))), logits = labels @ W (2 -> 3)."""
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])
    labels = helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["N", 2])
    out = helper.make_tensor_value_info("translated", TensorProto.UINT8, ["N", SIZE, SIZE, 3])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    weights = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
             helper.make_tensor("shift", TensorProto.FLOAT, [], [10.0]),
             helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("hi", TensorProto.FLOAT, [], [255.0]),
             helper.make_tensor("W", TensorProto.FLOAT, [2, 3], weights.ravel().tolist())]
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "scale"], ["m"]),
             helper.make_node("Add", ["m", "shift"], ["a"]),
             helper.make_node("Round", ["a"], ["r"]),
             helper.make_node("Clip", ["r", "lo", "hi"], ["c"]),
             helper.make_node("Cast", ["c"], ["translated"], to=TensorProto.UINT8),
             helper.make_node("MatMul", ["labels", "W"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [image, labels], [out, logits], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected(image: np.ndarray, labels: np.ndarray, scale: float = 0.5):
    weights = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    out = np.clip(np.rint(image.astype(np.float32) * scale + 10), 0, 255).astype(np.uint8)
    return out, labels @ weights


@pytest.fixture
def graph(tmp_path):
    return make_graph(tmp_path / "tiny.onnx")


@pytest.fixture
def cache(tmp_path):
    return EngineCache(tmp_path / "cache")


def feeds(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8),
            "labels": rng.random((batch, 2), dtype=np.float32)}


def test_every_target_is_one_registered_backend():
    from stargan_rt.backends import BACKENDS, Backend
    from stargan_rt.targets import PREFERENCE

    assert PREFERENCE == tuple(BACKENDS) == ("tensorrt", "openvino", "onnxruntime")
    for name, backend in BACKENDS.items():
        assert isinstance(backend, Backend) and backend.name == name
        assert backend.suffix and backend.install_hint
        for method in ("probe", "runtime_version", "device_name", "compile", "load"):
            assert getattr(type(backend), method) is not getattr(Backend, method), (name, method)
        assert backend.probe().name == name


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_closed_engine_refuses_to_run(target, graph, cache):
    engine, _ = get_engine(target, graph, "generator", "fp32", cache, log=lambda m: None)
    f = feeds()
    assert engine.run(f)["translated"].shape == (3, SIZE, SIZE, 3)
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(UserError, match="closed"):
        engine.run(f)


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_engine_with_streams_serves_concurrent_calls(target, graph, cache):
    """A 2-stream engine called from 4 threads at once returns each caller its own result."""
    import threading

    engine, _ = get_engine(target, graph, "generator", "fp32", cache, log=lambda m: None,
                           streams=2)
    if target == "openvino":
        assert "2 streams" in engine.describe()
    results, errors = {}, []

    def call(seed):
        try:
            for _ in range(5):
                f = feeds(batch=2, seed=seed)
                out = engine.run(f)["translated"]
                np.testing.assert_array_equal(out, expected(f["image"], f["labels"])[0])
            results[seed] = True
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 4
    engine.close()
    with pytest.raises(UserError, match="closed"):
        engine.run(feeds())


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_engine_runs_and_describes_itself(target, graph, cache):
    engine, info = get_engine(target, graph, "generator", "fp32", cache, log=lambda m: None)
    assert info.built and info.path.is_file() and info.size == info.path.stat().st_size > 0
    assert [s.name for s in engine.inputs] == ["image", "labels"]
    assert {s.name: s.dtype for s in engine.outputs} == {"translated": np.uint8,
                                                         "logits": np.float32}
    assert engine.input("image").shape[1:] == (SIZE, SIZE, 3)
    assert "image uint8[N,8,8,3]" in engine.signature()
    f = feeds()
    out = engine.run(f)
    want_img, want_logits = expected(f["image"], f["labels"])
    assert out["translated"].dtype == np.uint8
    np.testing.assert_array_equal(out["translated"], want_img)
    np.testing.assert_allclose(out["logits"], want_logits, rtol=1e-6, atol=1e-6)
    # Second request: loaded from the cache, same result.
    again, info2 = get_engine(target, graph, "generator", "fp32", cache, log=lambda m: None)
    assert not info2.built and info2.path == info.path
    np.testing.assert_array_equal(again.run(f)["translated"], want_img)


def test_missing_input_is_a_user_error(graph, cache):
    engine, _ = get_engine("onnxruntime", graph, "generator", "fp32", cache, log=lambda m: None)
    with pytest.raises(UserError, match="missing input"):
        engine.run({"image": feeds()["image"]})


def test_large_batches_run_in_chunks(graph, cache):
    engine, _ = get_engine("onnxruntime", graph, "generator", "fp32", cache, log=lambda m: None)
    f = feeds(batch=11)
    whole = engine.run(f)
    engine.max_batch = 4
    chunked = engine.run(f)
    np.testing.assert_array_equal(whole["translated"], chunked["translated"])
    assert chunked["logits"].shape == (11, 3)


def test_openvino_precision_hints(monkeypatch):
    monkeypatch.setattr(ov_backend, "bf16_pays", lambda: False)
    assert ov_backend.inference_hint("int8") == "f32"
    monkeypatch.setattr(ov_backend, "bf16_pays", lambda: True)
    assert ov_backend.inference_hint("int8") == "bf16"   # the int8 engine's float parts
    monkeypatch.setattr(ov_backend, "capabilities", lambda: ["FP32", "BF16", "FP16"])
    assert ov_backend.inference_hint("fp16") == "bf16"
    monkeypatch.setattr(ov_backend, "capabilities", lambda: ["FP32", "FP16"])
    assert ov_backend.inference_hint("fp16") == "f16"
    monkeypatch.setattr(ov_backend, "capabilities", lambda: ["FP32"])
    assert ov_backend.inference_hint("fp16") == "f32"


def test_openvino_reduced_precision_is_the_native_one(graph, cache):
    engine, _ = get_engine("openvino", graph, "generator", "fp16", cache, log=lambda m: None)
    caps = ov_backend.capabilities()
    assert engine.hint == ("bf16" if "BF16" in caps else "f16" if "FP16" in caps else "f32")
    f = feeds()
    want, _ = expected(f["image"], f["labels"])
    # bf16 keeps 8 significant bits: values up to ~137 may move by one level or so.
    assert np.abs(engine.run(f)["translated"].astype(int) - want).max() <= 2


def test_cache_key_separates_precision_target_and_version(graph, cache, monkeypatch):
    paths = set()
    for target in CPU_TARGETS:
        for precision in ("fp32", "fp16"):
            _, info = get_engine(target, graph, "generator", precision, cache, log=lambda m: None)
            paths.add(info.path)
    assert len(paths) == 4
    monkeypatch.setattr(ort_backend.BACKEND, "runtime_version", lambda: "0.0.1-other")
    _, info = get_engine("onnxruntime", graph, "generator", "fp32", cache, log=lambda m: None)
    assert info.built and info.path not in paths          # other runtime version: rebuilt
    make_graph(graph, scale=0.25)                          # other ONNX content: rebuilt
    engine, info = get_engine("onnxruntime", graph, "generator", "fp32", cache,
                              log=lambda m: None)
    assert info.built
    f = feeds()
    np.testing.assert_array_equal(engine.run(f)["translated"],
                                  expected(f["image"], f["labels"], 0.25)[0])


@pytest.mark.parametrize("target", CPU_TARGETS)
@pytest.mark.parametrize("damage", ["corrupt", "truncate", "no-metadata", "garbage"])
def test_damaged_cache_entries_are_rebuilt_and_said(target, damage, graph, cache):
    _, info = get_engine(target, graph, "generator", "fp32", cache, log=lambda m: None)
    path = info.path
    data = bytearray(path.read_bytes())
    if damage == "corrupt":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "no-metadata":
        cache.meta_path(path).unlink()
    else:  # garbage that still matches its metadata: the runtime itself rejects it
        cache.store(EngineCacheKey(target, graph), "generator", get_backend(target).suffix,
                    b"not an engine" * 10)
    said = []
    engine, info2 = get_engine(target, graph, "generator", "fp32", cache, log=said.append)
    assert info2.built and info2.path == path
    assert said and "rebuilt" in said[0], said
    f = feeds()
    np.testing.assert_array_equal(engine.run(f)["translated"],
                                  expected(f["image"], f["labels"])[0])
    assert cache.lookup(EngineCacheKey(target, graph), "generator",
                        get_backend(target).suffix).hit


def EngineCacheKey(target, graph):  # noqa: N802 - reads like the key it builds
    from stargan_rt.backends import engine_key

    return engine_key(target, Path(graph), "fp32")


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".tmp"))


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "disk is full"),
                                        (errno.EROFS, "read-only")])
def test_full_or_read_only_disk_is_a_clear_error_and_leaves_no_debris(
        code, words, graph, cache, monkeypatch):
    _, good = get_engine("onnxruntime", graph, "generator", "fp32", cache, log=lambda m: None)
    before = {p: p.read_bytes() for p in cache.root.rglob("*") if p.is_file()}

    def failing_compile(onnx_path, precision, out, log=print, cache=None):
        out.write_bytes(b"half an engine")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ort_backend.BACKEND, "compile", failing_compile)
    with pytest.raises(UserError, match=words) as err:
        get_engine("onnxruntime", graph, "generator", "fp16", cache, log=lambda m: None)
    assert "--cache-dir" in str(err.value)
    after = {p: p.read_bytes() for p in cache.root.rglob("*") if p.is_file()}
    assert after == before and not _leftovers(cache.root)
    # The good entry is still served.
    _, again = get_engine("onnxruntime", graph, "generator", "fp32", cache, log=lambda m: None)
    assert not again.built and again.path == good.path


def test_unwritable_cache_root(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(UserError, match="not writable"):
        write_atomic(tmp_path / "x" / "engine.bin", b"data", tmp_path)
    assert not (tmp_path / "x" / "engine.bin").exists()


def test_corrupt_onnx_is_a_user_error(tmp_path, cache):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    for target in CPU_TARGETS:
        with pytest.raises(UserError, match="corrupt|truncated"):
            get_engine(target, bad, "generator", "fp32", cache, log=lambda m: None)
    assert not list((cache.root / "engines").rglob("*.onnx")) and not _leftovers(cache.root)


def test_unknown_target_and_missing_onnx(tmp_path, cache):
    with pytest.raises(UserError, match="unknown target"):
        get_backend("coreml")
    with pytest.raises(UserError, match="no such ONNX"):
        get_engine("onnxruntime", tmp_path / "none.onnx", "generator", "fp32", cache)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from stargan_rt.backends.cache import default_cache_dir

    monkeypatch.setenv("STARGAN_RT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("STARGAN_RT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "stargan-rt"


def test_backends_do_not_import_runtimes_or_torch_at_import():
    import subprocess
    import sys

    code = ("import sys, stargan_rt.backends, stargan_rt.backends.tensorrt, "
            "stargan_rt.backends.openvino, stargan_rt.backends.onnxruntime, stargan_rt.runtime; "
            "bad = [m for m in ('torch', 'tensorrt', 'pycuda', 'openvino', 'onnxruntime') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- TensorRT: only where it is installed with a GPU ----------------------------------------------
def _tensorrt_or_skip():
    from stargan_rt.targets import probe

    status = probe("tensorrt")
    if not status.available:
        pytest.skip(f"TensorRT engine tests need TensorRT and an NVIDIA GPU: {status.detail}")
    pytest.importorskip("pycuda.driver", reason="TensorRT runtime tests need pycuda")


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnxruntime(graph, cache):
    _tensorrt_or_skip()
    engine, info = get_engine("tensorrt", graph, "generator", "fp32", cache)
    assert info.built and info.path.suffix == ".plan"
    assert engine.max_batch == 8
    f = feeds(batch=11)                      # > 8: runs in chunks of the profile's max batch
    out = engine.run(f)
    want_img, want_logits = expected(f["image"], f["labels"])
    np.testing.assert_array_equal(out["translated"], want_img)
    np.testing.assert_allclose(out["logits"], want_logits, rtol=1e-3, atol=1e-3)
    timing = list(cache.root.rglob("timing-*.cache"))
    assert timing and timing[0].stat().st_size > 0   # timing cache persisted for the next build
    _, again = get_engine("tensorrt", graph, "generator", "fp32", cache)
    assert not again.built


@pytest.mark.tensorrt
def test_tensorrt_plan_from_elsewhere_is_refused(graph, cache):
    _tensorrt_or_skip()
    import json

    from stargan_rt.backends import tensorrt as trt_backend

    _, info = get_engine("tensorrt", graph, "generator", "fp32", cache)
    meta = cache.meta_path(info.path)
    data = json.loads(meta.read_text())
    data["key"]["runtime_version"] = "9.0.0"
    meta.write_text(json.dumps(data))
    with pytest.raises(UserError, match="built by TensorRT 9.0.0"):
        trt_backend.BACKEND.load(info.path, "fp32")
    broken = info.path.with_name("broken.plan")
    broken.write_bytes(b"garbage" * 100)
    with pytest.raises(UserError, match="cannot deserialise"):
        trt_backend.BACKEND.load(broken, "fp32")


def test_openvino_bf16_is_measured_unless_forced(monkeypatch):
    gain = ov_backend.bf16_gain()   # a real measurement on this CPU
    assert gain > 0
    monkeypatch.delenv(ov_backend.BF16_ENV, raising=False)
    has_bf16 = "BF16" in ov_backend.capabilities()
    assert ov_backend.bf16_pays() == (has_bf16 and gain >= ov_backend.BF16_MIN_GAIN)
    for forced, want in (("1", True), ("0", False)):
        monkeypatch.setenv(ov_backend.BF16_ENV, forced)
        assert ov_backend.bf16_pays() is want


def test_the_fan_runs_at_bf16_only_in_openvino_int8_builds_where_bf16_pays(monkeypatch):
    from stargan_rt.build import network_precision

    for pays in (True, False):
        monkeypatch.setattr(ov_backend, "bf16_pays", lambda pays=pays: pays)
        assert network_precision("fan", "int8", "openvino") == ("fp16" if pays else "fp32")
        assert ov_backend.BACKEND.int8_float_precision() == ("bf16" if pays else "fp32")
        for precision in ("fp32", "fp16"):   # fp16 builds judge the FAN at 40 dB: it stays fp32
            assert network_precision("fan", precision, "openvino") == "fp32"
        assert network_precision("fan", "int8", "onnxruntime") == "fp32"
        assert network_precision("generator", "int8", "openvino") == "int8"
        assert network_precision("style_encoder", "int8", "openvino") == "fp32"
