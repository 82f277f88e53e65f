"""scripts/gpu-check.sh: its CPU dry run end to end, and the parts a GPU run relies on (the
float64 reference, the error check, the v2 decoder shapes, the timing arithmetic, the commands it
runs) in isolation, so that the check cannot rot while no GPU is lent."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gc = _load()

needs_toolchain = pytest.mark.skipif(
    shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file()
    or shutil.which("cmake") is None,
    reason="CUDA toolkit (nvcc) or CMake not installed: the dry run builds the kernel library")


# -- the dry run, as a user runs it --------------------------------------------------------------

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """scripts/gpu-check.sh --dry-run, with the packages a GPU machine may lack (ONNX, ONNX
    Runtime, OpenVINO, onnxsim, TensorRT, CuPy) made unimportable: the GPU path must not need
    them."""
    root = tmp_path_factory.mktemp("gpu-check")
    blocked = root / "blocked"
    for name in ("onnx", "onnxruntime", "openvino", "onnxsim", "tensorrt", "cupy"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the GPU check must not need it')\n")
    out = root / "report"
    env = dict(os.environ, PYTHONPATH=str(blocked), PYTHON=sys.executable)
    result = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run", str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    report = json.loads((out / "gpu-check.json").read_text())
    return result, report, out


def _steps(report):
    return {step["name"]: step for step in report["steps"]}


@needs_toolchain
def test_dry_run_exits_0_and_runs_every_step(dry_run):
    result, report, _ = dry_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert report["dry_run"] is True
    statuses = {name: step["status"] for name, step in _steps(report).items()}
    assert statuses == {"build": "pass", "kernel": "dry-run", "timing": "dry-run",
                        "reference": "dry-run", "v2": "dry-run", "nccl": "skip",
                        "v1": "dry-run", "tensorrt": "skip"}
    env = report["environment"]
    assert env["cuda_devices"] == 0 and env["tensorrt"].startswith("absent")


@needs_toolchain
def test_dry_run_builds_and_calls_the_kernel_library(dry_run):
    _, report, out = dry_run
    steps = _steps(report)
    assert steps["build"]["built"]["libstargan_adain.so"] and steps["build"]["built"]["adain_check"]
    assert any("TensorRT headers not found" in n for n in steps["build"]["notes"])
    # the ctypes binding was called: an empty shape is refused with cudaErrorInvalidValue
    assert steps["kernel"]["probe"] == {"f32": 1, "f16": 1}
    assert len(steps["kernel"]["shapes"]) >= 40
    assert [1, 1, 1, 1] in steps["kernel"]["shapes"] and [1, 64, 256, 256] in steps["kernel"]["shapes"]
    assert all(c["ok"] and not c["nan"] for c in steps["kernel"]["cases"])
    assert (out / "build" / "libstargan_adain.so").is_file()


@needs_toolchain
def test_dry_run_reports_say_what_a_gpu_run_adds(dry_run):
    result, report, out = dry_run
    steps = _steps(report)
    markdown = (out / "gpu-check.md").read_text()
    assert markdown.startswith("# stargan-rt GPU check — DRY RUN (CPU only")
    assert markdown in result.stdout                      # printed at the end
    assert "kernel not run (no GPU" in steps["timing"]["summary"]
    assert all(r["kernel_us"] is None and r["copy_us"] > 0 and r["torch_us"] > 0
               for r in steps["timing"]["rows"])
    assert steps["nccl"]["summary"] == "skipped the 2-process NCCL run: 0 GPU(s) on this machine"
    assert steps["tensorrt"]["summary"].startswith("TensorRT absent")
    assert "| N x C x H x W | I/O | kernel us |" in markdown


@needs_toolchain
def test_dry_run_translates_trains_and_copies_the_eval_report(dry_run):
    _, report, out = dry_run
    steps = _steps(report)
    for key in ("v1-fp32", "v1-bf16", "v2-fp32", "v2-bf16"):
        assert key in steps["reference"]["results"]
    assert steps["reference"]["results"]["v1-fp32"]["max_error_levels"] == 0  # CPU vs CPU
    assert steps["v2"]["train_summary"]["iterations"] == 2
    v1 = steps["v1"]
    assert v1["train_summary"]["iterations"] == 3
    # eval's whole JSON report, whatever sections it has
    assert v1["eval"] == json.loads((out / "eval-v1.json").read_text())
    assert "mean_target_accuracy" in v1["eval"]
    assert "fidelity" in v1["eval"]   # synthetic held-out faces: the true counterfactuals
    assert (out / "runs" / "v1" / "bundle" / "manifest.json").is_file()


# -- the check's parts, one by one ---------------------------------------------------------------

def test_float64_reference_is_instance_norm_affine_leaky_relu():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = (2 + 3 * rng.standard_normal((2, 5, 7, 9))).astype(np.float32)
    gamma, beta = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    xt = torch.from_numpy(x).double()
    norm = F.instance_norm(xt, eps=1e-5)
    expected = (1 + torch.from_numpy(gamma)[:, :, None, None]) * norm \
        + torch.from_numpy(beta)[:, :, None, None]
    got = gc.adain_reference(x, gamma, beta, activation=False)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-12)
    got = gc.adain_reference(x, gamma, beta, activation=True)
    np.testing.assert_allclose(got, F.leaky_relu(expected, 0.2).numpy(), rtol=1e-12, atol=1e-12)


SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 4, 33, 31)]


def test_error_check_passes_a_correct_implementation():
    rows = gc.check_kernel_cases(lambda d, x, g, b, a: gc.adain_float32_direct(x, g, b, a), SHAPES)
    assert len(rows) == 2 * len(SHAPES) and all(r["ok"] for r in rows)
    assert {r["dtype"] for r in rows} == {"f32", "f16"}


@pytest.mark.parametrize("broken", ["nan", "unwritten", "no_activation", "unbiased_variance",
                                    "f16_statistics"])
def test_error_check_catches_broken_kernels(broken):
    def runner(dtype, x, g, b, a):
        if broken == "f16_statistics" and dtype == "f16":
            # statistics accumulated in half precision: what the kernel must not do
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            mean = flat.mean(axis=2, keepdims=True, dtype=np.float16)
            var = ((flat - mean) ** 2).mean(axis=2, keepdims=True, dtype=np.float16)
            y = (1 + g[..., None]) * (flat - mean) / np.sqrt(var + np.float16(1e-5)) \
                + b[..., None]
            y = np.where(y < 0, y * np.float16(0.2), y) if a else y
            return y.reshape(x.shape).astype(np.float16)
        y = gc.adain_float32_direct(x, g, b, a if broken != "no_activation" else not a)
        if broken == "nan":
            y = y.copy()
            y.flat[-1] = np.nan
        if broken == "unwritten":   # the poisoned output left as it was in one plane
            y = y.copy()
            y[-1, -1] = np.nan
        if broken == "unbiased_variance":
            hw = x[0, 0].size
            if hw > 1:
                scale = np.sqrt((hw - 1) / hw)
                y = gc.adain_float32_direct(x, g, b, False)
                y = ((y - b[..., None, None]) * scale + b[..., None, None]).astype(x.dtype)
                y = np.where(y < 0, y * 0.2, y).astype(x.dtype) if a else y
        return y

    shapes = [(2, 3, 4, 4), (1, 8, 32, 32), (1, 2, 1000, 1000)] \
        if broken == "f16_statistics" else SHAPES
    with np.errstate(over="ignore", invalid="ignore"):  # half sums overflow: caught as NaN
        rows = gc.check_kernel_cases(runner, shapes)
    assert not all(r["ok"] for r in rows)
    if broken in ("nan", "unwritten"):
        assert all(r["nan"] and not r["ok"] for r in rows)


def test_error_check_flags_the_scale_shift_form_on_single_pixel_planes():
    """A float32 model of the current kernel's last step, y = x * scale + shift with
    shift = beta - mean * scale: on a 1x1 plane (variance 0, scale ~ 316 (1 + gamma)) the
    cancellation costs ~1e-4 relative error, above the f32 tolerance; on real planes it is fine.
    The GPU run measures the kernel itself on these shapes."""
    def scale_shift(dtype, x, g, b, a):
        n, c = x.shape[:2]
        flat = x.astype(np.float32).reshape(n, c, -1)
        mean = flat.mean(axis=2, keepdims=True, dtype=np.float32)
        var = ((flat - mean) ** 2).mean(axis=2, keepdims=True, dtype=np.float32)
        scale = (np.float32(1) + g.astype(np.float32)[..., None]) / np.sqrt(var + np.float32(1e-5))
        shift = b.astype(np.float32)[..., None] - mean * scale
        y = flat * scale + shift
        y = np.where(y < 0, y * np.float32(0.2), y) if a else y
        return y.reshape(x.shape).astype(x.dtype)

    rows = gc.check_kernel_cases(scale_shift, [(8, 512, 1, 1), (1, 64, 64, 64)])
    by = {(tuple(r["shape"]), r["dtype"]): r for r in rows}
    assert not by[((8, 512, 1, 1), "f32")]["ok"]
    assert by[((1, 64, 64, 64), "f32")]["ok"] and by[((1, 64, 64, 64), "f16")]["ok"]


def test_relative_error_is_infinite_with_nan_or_inf():
    ref = np.ones((1, 1, 2, 2))
    assert gc.relative_error(np.full((1, 1, 2, 2), np.nan, np.float32), ref) == float("inf")
    assert gc.relative_error(np.array([[[[1, 1], [1, np.inf]]]], np.float32), ref) == float("inf")
    assert gc.relative_error(np.array([[[[1, 1], [1, 1.5]]]], np.float32), 2 * ref) == 0.5


def test_v2_decoder_shapes_at_256px_w_hpf_1():
    # Worked out by hand from the official generator: dim_in 64, 5 downsamplings to 8 x 8 at 512
    # channels; the decoder's AdaIN inputs from the bottleneck up to 256 px.
    assert gc.v2_decoder_shapes(256, 1.0, 1) == [
        (1, 512, 8, 8), (1, 512, 16, 16), (1, 512, 32, 32), (1, 256, 64, 64),
        (1, 128, 128, 128), (1, 64, 256, 256)]
    assert gc.v2_decoder_shapes(256, 0.0, 2)[-1] == (2, 64, 256, 256)


def test_kernel_shapes_cover_awkward_decoder_and_random_shapes():
    shapes = gc.kernel_shapes(24)
    assert len(shapes) == len(set(shapes)) >= len(gc.AWKWARD_SHAPES) + 12 + 24
    assert {(1, 1, 1, 1), (1, 1, 2048, 2048), (1, 1, 1, 257)} <= set(shapes)
    assert (2, 64, 256, 256) in shapes
    assert any(s[2] * s[3] % 256 and s[2] * s[3] > 256 for s in shapes)  # not block multiples
    assert all(np.prod(s) <= 8_500_000 for s in shapes)


def test_timing_row_arithmetic_and_goals():
    row = gc.timing_row((1, 64, 256, 256), "f32", kernel_us=100.0, copy_us=80.0, torch_us=300.0,
                        method="cuda-graph")
    assert row["bytes_moved"] == 2 * 64 * 256 * 256 * 4
    assert row["kernel_gbps"] == pytest.approx(row["bytes_moved"] / 100e-6 / 1e9)
    assert row["fraction_of_copy"] == pytest.approx(0.8)
    assert row["speedup_vs_torch"] == pytest.approx(3.0)
    assert row["goals_met"] is True
    slow = gc.timing_row((1, 64, 256, 256), "f16", kernel_us=200.0, copy_us=80.0,
                         torch_us=1000.0, method="cuda-graph")
    assert slow["bytes_moved"] == 2 * 64 * 256 * 256 * 2 and slow["goals_met"] is False
    not_run = gc.timing_row((1, 8, 8, 8), "f32", None, 5.0, 7.0, "cpu-wall")
    assert not_run["goals_met"] is None and not_run["fraction_of_copy"] is None
    table = gc.md_table(gc.timing_table([row])["header"], gc.timing_table([row])["rows"])
    assert "| 1x64x256x256 | f32 | 100 | 336 | 80 | 419 | 0.8 | 300 | 3 | yes | cuda-graph |" \
        in table


def test_train_minutes_fit_the_budget():
    plan = gc.Plan(dry=False, budget_s=520, train_minutes=4.0)
    assert gc.train_minutes(plan, left_s=500) == 4.0
    assert gc.train_minutes(plan, left_s=300) == pytest.approx((300 - 130 - 30) / 60)
    assert gc.train_minutes(plan, left_s=100) == 0.5


def _parse(cmd):
    cmd = [str(c) for c in cmd]
    return gc.with_training_verbs().build_parser().parse_args(cmd[cmd.index("--cli") + 1:])


def test_gpu_commands_parse_with_the_current_cli(tmp_path):
    """The commands the GPU run will start, checked against today's CLI (they cannot be run
    here): v1 at the paper's widths, 128 px, bf16, on CUDA for the budgeted minutes; v2 in the
    official configuration with the FAN; NCCL; eval; TensorRT build and parity."""
    plan = gc.Plan(dry=False, budget_s=520, train_minutes=4.0)
    args = _parse(gc.v1_train_command(tmp_path / "d", tmp_path / "r", plan, 3.5, "cuda"))
    assert (args.arch, args.device, args.image_size, args.conv_dim, args.repeat_num,
            args.d_repeat_num, args.bf16, args.max_minutes, args.batch) == \
        ("v1", "cuda", 128, 64, 6, 6, True, 3.5, 16)
    args = _parse(gc.v2_train_command(tmp_path / "d", tmp_path / "r", plan, tmp_path / "fan",
                                      "cuda"))
    assert (args.arch, args.preset, args.image_size, args.w_hpf, args.fan, args.iters) == \
        ("v2", "paper", 256, 1.0, tmp_path / "fan", 20)
    nccl = gc.nccl_command(tmp_path / "d", tmp_path / "r", plan)
    assert nccl[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    assert _parse(nccl).arch == "v1"
    args = _parse(gc.eval_command(tmp_path / "b", tmp_path / "d", tmp_path / "t",
                                  tmp_path / "e.json", plan))
    assert (args.max_images, args.classifier_seconds, args.report) == (200, 60.0,
                                                                       tmp_path / "e.json")
    for _name, cmd in gc.tensorrt_commands(tmp_path / "m", tmp_path / "c", tmp_path / "p.json"):
        args = _parse(cmd)
        assert "tensorrt" in (args.target if isinstance(args.target, list) else [args.target])


def test_v2_bundle_with_fan_loads_in_the_reference_translator(tmp_path):
    from stargan_rt.reference import TorchTranslator

    path = gc.make_v2_bundle(tmp_path / "v2", 64, dict(style_dim=16, latent_dim=8,
                                                      max_conv_dim=32, dim_in=16, hidden_dim=32))
    translator = TorchTranslator(path)
    assert translator.fan is not None and translator.bundle.manifest.config["w_hpf"] == 1
    gc._set_target(translator)
    assert translator.style().shape == (1, 16)


def test_report_is_written_after_each_step_and_a_failing_step_does_not_stop_the_others(tmp_path):
    plan = gc.Plan(dry=True, budget_s=60, train_minutes=1)
    report = gc.Report(tmp_path, plan, [])

    def boom(_):
        raise ValueError("broken step")

    gc.run_step(report, "a", "Step A", boom, None)
    first = json.loads((tmp_path / "gpu-check.json").read_text())
    assert first["steps"][0]["status"] == "error" and "broken step" in first["steps"][0]["error"]
    gc.run_step(report, "b", "Step B", lambda _: {"status": "pass", "summary": "fine"}, None)
    assert report.failed() and report.statuses() == {"error": 1, "pass": 1}
    markdown = (tmp_path / "gpu-check.md").read_text()
    assert "## Step A: ERROR" in markdown and "## Step B: PASS" in markdown


def test_only_rejects_unknown_steps(capsys):
    assert gc.parse_args(["--only", "kernel,timing"]).only == ["kernel", "timing"]
    with pytest.raises(SystemExit):
        gc.parse_args(["--only", "kernal"])
    assert "unknown step(s) kernal" in capsys.readouterr().err


@needs_toolchain
def test_build_falls_back_to_nvcc_when_cmake_configure_fails(tmp_path, monkeypatch):
    """A GPU machine's CMake may be older than the 3.24 the project asks for: the kernel steps
    still get their library, built by nvcc directly, and the build step says it failed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cmake").write_text("#!/bin/sh\necho 'CMake 3.22 or higher is required' >&2\nexit 1\n")
    (bin_dir / "cmake").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = gc.Plan(dry=True, budget_s=300, train_minutes=1)
    ctx = gc.Context(tmp_path / "out", plan, gc.Report(tmp_path / "out", plan, []))
    step = gc.step_build(ctx)
    assert step["status"] == "fail" and "built with nvcc directly" in step["summary"]
    assert step["commands"][1]["rc"] == 0
    library = gc.AdainLibrary(ctx.build_dir / "libstargan_adain.so")
    assert library.probe() == {"f32": 1, "f16": 1}
