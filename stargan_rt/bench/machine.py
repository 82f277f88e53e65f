"""What machine a benchmark ran on: CPU model and the flags that decide the fast paths (AVX-512,
VNNI, BF16, AMX, FP16), cores, memory, load average, runtime versions.

Figures only mean something with the machine beside them: every bench report embeds this.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU flags that change which kernels the runtimes pick (x86 /proc/cpuinfo names).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in info:
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return []


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict:
    """A JSON-able description of this machine, for reports."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    hypervisor = "hypervisor" in flags
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cores": cores, "usable_cores": usable, "virtualised": hypervisor,
        "speed_flags": [f for f in SPEED_FLAGS if f in flags],
        "missing_flags": [f for f in SPEED_FLAGS if f not in flags],
        "memory_gb": memory_gb(), "load_average": load_average(),
        "python": platform.python_version(), "os": platform.platform(),
        "versions": {name: _version(name) for name in
                     ("stargan-rt", "numpy", "torch", "onnxruntime", "openvino", "nncf", "onnx")},
    }


def one_line(machine: dict) -> str:
    flags = ", ".join(machine["speed_flags"]) or "none of the fast-path flags"
    load = "/".join(f"{x:.2f}" for x in machine["load_average"]) or "?"
    return (f"{machine['cpu']} ({machine['usable_cores']} of {machine['cores']} cores usable"
            f"{', virtualised' if machine['virtualised'] else ''}; {flags}); load average "
            f"{load} (1/5/15 min) at the start")
