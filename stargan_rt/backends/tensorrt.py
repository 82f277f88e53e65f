"""TensorRT (NVIDIA GPUs), written for TensorRT 10.x (JetPack 6) and 11.x alike.

Build: a strongly typed network (``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED``) parsed from
the precision graph (fp32, fp16-converted or Q/DQ int8 ONNX: the precision is in the graph, so no
FP16/INT8 builder flags or calibrators, which TensorRT 11 removed), one optimisation profile for
batch 1..8, a workspace limit, and a timing cache kept between builds. Custom plugin libraries
(the AdaIN plugin) are loaded through the plugin registry before parsing.

Run: pycuda device buffers allocated once for the largest profile shape, a CUDA stream, tensor
addresses bound by name, ``execute_async_v3``; uint8 frames in and out (the graph does the casts).
Plans only run on the TensorRT version and GPU model that built them: the engine cache keys on
both and the plan's metadata is checked before deserialising.

Nothing is imported at module level: ``tensorrt`` and ``pycuda`` load on first use. Every
``trt`` name used here is checked against the 10.13 and 11.4 bindings by
tests/test_backends_tensorrt_static.py.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from stargan_rt.backends.base import Backend, Engine, GraphChoice, TargetStatus, TensorSpec
from stargan_rt.errors import UserError

TARGET = "tensorrt"
SUFFIX = ".plan"
MIN_BATCH, OPT_BATCH, MAX_BATCH = 1, 4, 8
WORKSPACE_BYTES = 1 << 30
PLUGIN_ENV = "STARGAN_RT_TRT_PLUGIN"      # path(s) of plugin libraries, os.pathsep-separated
PLUGIN_LIBRARY = "libstargan_rt_trt_plugins.so"

_state: dict = {}
_state_lock = threading.Lock()


def _trt():
    return BACKEND.require("tensorrt")


def _cuda():
    """pycuda's driver module, initialised once."""
    driver = BACKEND.require("pycuda.driver")
    with _state_lock:
        if "cuda_init" not in _state:
            driver.init()
            _state["cuda_init"] = True
    return driver


def logger():
    """One TensorRT logger per process (TensorRT expects the same logger for builder/runtime)."""
    with _state_lock:
        if "logger" not in _state:
            trt = _trt()
            _state["logger"] = trt.Logger(trt.Logger.WARNING)
        return _state["logger"]


def plugin_libraries() -> list[Path]:
    """Plugin libraries to load: $STARGAN_RT_TRT_PLUGIN, else the project's build output."""
    env = os.environ.get(PLUGIN_ENV)
    if env:
        paths = [Path(p) for p in env.split(os.pathsep) if p]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"{PLUGIN_ENV} names plugin libraries that do not exist: {missing}")
        return paths
    here = Path(__file__).resolve()
    for candidate in (here.parent.parent / "lib" / PLUGIN_LIBRARY,
                      here.parents[2] / "build" / PLUGIN_LIBRARY):
        if candidate.is_file():
            return [candidate]
    return []


def load_plugins() -> list[Path]:
    """Register TensorRT's stock plugins and load the project's plugin libraries (once)."""
    with _state_lock:
        if "plugins" in _state:
            return _state["plugins"]
    trt = _trt()
    trt.init_libnvinfer_plugins(logger(), "")
    registry = trt.get_plugin_registry()
    loaded = []
    for path in plugin_libraries():
        handle = registry.load_library(str(path))
        if handle is None:
            raise UserError(f"{path}: TensorRT could not load this plugin library (built for "
                            "another TensorRT / CUDA version?); rebuild it or unset "
                            f"{PLUGIN_ENV} to use the unfused graph")
        loaded.append(path)
    with _state_lock:
        _state["plugins"] = loaded
    return loaded


# -- build -------------------------------------------------------------------------------------
def _parse(onnx_path: Path, network) -> None:
    trt = _trt()
    parser = trt.OnnxParser(network, logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            errors.append(f"[{error.node_name() or error.node()}] {error.desc()}")
        raise UserError(f"{onnx_path}: TensorRT's ONNX parser failed: " + "; ".join(errors[:5])
                        + " (a corrupt file, or an op TensorRT lacks: for AdaIN nodes build the "
                        f"plugin library or unset {PLUGIN_ENV} to use the unfused graph)")


def _profile(builder, network):
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        rest = shape[1:]
        if any(d < 0 for d in rest):
            raise UserError(f"input {tensor.name} has dynamic dimensions besides the batch "
                            f"({shape}); export with a fixed image size")
        profile.set_shape(tensor.name, (MIN_BATCH, *rest), (OPT_BATCH, *rest), (MAX_BATCH, *rest))
    return profile


def _timing_cache(config, path: Path | None, log):
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if cache is None and data:
        log(f"tensorrt: timing cache {path} is unreadable; starting a new one")
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_plan(onnx_path: Path, timing_cache: Path | None = None, log=print) -> bytes:
    """Serialised plan for ``onnx_path`` (strongly typed; precision comes from the graph)."""
    trt = _trt()
    _cuda()
    load_plugins()
    builder = trt.Builder(logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    _parse(Path(onnx_path), network)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.add_optimization_profile(_profile(builder, network))
    _timing_cache(config, timing_cache, log)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"{onnx_path}: TensorRT could not build an engine (see its log above); "
                        "try a smaller --precision change or report the graph")
    if timing_cache is not None:
        from stargan_rt.backends.cache import write_atomic
        write_atomic(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


# -- run ---------------------------------------------------------------------------------------
def check_plan_metadata(path: Path) -> None:
    """Refuse a plan built by another TensorRT version or GPU, using its cache metadata."""
    meta_file = path.with_name(path.name + ".json")
    if not meta_file.is_file():
        return
    try:
        key = json.loads(meta_file.read_text())["key"]
    except (OSError, ValueError, KeyError):
        return
    here = (BACKEND.runtime_version(), BACKEND.device_name())
    built = (key.get("runtime_version"), key.get("device"))
    if built != here:
        raise UserError(f"{path}: plan built by TensorRT {built[0]} for {built[1]}; this machine "
                        f"has TensorRT {here[0]} on {here[1]}; plans only run where they were "
                        "built: rebuild with `stargan-rt build --target tensorrt`")


class TrtEngine(Engine):
    target = TARGET

    def __init__(self, plan: bytes, precision: str, path: Path | None = None):
        trt, cuda = _trt(), _cuda()
        self.precision = precision
        self.path = path
        self._cuda = cuda
        self._context_cuda = cuda.Device(0).retain_primary_context()
        self._context_cuda.push()
        try:
            load_plugins()
            self._runtime = trt.Runtime(logger())
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise UserError(f"{path or 'plan'}: TensorRT {trt.__version__} cannot deserialise "
                                "this plan (corrupt, or built by another TensorRT version or for "
                                "another GPU); rebuild with `stargan-rt build --target tensorrt`")
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._setup(trt)
        finally:
            cuda.Context.pop()
        self._lock = threading.Lock()

    def _setup(self, trt) -> None:
        engine, context = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs, self.outputs = [], []
        for name in names:
            spec = TensorSpec(name, tuple(engine.get_tensor_shape(name)),
                              np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(spec)
        # Largest shapes of the profile size the device buffers, allocated once.
        self.max_batch = MAX_BATCH
        for spec in self.inputs:
            max_shape = tuple(engine.get_tensor_profile_shape(spec.name, 0)[2])
            self.max_batch = min(self.max_batch, max_shape[0])
            context.set_input_shape(spec.name, max_shape)
        self._device, self._host = {}, {}
        for spec in self.inputs + self.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            nbytes = int(np.prod(shape)) * spec.dtype.itemsize
            self._device[spec.name] = self._cuda.mem_alloc(max(nbytes, 1))
            context.set_tensor_address(spec.name, int(self._device[spec.name]))
            # Page-locked host staging buffers: pycuda's async copies require them.
            self._host[spec.name] = self._cuda.pagelocked_empty(shape, spec.dtype)

    def _run(self, feeds):
        cuda = self._cuda
        with self._lock:
            if self._context is None:
                raise UserError(f"{self.path or 'plan'}: this TensorRT engine was closed")
            self._context_cuda.push()
            try:
                for spec in self.inputs:
                    array = feeds[spec.name]
                    staged = self._host[spec.name].reshape(-1)[:array.size].reshape(array.shape)
                    np.copyto(staged, array)
                    self._context.set_input_shape(spec.name, array.shape)
                    cuda.memcpy_htod_async(self._device[spec.name], staged, self._stream)
                if not self._context.execute_async_v3(self._stream.handle):
                    raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")
                results = {}
                for spec in self.outputs:
                    shape = tuple(self._context.get_tensor_shape(spec.name))
                    host = self._host[spec.name].reshape(-1)[:int(np.prod(shape))].reshape(shape)
                    cuda.memcpy_dtoh_async(host, self._device[spec.name], self._stream)
                    results[spec.name] = host
                self._stream.synchronize()
                return {name: array.copy() for name, array in results.items()}
            finally:
                cuda.Context.pop()

    def close(self) -> None:
        """Free the device buffers, the execution context and the engine, then let go of the
        CUDA context."""
        with self._lock:
            if self._context is None:
                return
            self._context_cuda.push()
            try:
                for allocation in self._device.values():
                    allocation.free()
                self._device, self._host = {}, {}
                self._context = None
                self._engine = None
                self._runtime = None
                self._stream = None
            finally:
                self._cuda.Context.pop()
            self._context_cuda.detach()

    def describe(self) -> str:
        return f"tensorrt {BACKEND.runtime_version()} {self.precision} ({BACKEND.device_name()})"


def _nvidia_gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


class TensorRtBackend(Backend):
    name = TARGET
    suffix = SUFFIX
    install_hint = ("pip install 'stargan-rt[tensorrt]' (tensorrt + pycuda) on a machine with an "
                    "NVIDIA GPU and driver; Jetson: TensorRT comes with JetPack")

    def probe(self) -> TargetStatus:
        try:
            trt = importlib.import_module("tensorrt")
        except ImportError as exc:
            reason = ("not installed (pip install 'stargan-rt[tensorrt]' on a machine with an "
                      "NVIDIA GPU; the wheels come from NVIDIA's package index)")
            if "libnvinfer" in str(exc):
                reason = f"Python bindings present but the TensorRT libraries are missing ({exc})"
            return TargetStatus(TARGET, False, detail=reason)
        gpus = _nvidia_gpu_names()
        if not gpus:
            return TargetStatus(TARGET, False, trt.__version__, "no NVIDIA GPU found (nvidia-smi)")
        return TargetStatus(TARGET, True, trt.__version__, ", ".join(gpus))

    def runtime_version(self) -> str:
        return _trt().__version__

    def device_name(self) -> str:
        device = _cuda().Device(0)
        major, minor = device.compute_capability()
        return f"{device.name()} (sm_{major}{minor})"

    def build_options(self, precision: str) -> str:
        plugins = ",".join(Path(p).name for p in plugin_libraries())
        return f"batch={MIN_BATCH}..{MAX_BATCH};workspace={WORKSPACE_BYTES};plugins={plugins}"

    def graph_for(self, network: str, precision: str, arch: str) -> GraphChoice:
        """v2 generators: the AdaIN-fused graph when the plugin library is there, else the
        unfused one (InstanceNormalization + Mul + Add)."""
        if network != "generator" or arch != "v2":
            return GraphChoice(precision)
        libs = plugin_libraries()
        if not libs:
            return GraphChoice(precision, False, (
                f"tensorrt: AdaIN plugin library not found (set {PLUGIN_ENV} or build "
                f"{PLUGIN_LIBRARY}); using the unfused graph (InstanceNormalization + Mul + Add)"))
        return GraphChoice(precision, True, f"tensorrt: AdaIN plugin from {libs[0]}; using the "
                                            "fused graph")

    def compile(self, onnx_path, precision, out, log, cache) -> None:
        """The plan (precision comes from the graph); the timing cache is kept per TensorRT
        version and GPU in the engine cache."""
        timing = cache.aux_path(TARGET, f"timing-{self.runtime_version()}-"
                                        f"{self.device_name()}.cache")
        out.write_bytes(build_plan(onnx_path, timing, log))

    def load(self, path, precision, streams: int = 1) -> TrtEngine:
        # One execution context; concurrent calls queue on its lock (streams is a CPU-target
        # setting: the GPU already overlaps work with the host).
        path = Path(path)
        check_plan_metadata(path)
        return TrtEngine(path.read_bytes(), precision, path)


BACKEND = TensorRtBackend()
