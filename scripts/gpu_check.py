#!/usr/bin/env python3
"""One prepared check of everything GPU-related, for the few minutes a GPU machine is lent.

    scripts/gpu-check.sh [OUT_DIR]            # on a machine with an NVIDIA GPU
    scripts/gpu-check.sh --dry-run [OUT_DIR]  # anywhere: every step that needs no GPU

Steps, in order (each is recorded even when it fails; the reports are rewritten after each
step, so a run cut short still leaves everything it measured):

1. environment: Python, PyTorch, CUDA, GPUs, CuPy, TensorRT, nvcc, CMake, the git commit;
2. native build: the top-level CMakeLists.txt (kernel library, adain_check; the TensorRT plugin
   when TensorRT's headers are found), with what was skipped and why;
3. kernel check: the AdaIN kernel (f32 and f16 I/O), called through ctypes on PyTorch's CUDA
   buffers, against a float64 numpy reference on many random shapes (the v2 decoder's at
   256 px, awkward ones, large H x W), fresh inputs and a NaN-poisoned output each case;
   f32 relative error < 1e-5, f16 < 2e-3, never NaN;
4. kernel timing at the v2 decoder shapes against a device-to-device copy of the same bytes and
   PyTorch's decomposed instance norm + affine + LeakyReLU: time, GB/s, fraction of copy;
5. reference translator: official-size v1 (128 px) and v2 (256 px, w_hpf 1 with a FAN) with
   random weights, on CUDA in fp32 and fp16 autocast against the CPU fp32 reference, timed;
6. a few v2 training iterations on CUDA (official configuration, 256 px, w_hpf 1 + FAN);
7. a 2-process NCCL training run when the machine has 2 GPUs, else one line;
8. v1 training on CUDA for about 4 minutes on synthetic faces (128 px, the paper's widths,
   bf16 autocast), then `stargan-rt eval` on held-out faces: its JSON report is copied whole;
9. TensorRT, when importable: `build --target tensorrt` fp32/fp16/int8 with and without the
   AdaIN plugin and `parity --target tensorrt`; else one line.

Reports: OUT_DIR/gpu-check.json and OUT_DIR/gpu-check.md (printed at the end); per-command logs
under OUT_DIR/logs/. Exit status 0 when nothing failed, 1 when a check failed or a step raised.

A dry run (--dry-run, or automatically without a CUDA device) runs the same steps with the GPU
part replaced: it configures and builds the native code (for one architecture), loads the kernel
library and calls it through the same ctypes binding with an empty shape (answered without
touching a GPU), computes the float64 reference on the same shape list and compares it with a
float32 numpy implementation of the same formula, times the copy and PyTorch's decomposed op on
the CPU, runs small versions of the translators and the training / eval commands on the CPU with
a tiny budget, and says which lines a GPU run would fill in. Nothing in a dry run is a GPU figure.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# The whole check must end within 9 minutes; the default budget leaves room for start-up and
# the final report.
DEFAULT_BUDGET_S = 520.0
TRAIN_MINUTES = 4.0
# Time kept for what follows v1 training (eval, TensorRT line, reports).
RESERVE_AFTER_TRAIN_S = 130.0

F32_TOLERANCE = 1e-5
F16_TOLERANCE = 2e-3
EPSILON = 1e-5          # nn.InstanceNorm2d's default, as in the v2 generator
NEGATIVE_SLOPE = 0.2    # the v2 generator's LeakyReLU
COPY_FRACTION_GOAL = 0.70
TORCH_SPEEDUP_GOAL = 1.5
CUDA_ERROR_INVALID_VALUE = 1  # cudaErrorInvalidValue: the kernel's answer to an empty shape

V1_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling", "Eyeglasses")


# ---------------------------------------------------------------------------------------------
# Settings of a run: the GPU run and the dry run differ only here.

class Plan:
    """Sizes and budgets of each step; ``dry`` shrinks them for a CPU-only run."""

    def __init__(self, dry: bool, budget_s: float, train_minutes: float):
        self.dry = dry
        self.budget_s = budget_s
        self.train_minutes = train_minutes
        if dry:
            self.v1_size, self.v1_widths = 32, dict(conv_dim=8, repeat_num=1, d_conv_dim=8,
                                                    d_repeat_num=2)
            # w_hpf 0 (no FAN): a FAN pass at its 256 px input costs seconds on a small CPU.
            self.v2_size, self.v2_w_hpf = 32, 0
            self.v2_widths = dict(style_dim=16, latent_dim=8, max_conv_dim=32, dim_in=16,
                                  hidden_dim=32)
            self.translate_batch, self.time_batches, self.time_reps = 2, (1,), 1
            self.train_size, self.train_count, self.test_count = 32, 48, 12
            self.v2_train_size, self.v2_train_count, self.v2_iters = 32, 24, 2
            self.eval_images, self.classifier_seconds = 8, 2.0
            self.synth_workers = 1
            self.kernel_random_cases = 24  # the same shape list as a GPU run
            self.timing_batches = (1,)
        else:
            self.v1_size, self.v1_widths = 128, dict(conv_dim=64, repeat_num=6, d_conv_dim=64,
                                                     d_repeat_num=6)
            self.v2_size, self.v2_w_hpf = 256, 1
            self.v2_widths = dict(style_dim=64, latent_dim=16, max_conv_dim=512, dim_in=None,
                                  hidden_dim=512)
            self.translate_batch, self.time_batches, self.time_reps = 4, (1, 8), 20
            self.train_size, self.train_count, self.test_count = 128, 6000, 300
            self.v2_train_size, self.v2_train_count, self.v2_iters = 256, 400, 20
            self.eval_images, self.classifier_seconds = 200, 60.0
            self.synth_workers = max(1, min(12, (os.cpu_count() or 2) - 2))
            self.kernel_random_cases = 24
            self.timing_batches = (1, 8)


# ---------------------------------------------------------------------------------------------
# Reports

STATUS_ORDER = ("pass", "fail", "error", "skip", "dry-run")


class Report:
    def __init__(self, out: Path, plan: Plan, argv: list[str]):
        self.out = out
        self.plan = plan
        self.started = time.monotonic()
        self.data = {"title": "stargan-rt GPU check", "dry_run": plan.dry,
                     "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "argv": argv, "budget_s": plan.budget_s, "elapsed_s": 0.0,
                     "environment": {}, "steps": []}

    def left(self) -> float:
        return self.plan.budget_s - (time.monotonic() - self.started)

    def add(self, step: dict) -> None:
        self.data["steps"].append(step)
        self.write()

    def statuses(self) -> dict:
        counts: dict[str, int] = {}
        for step in self.data["steps"]:
            counts[step["status"]] = counts.get(step["status"], 0) + 1
        return counts

    def failed(self) -> bool:
        return any(s["status"] in ("fail", "error") for s in self.data["steps"])

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.data["statuses"] = self.statuses()
        self.out.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.out / "gpu-check.json", json.dumps(self.data, indent=2, default=_json))
        _atomic_write(self.out / "gpu-check.md", markdown(self.data))


def _json(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt(value, digits: int = 3) -> str:
    """Numbers for tables: None -> '—', floats to ``digits`` significant figures."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf"
        return f"{value:.{digits}g}"
    return str(value)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(data: dict) -> str:
    env = data.get("environment", {})
    kind = "DRY RUN (CPU only: no figure below is a GPU figure)" if data["dry_run"] else "GPU run"
    lines = [f"# {data['title']} — {kind}", "",
             f"Started {data['started_utc']}, {data['elapsed_s']} s of a {data['budget_s']:.0f} s "
             f"budget. Steps: " + ", ".join(f"{n} {k}" for k, n in data.get("statuses", {}).items()),
             ""]
    if env:
        lines += ["## Environment", "", md_table(["what", "value"], [[k, v] for k, v in env.items()]),
                  ""]
    for step in data["steps"]:
        lines += [f"## {step['title']}: {step['status'].upper()} ({step['seconds']} s)", "",
                  step.get("summary", ""), ""]
        for table in step.get("tables", []):
            if table.get("caption"):
                lines += [table["caption"], ""]
            lines += [md_table(table["header"], table["rows"]), ""]
        for note in step.get("notes", []):
            lines += [f"- {note}"]
        if step.get("notes"):
            lines.append("")
        if step.get("error"):
            lines += ["```", step["error"].rstrip()[-3000:], "```", ""]
    return "\n".join(lines)


def run_step(report: Report, name: str, title: str, fn, *args) -> dict:
    print(f"\n== {title}", flush=True)
    t0 = time.monotonic()
    try:
        step = fn(*args)
    except Exception as exc:  # noqa: BLE001 - a failing step must not stop the others
        step = {"status": "error", "summary": f"{type(exc).__name__}: {exc}",
                "error": traceback.format_exc()}
    step = {"name": name, "title": title, "status": step.pop("status"),
            "seconds": round(time.monotonic() - t0, 1), **step}
    assert step["status"] in STATUS_ORDER, step["status"]
    report.add(step)
    print(f"   {step['status'].upper()} ({step['seconds']} s): {step.get('summary', '')}",
          flush=True)
    return step


def skipped(reason: str) -> dict:
    return {"status": "skip", "summary": reason}


# ---------------------------------------------------------------------------------------------
# Subprocesses: logged to OUT/logs, killed with their children at their timeout.

def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "training")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def run_command(cmd: list, log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd`` with output to ``log``; returns rc, seconds, timed_out and the log's tail."""
    cmd = [str(c) for c in cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timed_out = False
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                env=env or child_env(), start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    tail = log.read_text(errors="replace").splitlines()[-25:]
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.monotonic() - t0, 1),
            "timed_out": timed_out, "log": str(log), "tail": "\n".join(tail)}


# The training verbs are entry points of the installed package; a checkout that is only on
# PYTHONPATH (the GPU machine) has no entry points, so this script adds them itself.
TRAINING_VERBS = ("stargan_train.commands.train", "stargan_train.commands.eval")


def with_training_verbs():
    """stargan_rt.cli, its verb list completed with the training verbs when not installed."""
    import importlib

    from stargan_rt import cli as core

    discovered = core.command_modules
    if getattr(discovered, "with_training", False):
        return core

    def modules():
        found = discovered()
        names = {m.__name__ for m in found}
        return found + [importlib.import_module(n) for n in TRAINING_VERBS if n not in names]

    modules.with_training = True
    core.command_modules = modules
    return core


def cli(*args) -> list:
    """`stargan-rt ARGS` from this checkout (through this script's --cli)."""
    return [sys.executable, str(Path(__file__).resolve()), "--cli", *args]


# ---------------------------------------------------------------------------------------------
# 1. Environment

def _version(module: str):
    try:
        mod = __import__(module)
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    return getattr(mod, "__version__", "?"), None


def _tool_version(tool: str, args: list[str]) -> str | None:
    path = shutil.which(tool)
    if path is None:
        return None
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{path} (no version)"
    lines = [line for line in out.splitlines() if line.strip()]
    return lines[-1].strip() if tool == "nvcc" else (lines[0].strip() if lines else path)


def find_nvcc() -> str | None:
    for candidate in (shutil.which("nvcc"), os.environ.get("CUDACXX"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def environment(ctx) -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpus": os.cpu_count(), "numpy": np.__version__}
    for module in ("torch", "cv2", "safetensors", "cupy", "tensorrt"):
        version, why = _version(module)
        env[module] = version if version else f"absent ({why})"
    try:
        import torch
        env["torch_cuda"] = torch.version.cuda
        env["cuda_devices"] = torch.cuda.device_count()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, " \
                         f"sm_{props.major}{props.minor}, {props.multi_processor_count} SMs"
            env["tf32_conv"] = torch.backends.cudnn.allow_tf32
            env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    except ImportError:
        env["cuda_devices"] = 0
    env["nvcc"] = _tool_version("nvcc", ["--version"]) or (find_nvcc() or "absent")
    env["cmake"] = _tool_version("cmake", ["--version"]) or "absent"
    env["nvidia-smi"] = _tool_version("nvidia-smi", ["--query-gpu=name,driver_version",
                                                     "--format=csv,noheader"]) or "absent"
    try:
        env["git_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = "unknown"
    return env


# ---------------------------------------------------------------------------------------------
# 2. Native build

def cuda_architecture(dry: bool) -> str:
    """The GPU's own architecture (one target: fast to compile); 90 in a dry run."""
    if not dry:
        import torch
        major, minor = torch.cuda.get_device_capability(0)
        return f"{major}{minor}"
    return os.environ.get("GPU_CHECK_CUDA_ARCH", "90")


def step_build(ctx) -> dict:
    build = ctx.out / "build"
    cmake = shutil.which("cmake")
    nvcc = find_nvcc()
    if cmake is None or nvcc is None:
        return {"status": "error", "summary": "cmake or nvcc not found: the kernel cannot be "
                "built, so the kernel check and timing cannot run"}
    arch = cuda_architecture(ctx.plan.dry)
    configure = [cmake, "-S", ROOT, "-B", build, f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
                 "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    if os.environ.get("TensorRT_ROOT"):
        configure.append(f"-DTensorRT_ROOT={os.environ['TensorRT_ROOT']}")
    logs = ctx.out / "logs"
    ctx.build_dir = build
    build.mkdir(parents=True, exist_ok=True)
    first = run_command(configure, logs / "cmake-configure.log", timeout=min(120, ctx.report.left()))
    if first["rc"] != 0:
        # An old CMake (< 3.24) must not cost the kernel steps: build the library with nvcc.
        fallback = run_command([nvcc, "-O3", "-shared", "-Xcompiler", "-fPIC", f"-arch=sm_{arch}",
                                "-o", build / "libstargan_adain.so", ROOT / "engines/adain/adain.cu"],
                               logs / "nvcc-fallback.log", timeout=min(180, ctx.report.left()))
        return {"status": "fail", "error": first["tail"], "commands": [first, fallback],
                "summary": f"cmake configure failed (rc {first['rc']}); the kernel library was "
                           f"built with nvcc directly instead (rc {fallback['rc']}) for the "
                           "kernel steps"}
    jobs = str(max(2, os.cpu_count() or 2))
    second = run_command([cmake, "--build", build, "-j", jobs], logs / "cmake-build.log",
                         timeout=min(240, ctx.report.left()))
    configure_log = Path(first["log"]).read_text()
    built = {name: (build / name).is_file() for name in
             ("libstargan_adain.so", "adain_check", "libstargan_rt_trt_plugins.so")}
    notes = []
    if "skipping the AdaIN plugin" in configure_log:
        notes.append("skipped the TensorRT plugin (libstargan_rt_trt_plugins.so): TensorRT "
                     "headers not found (set TensorRT_ROOT)")
    elif not built["libstargan_rt_trt_plugins.so"]:
        notes.append("the TensorRT plugin was configured but not built: see logs/cmake-build.log")
    ok = second["rc"] == 0 and built["libstargan_adain.so"] and built["adain_check"]
    for note in notes:
        print("   " + note)
    return {"status": "pass" if ok else "fail",
            "summary": f"sm_{arch}: " + ", ".join(f"{k} {'built' if v else 'not built'}"
                                                  for k, v in built.items()),
            "built": built, "cuda_architecture": arch, "notes": notes,
            "commands": [first, second]}


# ---------------------------------------------------------------------------------------------
# 3. AdaIN kernel: binding, reference, shapes, check

class AdainLibrary:
    """ctypes binding of engines/adain/adain.h (both entry points take device pointers)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lib = ctypes.CDLL(str(self.path))
        self.functions = {}
        for dtype, name in (("f32", "stargan_adain_forward_f32"),
                            ("f16", "stargan_adain_forward_f16")):
            fn = getattr(self.lib, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 3 + [
                ctypes.c_float, ctypes.c_int, ctypes.c_float, ctypes.c_void_p]
            self.functions[dtype] = fn

    def forward(self, dtype: str, x: int, gamma: int, beta: int, y: int, n: int, c: int, hw: int,
                activation: bool, stream: int = 0, epsilon: float = EPSILON,
                negative_slope: float = NEGATIVE_SLOPE) -> int:
        return self.functions[dtype](x, gamma, beta, y, n, c, hw, epsilon, int(activation),
                                     negative_slope, stream)

    def probe(self) -> dict:
        """Call both entry points with an empty shape: the kernel refuses it before any CUDA
        call (cudaErrorInvalidValue), so this checks the binding without a GPU."""
        return {dtype: self.forward(dtype, 0, 0, 0, 0, 0, 1, 1, True) for dtype in ("f32", "f16")}


def adain_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, activation: bool,
                    epsilon: float = EPSILON, negative_slope: float = NEGATIVE_SLOPE) -> np.ndarray:
    """float64 AdaIN (biased variance, as InstanceNorm) + optional LeakyReLU, from x's values."""
    n, c = x.shape[:2]
    flat = x.astype(np.float64).reshape(n, c, -1)
    mean = flat.mean(axis=2, keepdims=True)
    centred = flat - mean
    var = np.mean(centred * centred, axis=2, keepdims=True)
    y = (1.0 + gamma.astype(np.float64)[..., None]) * centred / np.sqrt(var + epsilon) \
        + beta.astype(np.float64)[..., None]
    if activation:
        y = np.where(y < 0, y * negative_slope, y)
    return y.reshape(x.shape)


def adain_float32_direct(x, gamma, beta, activation, epsilon=EPSILON,
                         negative_slope=NEGATIVE_SLOPE) -> np.ndarray:
    """The dry run's stand-in for the kernel: the same formula in float32 numpy (statistics
    accumulated in float32 from the I/O dtype, result cast back to it)."""
    dtype = x.dtype
    n, c = x.shape[:2]
    flat = x.astype(np.float32).reshape(n, c, -1)
    mean = flat.mean(axis=2, keepdims=True, dtype=np.float32)
    centred = flat - mean
    var = np.mean(centred * centred, axis=2, keepdims=True, dtype=np.float32)
    scale = (np.float32(1) + gamma.astype(np.float32)[..., None]) / np.sqrt(var + np.float32(epsilon))
    y = centred * scale + beta.astype(np.float32)[..., None]
    if activation:
        y = np.where(y < 0, y * np.float32(negative_slope), y)
    return y.reshape(x.shape).astype(dtype)


def relative_error(y: np.ndarray, reference: np.ndarray) -> float:
    """max |y - ref| / max |ref| (inf when y has a NaN or an infinity)."""
    y64 = y.astype(np.float64)
    if not np.isfinite(y64).all():
        return float("inf")
    peak = float(np.abs(reference).max()) if reference.size else 0.0
    return float(np.abs(y64 - reference).max()) / max(peak, 1e-30)


def v2_decoder_shapes(image_size: int = 256, w_hpf: float = 1.0, batch: int = 1) -> list[tuple]:
    """(N, C, H, W) of every AdaIN input in the official v2 generator, in call order, unique;
    found by running the model on PyTorch's meta device (no memory, no compute)."""
    import torch

    from stargan_rt.models.v2 import AdaIN, GeneratorV2

    with torch.device("meta"):
        generator = GeneratorV2(image_size, w_hpf=w_hpf)
        x = torch.empty(batch, 3, image_size, image_size)
        style = torch.empty(batch, 64)
        masks = (torch.empty(batch, 1, image_size, image_size),) * 2 if w_hpf > 0 else None
    shapes: list[tuple] = []

    def record(module, inputs):
        shape = tuple(inputs[0].shape)
        if shape not in shapes:
            shapes.append(shape)

    hooks = [m.register_forward_pre_hook(record) for m in generator.modules()
             if isinstance(m, AdaIN)]
    with torch.no_grad():
        generator(x, style, masks)
    for hook in hooks:
        hook.remove()
    return shapes


# Shapes no network makes but a kernel must survive: single pixels, fewer elements than the
# block's 256 threads, non-multiples of the block and warp, one plane, many planes, large H x W.
AWKWARD_SHAPES = [(1, 1, 1, 1), (2, 3, 1, 1), (1, 1, 1, 7), (1, 5, 3, 3), (3, 5, 17, 13),
                  (1, 1, 1, 255), (1, 1, 1, 257), (2, 7, 33, 31), (1, 3, 255, 257),
                  (8, 512, 1, 1), (1, 2, 1000, 1000), (1, 1, 2048, 2048)]


def kernel_shapes(random_cases: int, seed: int = 13) -> list[tuple]:
    shapes = list(AWKWARD_SHAPES)
    shapes += [s for s in v2_decoder_shapes(256, 1.0, 1) if s not in shapes]
    shapes += [s for s in v2_decoder_shapes(256, 1.0, 2) if s not in shapes]
    rng = np.random.default_rng(seed)
    wanted = len(shapes) + random_cases
    while len(shapes) < wanted:
        n, c = int(rng.integers(1, 9)), int(rng.integers(1, 97))
        h, w = (int(v) for v in rng.integers(1, 301, size=2))
        if n * c * h * w <= 4_000_000 and (n, c, h, w) not in shapes:
            shapes.append((n, c, h, w))
    return shapes


def random_case(shape: tuple, dtype: str, seed: int) -> dict:
    """Fresh inputs: per-channel means of up to 3 standard deviations, scales from 0.1 to 10,
    gamma and beta ~ N(0, 0.3^2); activation on in 3 cases of 4."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    np_dtype = np.float32 if dtype == "f32" else np.float16
    scale = 10.0 ** rng.uniform(-1, 1)
    means = scale * rng.uniform(-3, 3, size=(n, c, 1, 1))
    x = (means + scale * rng.standard_normal(shape)).astype(np_dtype)
    gamma = (0.3 * rng.standard_normal((n, c))).astype(np_dtype)
    beta = (0.3 * rng.standard_normal((n, c))).astype(np_dtype)
    return {"x": x, "gamma": gamma, "beta": beta, "activation": bool(rng.random() < 0.75)}


class CudaRunner:
    """Runs the kernel library on PyTorch's CUDA buffers; the output is poisoned (NaN) first."""

    def __init__(self, library: AdainLibrary):
        import torch

        self.torch = torch
        self.library = library

    def __call__(self, dtype: str, x, gamma, beta, activation) -> np.ndarray:
        torch = self.torch
        dx, dg, db = (torch.from_numpy(a).cuda() for a in (x, gamma, beta))
        dy = torch.full_like(dx, float("nan"))
        n, c = x.shape[:2]
        stream = torch.cuda.current_stream().cuda_stream
        err = self.library.forward(dtype, dx.data_ptr(), dg.data_ptr(), db.data_ptr(),
                                   dy.data_ptr(), n, c, x[0, 0].size, activation, stream)
        if err != 0:
            raise RuntimeError(f"stargan_adain_forward_{dtype} returned CUDA error {err}")
        torch.cuda.synchronize()
        return dy.cpu().numpy()


def check_kernel_cases(runner, shapes: list[tuple], seed: int = 0) -> list[dict]:
    """Every shape in f32 and f16 against the float64 reference; one row per case."""
    rows = []
    for index, shape in enumerate(shapes):
        for dtype, tolerance in (("f32", F32_TOLERANCE), ("f16", F16_TOLERANCE)):
            case = random_case(shape, dtype, seed * 100_003 + index * 2 + (dtype == "f16"))
            reference = adain_reference(case["x"], case["gamma"], case["beta"], case["activation"])
            y = runner(dtype, case["x"], case["gamma"], case["beta"], case["activation"])
            nan = bool(np.isnan(y).any())
            error = relative_error(y, reference)
            rows.append({"shape": list(shape), "dtype": dtype, "activation": case["activation"],
                         "relative_error": error, "nan": nan, "tolerance": tolerance,
                         "ok": (not nan) and y.shape == reference.shape and error < tolerance})
    return rows


def kernel_table(rows: list[dict]) -> dict:
    return {"caption": "Relative error = max |kernel - float64 reference| / max |reference|.",
            "header": ["N x C x H x W", "I/O", "LeakyReLU", "relative error", "tolerance",
                       "NaN", "ok"],
            "rows": [["x".join(map(str, r["shape"])), r["dtype"], r["activation"],
                      r["relative_error"], r["tolerance"], r["nan"], r["ok"]] for r in rows]}


def load_library(ctx) -> AdainLibrary:
    path = ctx.build_dir / "libstargan_adain.so"
    if not path.is_file():
        raise RuntimeError(f"{path} was not built (see the native build step)")
    return AdainLibrary(path)


def step_kernel_check(ctx) -> dict:
    library = load_library(ctx)
    probe = library.probe()
    probe_ok = all(code == CUDA_ERROR_INVALID_VALUE for code in probe.values())
    shapes = kernel_shapes(ctx.plan.kernel_random_cases)
    ctx.kernel_shapes = shapes
    if ctx.plan.dry:
        # The comparison machinery on a float32 stand-in, on the small shapes (the CPU's time).
        small = [s for s in shapes if np.prod(s) <= 200_000][:12]
        rows = check_kernel_cases(lambda d, x, g, b, a: adain_float32_direct(x, g, b, a), small)
        ok = probe_ok and all(r["ok"] for r in rows)
        return {"status": "dry-run" if ok else "fail",
                "summary": f"binding probe {probe} (expected {CUDA_ERROR_INVALID_VALUE}: refused "
                           f"before any CUDA call); float64 reference vs a float32 numpy stand-in "
                           f"on {len(small)} of the {len(shapes)} shapes: "
                           f"{sum(r['ok'] for r in rows)}/{len(rows)} within tolerance. "
                           "The kernel itself was not run (no GPU).",
                "shapes": [list(s) for s in shapes], "probe": probe, "cases": rows,
                "tables": [kernel_table(rows)]}
    rows = check_kernel_cases(CudaRunner(library), shapes)
    failures = [r for r in rows if not r["ok"]]
    # The C++ check beside the kernel (its own float64 CPU reference, f32, one shape) as well.
    native = None
    if (ctx.build_dir / "adain_check").is_file():
        native = run_command([ctx.build_dir / "adain_check", 2, 256, 64, 64],
                             ctx.out / "logs" / "adain_check.log", timeout=60)
    worst = {d: max(r["relative_error"] for r in rows if r["dtype"] == d) for d in ("f32", "f16")}
    native_ok = native is None or native["rc"] == 0
    return {"status": "pass" if probe_ok and not failures and native_ok else "fail",
            "summary": f"{len(rows) - len(failures)}/{len(rows)} cases within tolerance "
                       f"({len(shapes)} shapes x f32/f16); worst relative error f32 "
                       f"{worst['f32']:.3g} (< {F32_TOLERANCE}), f16 {worst['f16']:.3g} "
                       f"(< {F16_TOLERANCE}); NaN in {sum(r['nan'] for r in rows)} cases",
            "probe": probe, "worst": worst, "cases": rows, "adain_check": native,
            "notes": [f"build/adain_check 2 256 64 64: rc {native['rc']}: "
                      f"{native['tail'].splitlines()[-1]}" if native else
                      "build/adain_check was not built"],
            "tables": [kernel_table(rows)]}


# ---------------------------------------------------------------------------------------------
# 4. Kernel timing

def torch_decomposed(x, gamma, beta):
    """What the v2 generator runs for AdaIN + activation: InstanceNorm2d (affine=False),
    (1 + gamma) * x + beta, LeakyReLU(0.2)."""
    import torch.nn.functional as F

    normed = F.instance_norm(x, eps=EPSILON)
    return F.leaky_relu((1 + gamma[:, :, None, None]) * normed + beta[:, :, None, None],
                        NEGATIVE_SLOPE)


class CudaTimer:
    """Median time of one call, in microseconds: calls replayed from a CUDA graph when the
    capture works (GPU time only, no Python or launch overhead), else a stream loop."""

    def __init__(self, trials: int = 5, target_ms: float = 3.0):
        import torch

        self.torch = torch
        self.trials = trials
        self.target_ms = target_ms

    def _loop_us(self, fn, reps: int) -> float:
        torch = self.torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / reps

    def __call__(self, fn) -> tuple[float, str]:
        torch = self.torch
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        estimate = self._loop_us(fn, 10)
        reps = int(min(2000, max(20, self.target_ms * 1e3 / max(estimate, 1e-3))))
        try:
            graph = torch.cuda.CUDAGraph()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()  # warm-up on the capture stream
                torch.cuda.synchronize()
                with torch.cuda.graph(graph, stream=stream):
                    for _ in range(reps):
                        fn()
            torch.cuda.synchronize()
            times = [self._loop_us(graph.replay, 1) / reps for _ in range(self.trials)]
            method = "cuda-graph"
        except Exception:  # noqa: BLE001 - capture unsupported: fall back to a plain loop
            torch.cuda.synchronize()
            times = [self._loop_us(fn, reps) for _ in range(self.trials)]
            method = "stream-loop"
        return statistics.median(times), method


class CpuTimer:
    """The dry run's timer: wall-clock median on the CPU (nothing to do with GPU figures)."""

    def __init__(self, reps: int = 3):
        self.reps = reps

    def __call__(self, fn) -> tuple[float, str]:
        fn()
        times = []
        for _ in range(self.reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(times), "cpu-wall"


def timing_row(shape, dtype, kernel_us, copy_us, torch_us, method) -> dict:
    elements = int(np.prod(shape))
    nbytes = 2 * elements * (4 if dtype == "f32" else 2)  # x read once, y written once
    row = {"shape": list(shape), "dtype": dtype, "method": method, "bytes_moved": nbytes,
           "kernel_us": kernel_us, "copy_us": copy_us, "torch_us": torch_us,
           "copy_gbps": nbytes / (copy_us * 1e-6) / 1e9 if copy_us else None,
           "kernel_gbps": nbytes / (kernel_us * 1e-6) / 1e9 if kernel_us else None,
           "torch_gbps": nbytes / (torch_us * 1e-6) / 1e9 if torch_us else None}
    row["fraction_of_copy"] = copy_us / kernel_us if kernel_us and copy_us else None
    row["speedup_vs_torch"] = torch_us / kernel_us if kernel_us and torch_us else None
    row["goals_met"] = (None if kernel_us is None else
                        bool(row["fraction_of_copy"] >= COPY_FRACTION_GOAL
                             and row["speedup_vs_torch"] >= TORCH_SPEEDUP_GOAL))
    return row


def timing_table(rows: list[dict]) -> dict:
    return {"caption": f"Per call, median; GB/s = (bytes of x + bytes of y) / time. Goals: "
                       f"kernel >= {COPY_FRACTION_GOAL:.0%} of copy bandwidth and >= "
                       f"{TORCH_SPEEDUP_GOAL}x PyTorch's decomposed op.",
            "header": ["N x C x H x W", "I/O", "kernel us", "kernel GB/s", "copy us", "copy GB/s",
                       "fraction of copy", "PyTorch us", "vs PyTorch", "goals met", "timing"],
            "rows": [["x".join(map(str, r["shape"])), r["dtype"], r["kernel_us"], r["kernel_gbps"],
                      r["copy_us"], r["copy_gbps"], r["fraction_of_copy"], r["torch_us"],
                      r["speedup_vs_torch"], r["goals_met"], r["method"]] for r in rows]}


def timing_shapes(batches) -> list[tuple]:
    shapes: list[tuple] = []
    for batch in batches:
        shapes += [s for s in v2_decoder_shapes(256, 1.0, batch) if s not in shapes]
    return shapes


def time_shape(timer, shape: tuple, dtype: str, library: AdainLibrary | None,
               device: str) -> dict:
    """One timing row: the kernel (when ``library`` is given), a copy of the same bytes and
    PyTorch's decomposed op, on fresh buffers of ``shape``."""
    import torch

    tdtype = torch.float32 if dtype == "f32" else torch.float16
    x = torch.randn(shape, device=device, dtype=tdtype)
    g = (0.3 * torch.randn(shape[:2], device=device)).to(tdtype)
    b = (0.3 * torch.randn(shape[:2], device=device)).to(tdtype)
    y = torch.empty_like(x)
    n, c, h, w = shape

    def kernel():
        err = library.forward(dtype, x.data_ptr(), g.data_ptr(), b.data_ptr(), y.data_ptr(),
                              n, c, h * w, True, torch.cuda.current_stream().cuda_stream)
        if err != 0:
            raise RuntimeError(f"kernel launch returned CUDA error {err}")

    kernel_us, method = timer(kernel) if library is not None else (None, None)
    copy_us, copy_method = timer(lambda: y.copy_(x))
    torch_us, _ = timer(lambda: torch_decomposed(x, g, b))
    return timing_row(shape, dtype, kernel_us, copy_us, torch_us, method or copy_method)


def step_kernel_timing(ctx) -> dict:
    shapes = timing_shapes(ctx.plan.timing_batches)
    library = load_library(ctx)
    if ctx.plan.dry:
        rows = [time_shape(CpuTimer(reps=2), shape, "f32", None, "cpu") for shape in shapes[:3]]
        return {"status": "dry-run",
                "summary": f"{len(shapes)} v2 decoder shapes (batches {ctx.plan.timing_batches}); "
                           f"copy and PyTorch's decomposed op timed on the CPU for the first "
                           f"{len(rows)} (table format only); kernel not run (no GPU; library "
                           f"{library.path.name} loaded)",
                "shapes": [list(s) for s in shapes], "rows": rows, "tables": [timing_table(rows)]}
    timer = CudaTimer()
    rows = [time_shape(timer, shape, dtype, library, "cuda")
            for shape in shapes for dtype in ("f32", "f16")]
    met = sum(bool(r["goals_met"]) for r in rows)
    return {"status": "pass",
            "summary": f"{len(rows)} timings ({len(shapes)} v2 decoder shapes x f32/f16); both "
                       f"goals met in {met}/{len(rows)} (goals are reported, not enforced)",
            "rows": rows, "tables": [timing_table(rows)],
            "notes": ["the same buffers are reused between calls, so shapes that fit in L2 are "
                      "timed from L2 for the kernel, the copy and PyTorch alike"]}


# ---------------------------------------------------------------------------------------------
# 5. Reference translator on CUDA vs the CPU fp32 reference

def make_v1_bundle(out: Path, size: int, widths: dict) -> Path:
    import torch

    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.v1 import GeneratorV1

    torch.manual_seed(1)
    config = dict(widths, c_dim=len(V1_ATTRS))
    manifest = Manifest(arch="v1", image_size=size, name=f"gpu-check-v1-{size}",
                        domains=[Domain(n, default_aliases(n)) for n in V1_ATTRS], config=config)
    generator = GeneratorV1(config["conv_dim"], config["c_dim"], config["repeat_num"])
    write_bundle(out, manifest, {"generator": generator.state_dict()})
    return out


def make_v2_bundle(out: Path, size: int, widths: dict, w_hpf: float = 1) -> Path:
    """A v2 bundle with random weights; with w_hpf > 0 it has a FAN (its batch-norm statistics
    randomised too, so that its masks are not constant)."""
    import torch

    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.fan import FAN
    from stargan_rt.models.v2 import GeneratorV2, MappingNetwork, StyleEncoder

    torch.manual_seed(2)
    domains = ("female", "male")
    config = dict(widths, w_hpf=w_hpf)
    manifest = Manifest(arch="v2", image_size=size, name=f"gpu-check-v2-{size}",
                        domains=[Domain(n, default_aliases(n)) for n in domains], config=config)
    nets = {"generator": GeneratorV2(size, config["style_dim"], config["max_conv_dim"], w_hpf,
                                     config["dim_in"]),
            "mapping_network": MappingNetwork(config["latent_dim"], config["style_dim"],
                                              len(domains), config["hidden_dim"]),
            "style_encoder": StyleEncoder(size, config["style_dim"], len(domains),
                                          config["max_conv_dim"], config["dim_in"])}
    if w_hpf > 0:
        fan = FAN()
        with torch.no_grad():
            for module in fan.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
        nets["fan"] = fan
    write_bundle(out, manifest, {k: v.state_dict() for k, v in nets.items()})
    return out


def v2_bundle(ctx) -> Path:
    plan = ctx.plan
    return make_v2_bundle(ctx.out / "models" / "v2", plan.v2_size, plan.v2_widths, plan.v2_w_hpf)


def faces(size: int, count: int, seed: int = 4242) -> np.ndarray:
    from stargan_rt.synth import make_face

    return np.stack([make_face(seed, i, size)[1] for i in range(count)])


def _set_target(translator) -> None:
    if translator.arch == "v1":
        translator.set_labels([0, 1, 0, 1, 0])
    else:
        translator.set_domain(translator.domains[-1])
        translator.set_style(seed=3)


def compare_outputs(reference, test) -> dict:
    """Raw model outputs (float, [-1, 1]) and the uint8 frames a user sees."""
    from stargan_rt.imaging import unit_nchw_to_bgr
    from stargan_rt.parity import psnr

    ref_u8, test_u8 = unit_nchw_to_bgr(reference), unit_nchw_to_bgr(test)
    return {"psnr_db": psnr(ref_u8, test_u8, 255.0),
            "max_error_levels": int(np.abs(ref_u8.astype(int) - test_u8.astype(int)).max()),
            "max_float_error": float(np.abs(reference.astype(np.float64) - test).max())}


def time_translate(translator, x, reps: int, device: str, autocast) -> float:
    """Median ms per call of translate_float on a batch (inputs already on the device)."""
    import torch

    def once():
        with autocast():
            translator.translate_float(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    once()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def step_reference(ctx) -> dict:
    import contextlib

    import torch

    from stargan_rt.imaging import bgr_to_unit_nchw
    from stargan_rt.reference import TorchTranslator

    plan = ctx.plan
    device = "cpu" if plan.dry else "cuda"
    # Reduced precision: fp16 autocast on CUDA; the dry run's CPU stands in with bf16 autocast.
    low = ("bf16", torch.bfloat16) if plan.dry else ("fp16", torch.float16)
    models = {"v1": make_v1_bundle(ctx.out / "models" / "v1", plan.v1_size, plan.v1_widths),
              "v2": v2_bundle(ctx)}
    ctx.models = models
    rows, results = [], {}
    for arch, path in models.items():
        cpu = TorchTranslator(path, device="cpu")
        _set_target(cpu)
        size = cpu.image_size
        x = torch.from_numpy(bgr_to_unit_nchw(faces(size, plan.translate_batch)))
        t0 = time.perf_counter()
        with torch.no_grad():
            reference = cpu.translate_float(x).numpy()
        cpu_ms = (time.perf_counter() - t0) * 1e3
        dev = TorchTranslator(path, device=device)
        _set_target(dev)
        runs = {"fp32": contextlib.nullcontext,
                low[0]: lambda: torch.autocast(device, dtype=low[1])}
        for precision, autocast in runs.items():
            with torch.no_grad(), autocast():
                out = dev.translate_float(x.to(device)).float().cpu().numpy()
            timings = {}
            for batch in plan.time_batches:
                xb = x[:1].expand(batch, -1, -1, -1).contiguous().to(device)
                with torch.no_grad():
                    timings[batch] = time_translate(dev, xb, plan.time_reps, device, autocast)
            result = {**compare_outputs(reference, out), "ms_per_batch": timings,
                      "cpu_fp32_ms_batch": cpu_ms, "batch": plan.translate_batch}
            results[f"{arch}-{precision}"] = result
            rows.append([f"{arch} {size} px", f"{device} {precision}", result["psnr_db"],
                         result["max_error_levels"], result["max_float_error"],
                         *[timings.get(b) for b in plan.time_batches],
                         cpu_ms / plan.translate_batch])
    header = ["model", "run", "PSNR dB (uint8)", "max err (levels)", "max float err",
              *[f"ms, batch {b}" for b in plan.time_batches], "CPU fp32 ms/image"]
    table = {"caption": f"Against the CPU fp32 reference on {plan.translate_batch} synthetic "
                        "faces (random weights). ms: median per generator call (v2: with its "
                        "FAN masks; the style is computed once).", "header": header, "rows": rows}
    summary = ", ".join(f"{k} {v['psnr_db']:.1f} dB / {v['max_error_levels']} levels"
                        for k, v in results.items())
    notes = ["random weights: the figures measure numerics and speed, not image quality"]
    if not plan.dry:
        notes.append(f"TF32 convolutions: {torch.backends.cudnn.allow_tf32} (PyTorch's default)")
        return {"status": "pass", "summary": summary, "results": results, "tables": [table],
                "notes": notes}
    return {"status": "dry-run", "summary": f"small models on the CPU (v1 {plan.v1_size} px, v2 "
            f"{plan.v2_size} px w_hpf {plan.v2_w_hpf}), bf16 autocast standing in for fp16: "
            + summary,
            "results": results, "tables": [table], "notes": notes}


# ---------------------------------------------------------------------------------------------
# Synthetic data (started in the background at the beginning; the GPU steps run meanwhile)

class DataJobs:
    def __init__(self, ctx):
        self.ctx = ctx
        self.jobs: dict[str, tuple[subprocess.Popen, Path, Path]] = {}

    def start(self) -> None:
        plan, data = self.ctx.plan, self.ctx.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        workers = str(plan.synth_workers)
        specs = {
            "v1-train": ["--layout", "celeba", "--image-size", plan.train_size,
                         "--count", plan.train_count, "--seed", 0],
            "v1-test": ["--layout", "celeba", "--image-size", plan.train_size,
                        "--count", plan.test_count, "--seed", 97],
            "v2-train": ["--layout", "folders", "--image-size", plan.v2_train_size,
                         "--count", plan.v2_train_count, "--seed", 5],
        }
        for name, args in specs.items():
            log = self.ctx.out / "logs" / f"data-{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [str(c) for c in cli("data", "synth", data / name, *args, "--workers", workers)]
            handle = open(log, "w")
            handle.write("$ " + " ".join(cmd) + "\n")
            handle.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                    env=child_env(), start_new_session=True)
            handle.close()
            self.jobs[name] = (proc, data / name, log)

    def wait(self, name: str, timeout: float) -> Path:
        proc, path, log = self.jobs[name]
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"data synth {name} did not finish in time (see {log})")
        if rc != 0:
            raise RuntimeError(f"data synth {name} failed (rc {rc}): "
                               + log.read_text(errors="replace")[-1500:])
        return path

    def stop(self) -> None:
        for proc, _, _ in self.jobs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ---------------------------------------------------------------------------------------------
# 6.-8. Training and eval

def v1_train_command(data: Path, run: Path, plan: Plan, minutes: float, device: str) -> list:
    """v1 at the paper's widths with the tiny preset's recipe (single-edit targets, DiffAugment
    translation, EMA generator, auxiliary classifier), bf16 autocast; time-limited, with the
    learning-rate decay following the time (second half of the budget)."""
    widths = plan.v1_widths
    cmd = cli("train", "v1", "--data", data, "--out", run, "--preset", "tiny",
              "--image-size", plan.train_size, "--attrs", ",".join(V1_ATTRS),
              "--conv-dim", widths["conv_dim"], "--repeat-num", widths["repeat_num"],
              "--d-conv-dim", widths["d_conv_dim"], "--d-repeat-num", widths["d_repeat_num"],
              "--bf16", "--device", device, "--quiet", "--json", "--sample-every", 0)
    if plan.dry:
        return cmd + ["--iters", 3, "--batch", 4, "--ckpt-every", 3, "--threads", 1,
                      "--max-minutes", 0]
    return cmd + ["--batch", 16, "--iters", 200_000, "--decay-iters", 100_000,
                  "--ckpt-every", 2000, "--threads", 0, "--max-minutes", f"{minutes:.2f}"]


def v2_train_command(data: Path, run: Path, plan: Plan, fan: Path, device: str) -> list:
    """v2 in the official configuration (paper preset) at 256 px with w_hpf 1 and the random
    FAN of the reference step; a few iterations. The dry run: a small model, w_hpf 0."""
    cmd = cli("train", "v2", "--data", data, "--out", run, "--preset", "paper",
              "--image-size", plan.v2_train_size, "--w-hpf", plan.v2_w_hpf,
              "--iters", plan.v2_iters, "--ckpt-every", plan.v2_iters, "--sample-every", 0,
              "--device", device, "--quiet", "--json")
    if plan.v2_w_hpf > 0:
        cmd += ["--fan", fan]
    if plan.dry:
        return cmd + ["--batch", 2, "--threads", 1, "--dim-in", 16, "--max-conv-dim", 32,
                      "--style-dim", 16, "--latent-dim", 8, "--hidden-dim", 32]
    return cmd


def nccl_command(data: Path, run: Path, plan: Plan) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2,
            str(Path(__file__).resolve()), "--cli", "train", "v1", "--data", data, "--out", run,
            "--preset", "tiny", "--image-size", plan.train_size, "--attrs", ",".join(V1_ATTRS),
            "--iters", 20, "--batch", 16, "--ckpt-every", 20, "--sample-every", 0,
            "--quiet", "--json"]


def eval_command(bundle: Path, data: Path, test: Path, report: Path, plan: Plan) -> list:
    return cli("eval", "--model", bundle, "--data", data, "--test-data", test,
               "--max-images", plan.eval_images, "--classifier-seconds", plan.classifier_seconds,
               "--report", report, "--quiet")


def _json_tail(text: str):
    """The last JSON object a command printed (train --json prints its summary last)."""
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except ValueError:
        return None


def _command_step(result: dict, ok_summary: str) -> dict:
    if result["rc"] == 0:
        return {"status": "pass", "summary": ok_summary, "command": result}
    why = "timed out" if result["timed_out"] else f"rc {result['rc']}"
    return {"status": "fail", "summary": f"command {why}; see {result['log']}",
            "command": result, "error": result["tail"]}


def step_v2_train(ctx) -> dict:
    data = ctx.data.wait("v2-train", timeout=min(180, ctx.report.left()))
    device = "cpu" if ctx.plan.dry else "cuda"
    run = ctx.out / "runs" / "v2"
    fan = ctx.models.get("v2") or v2_bundle(ctx)
    result = run_command(v2_train_command(data, run, ctx.plan, fan, device),
                         ctx.out / "logs" / "train-v2.log", timeout=min(150, ctx.report.left()))
    what = ("a small v2 (w_hpf 0)" if ctx.plan.dry else "the official v2 configuration "
            "(w_hpf 1 + FAN)")
    step = _command_step(result, f"{ctx.plan.v2_iters} iterations of {what} at "
                         f"{ctx.plan.v2_train_size} px on {device}")
    step["train_summary"] = _json_tail(Path(result["log"]).read_text(errors="replace"))
    if step["status"] == "pass" and step["train_summary"]:
        s = step["train_summary"]
        step["summary"] += f": {s.get('iterations')} it in {s.get('seconds')} s"
    if ctx.plan.dry and step["status"] == "pass":
        step["status"] = "dry-run"
    return step


def step_nccl(ctx) -> dict:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        line = f"skipped the 2-process NCCL run: {count} GPU(s) on this machine"
        return {"status": "skip", "summary": line,
                "command": " ".join(map(str, nccl_command(Path("DATA"), Path("RUN"), ctx.plan)))}
    data = ctx.data.wait("v1-train", timeout=min(180, ctx.report.left()))
    result = run_command(nccl_command(data, ctx.out / "runs" / "nccl", ctx.plan),
                         ctx.out / "logs" / "train-nccl.log", timeout=min(150, ctx.report.left()))
    return _command_step(result, f"2 processes on {count} GPUs (nccl), 20 iterations")


def train_minutes(plan: Plan, left_s: float) -> float:
    """About TRAIN_MINUTES, less when the budget left (less what follows) is shorter."""
    return max(0.5, min(plan.train_minutes, (left_s - RESERVE_AFTER_TRAIN_S - 30) / 60))


def step_v1_train_eval(ctx) -> dict:
    plan = ctx.plan
    data = ctx.data.wait("v1-train", timeout=min(300, ctx.report.left()))
    test = ctx.data.wait("v1-test", timeout=min(60, ctx.report.left()))
    device = "cpu" if plan.dry else "cuda"
    run = ctx.out / "runs" / "v1"
    minutes = train_minutes(plan, ctx.report.left())
    train = run_command(v1_train_command(data, run, plan, minutes, device),
                        ctx.out / "logs" / "train-v1.log",
                        timeout=minutes * 60 + 90 if not plan.dry else 240)
    summary = _json_tail(Path(train["log"]).read_text(errors="replace"))
    step = {"command": train, "train_summary": summary, "minutes_budget": round(minutes, 2)}
    if train["rc"] != 0:
        return {**step, "status": "fail", "error": train["tail"],
                "summary": f"training failed (rc {train['rc']}); see {train['log']}"}
    bundle = run / "bundle"
    report_path = ctx.out / "eval-v1.json"
    evaluation = run_command(eval_command(bundle, data, test, report_path, plan),
                             ctx.out / "logs" / "eval-v1.log",
                             timeout=max(30, min(240, ctx.report.left() - 20)))
    step["eval_command"] = evaluation
    step["eval"] = json.loads(report_path.read_text()) if report_path.is_file() else None
    tables = [eval_table(step["eval"])] if step["eval"] else []
    trained = (f"trained {summary.get('iterations')} it in {summary.get('seconds')} s on "
               f"{device}" if summary else "trained")
    if evaluation["rc"] != 0 or step["eval"] is None:
        return {**step, "status": "fail", "error": evaluation["tail"], "tables": tables,
                "summary": f"{trained}; eval failed (rc {evaluation['rc']})"}
    status = "dry-run" if plan.dry else "pass"
    return {**step, "status": status, "tables": tables,
            "summary": f"{trained} ({plan.train_size} px, conv_dim {plan.v1_widths['conv_dim']}, "
                       f"{plan.v1_widths['repeat_num']} residual blocks, bf16); eval on "
                       f"{plan.eval_images} held-out faces: report copied under 'eval'"}


def eval_table(report: dict) -> dict:
    """Every scalar of eval's JSON report, flattened (whatever sections it has: fidelity too)."""
    rows = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float, str, bool)) or value is None:
            rows.append([prefix, value])

    walk("", report)
    return {"caption": "`stargan-rt eval` JSON report (every scalar; lists omitted here, kept "
                       "in the JSON report)", "header": ["key", "value"], "rows": rows[:200]}


# ---------------------------------------------------------------------------------------------
# 9. TensorRT

def tensorrt_commands(model: Path, cache: Path, report: Path) -> list[tuple[str, list]]:
    cmds = []
    for precision in ("fp32", "fp16", "int8"):
        cmds.append((f"build-{precision}", cli("build", "--model", model, "--target", "tensorrt",
                                               "--precision", precision, "--cache-dir", cache)))
    cmds.append(("parity", cli("parity", "--model", model, "--target", "tensorrt", "--precision",
                               "fp32", "fp16", "int8", "--cache-dir", cache, "--report", report)))
    return cmds


def step_tensorrt(ctx) -> dict:
    version, why = _version("tensorrt")
    if version is None:
        line = f"TensorRT absent ({why}): skipped build/parity --target tensorrt"
        return {"status": "skip", "summary": line}
    model = ctx.models.get("v2") or v2_bundle(ctx)
    plugin = ctx.build_dir / "libstargan_rt_trt_plugins.so"
    variants = {"without-plugin": {"STARGAN_RT_TRT_PLUGIN": ""}}
    if plugin.is_file():
        variants["with-plugin"] = {"STARGAN_RT_TRT_PLUGIN": str(plugin)}
    results, failed = {}, False
    for variant, extra in variants.items():
        for name, cmd in tensorrt_commands(model, ctx.out / f"trt-cache-{variant}",
                                           ctx.out / f"parity-trt-{variant}.json"):
            if ctx.report.left() < 20:
                results[f"{variant}/{name}"] = {"rc": None, "skipped": "out of time"}
                continue
            env = child_env(extra)
            if not extra["STARGAN_RT_TRT_PLUGIN"]:
                env.pop("STARGAN_RT_TRT_PLUGIN")
            result = run_command(cmd, ctx.out / "logs" / f"trt-{variant}-{name}.log",
                                 timeout=ctx.report.left() - 10, env=env)
            results[f"{variant}/{name}"] = result
            failed |= result["rc"] != 0
    notes = [] if plugin.is_file() else ["the plugin library was not built (no TensorRT "
                                         "headers): only the unfused graph"]
    rows = [[k, v.get("rc"), v.get("seconds"), v.get("skipped", "")] for k, v in results.items()]
    return {"status": "fail" if failed else "pass", "notes": notes,
            "summary": f"TensorRT {version}: {len(results)} commands",
            "results": results, "tables": [{"header": ["command", "rc", "s", "note"],
                                            "rows": rows}]}


# ---------------------------------------------------------------------------------------------

class Context:
    def __init__(self, out: Path, plan: Plan, report: Report):
        self.out, self.plan, self.report = out, plan, report
        self.build_dir = out / "build"
        self.models: dict = {}
        self.data = DataJobs(self)


STEPS = ("build", "kernel", "timing", "reference", "v2", "nccl", "v1", "tensorrt")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "out" / "gpu-check",
                        help="report directory (default out/gpu-check)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU only: every step without the GPU part (automatic without CUDA)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for the whole check (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--train-minutes", type=float, default=TRAIN_MINUTES,
                        help=f"v1 training time on the GPU (default {TRAIN_MINUTES})")
    parser.add_argument("--only", help=f"comma-separated subset of steps: {','.join(STEPS)} "
                        "(for a rerun; reference is needed by v2 and tensorrt, build by kernel, "
                        "timing and tensorrt)")
    args = parser.parse_args(argv)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(STEPS))
        if unknown:
            parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
        args.only = wanted
    if args.budget <= 0 or args.train_minutes <= 0:
        parser.error("--budget and --train-minutes must be positive")
    return args


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--cli"]:
        return with_training_verbs().main(argv[1:])
    args = parse_args(argv)
    dry = args.dry_run or not cuda_available()
    if not args.dry_run and dry:
        print("no CUDA device visible to PyTorch: running the dry run (CPU only)")
    plan = Plan(dry, args.budget, args.train_minutes)
    out = args.out.resolve()
    report = Report(out, plan, argv)
    ctx = Context(out, plan, report)
    report.data["environment"] = environment(ctx)
    report.write()
    wanted = set(args.only or STEPS)
    if {"v1", "v2", "nccl"} & wanted:
        ctx.data.start()
    steps = [("build", "Native build (CMake)", step_build),
             ("kernel", "AdaIN kernel vs float64 reference", step_kernel_check),
             ("timing", "AdaIN kernel timing", step_kernel_timing),
             ("reference", "Reference translator (PyTorch) on the device", step_reference),
             ("v2", "v2 training iterations", step_v2_train),
             ("nccl", "2-process NCCL training", step_nccl),
             ("v1", "v1 training + eval", step_v1_train_eval),
             ("tensorrt", "TensorRT build and parity", step_tensorrt)]
    try:
        for name, title, fn in steps:
            if name not in wanted:
                continue
            if report.left() < 15 and name != "tensorrt":
                run_step(report, name, title, skipped, "out of time (budget spent)")
                continue
            run_step(report, name, title, fn, ctx)
    finally:
        ctx.data.stop()
    report.write()
    print("\n" + (out / "gpu-check.md").read_text())
    print(f"reports: {out / 'gpu-check.json'} and {out / 'gpu-check.md'}")
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
