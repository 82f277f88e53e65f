"""The CUDA AdaIN kernel builds with CMake + nvcc here; it runs only where an NVIDIA GPU is."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_toolchain = pytest.mark.skipif(
    shutil.which("nvcc") is None or shutil.which("cmake") is None,
    reason="CUDA toolkit (nvcc) or CMake not installed: the native kernel cannot be built here")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    build = tmp_path_factory.mktemp("native-build")
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=90"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    return build


@needs_toolchain
def test_kernel_library_builds_and_exports_the_c_interface(build_dir):
    symbols = subprocess.run(["nm", "-D", str(build_dir / "libstargan_adain.so")],
                             check=True, capture_output=True, text=True).stdout
    assert "stargan_adain_forward_f32" in symbols and "stargan_adain_forward_f16" in symbols
    assert (build_dir / "adain_check").is_file()


@needs_toolchain
@pytest.mark.skipif(shutil.which("nvidia-smi") is None
                    or subprocess.run(["nvidia-smi"], capture_output=True).returncode != 0,
                    reason="no NVIDIA GPU on this machine: the kernel is compiled but not run")
def test_kernel_matches_cpu_reference_on_gpu(build_dir):
    result = subprocess.run([str(build_dir / "adain_check"), "2", "256", "64", "64"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _tensorrt_root():
    import os
    for root in (os.environ.get("TensorRT_ROOT"), "/usr"):
        if root and (Path(root) / "include" / "NvInferRuntime.h").is_file():
            return root
    return None


@needs_toolchain
@pytest.mark.skipif(_tensorrt_root() is None,
                    reason="TensorRT headers not installed (set TensorRT_ROOT): TensorRT cannot be "
                           "installed on this machine, so the plugin library is not compiled here")
def test_tensorrt_plugin_library_builds_and_exports_entry_points(tmp_path):
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=90",
                    f"-DTensorRT_ROOT={_tensorrt_root()}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    symbols = subprocess.run(["nm", "-D", str(build / "libstargan_rt_trt_plugins.so")],
                             check=True, capture_output=True, text=True).stdout
    assert " T getCreators" in symbols and " T setLoggerFinder" in symbols
