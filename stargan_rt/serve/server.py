"""`serve`: run NVIDIA's ``tritonserver`` on a model repository, bound to loopback by default.

Where the binary comes from, in order: ``$STARGAN_RT_TRITONSERVER`` (a ``tritonserver`` file or
the folder holding ``bin/tritonserver``), the nvidia-pytriton wheel unpacked into
``<venv>/tritonserver`` by ``scripts/install.sh`` (a real tritonserver with only the Python
backend; its own Python dependencies, which pin numpy < 2, are not installed), then
``tritonserver`` on PATH (NVIDIA's container, all backends).

The Python backend's stub embeds this interpreter's libpython and imports this environment's
packages: the server is started with the matching stub, ``LD_LIBRARY_PATH`` and ``PYTHONPATH``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stargan_rt.errors import UserError

BINARY_ENV = "STARGAN_RT_TRITONSERVER"
WHEEL = "nvidia-pytriton==0.7.0"
INSTALL_HINT = (f'pip install --no-deps --target "{sys.prefix}/tritonserver" {WHEEL} '
                "(or run scripts/install.sh serve)")


@dataclass
class TritonInstall:
    binary: Path
    backends: Path | None = None    # --backend-directory (None: the binary's default)
    libraries: list[Path] = field(default_factory=list)

    @property
    def python_only(self) -> bool:
        """The wheel's build: only the Python backend."""
        return self.backends is not None


def find_tritonserver() -> TritonInstall:
    env = os.environ.get(BINARY_ENV)
    if env:
        path = Path(env)
        binary = path / "bin" / "tritonserver" if path.is_dir() else path
        if not binary.is_file():
            raise UserError(f"{BINARY_ENV}={env}: no tritonserver binary there")
        return _install_at(binary)
    wheel = Path(sys.prefix) / "tritonserver" / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    if wheel.is_file():
        return _install_at(wheel)
    found = shutil.which("tritonserver")
    if found:
        return TritonInstall(Path(found))
    raise UserError(f"no tritonserver found; install the CPU build here with: {INSTALL_HINT}; "
                    f"or set {BINARY_ENV}, or serve the repository in NVIDIA's Triton container")


def _install_at(binary: Path) -> TritonInstall:
    """The wheel's layout: tritonserver/{bin,backends,python_backend_stubs}, libraries in
    nvidia_pytriton.libs beside the package."""
    root = binary.resolve().parent.parent
    libs = root.parent.parent / "nvidia_pytriton.libs"
    stubs = root / "python_backend_stubs"
    if not stubs.is_dir():
        return TritonInstall(binary)  # a full tritonserver install
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"{root}: no Python backend stub for Python {version} (has: "
                        f"{', '.join(sorted(p.name for p in stubs.iterdir()))}); run the server "
                        "from a virtual environment of one of those versions")
    backend = root / "backends" / "python"
    placed = backend / "triton_python_backend_stub"
    if not placed.is_file() or placed.read_bytes() != stub.read_bytes():
        tmp = backend / ".triton_python_backend_stub.tmp"
        shutil.copyfile(stub, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, placed)  # the backend looks for the stub beside itself
    return TritonInstall(binary, root / "backends", [libs] if libs.is_dir() else [])


def _python_library_dir() -> Path:
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    name = sysconfig.get_config_var("INSTSONAME") or ""
    if ".so" not in name or not (libdir / name).is_file():
        raise UserError(f"the Python backend embeds libpython, and {sys.executable} was built "
                        "without a shared libpython; use a Python built with --enable-shared "
                        "(Debian's, pyenv's with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    return libdir


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def server_command(install: TritonInstall, repo: Path, host: str, ports: Ports,
                   extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The tritonserver command line and environment."""
    cmd = [str(install.binary), f"--model-repository={repo}",
           f"--http-address={host}", f"--http-port={ports.http}",
           f"--grpc-address={host}", f"--grpc-port={ports.grpc}",
           f"--metrics-address={host}", f"--metrics-port={ports.metrics}",
           "--allow-cpu-metrics=true", "--exit-on-error=true", "--strict-readiness=true",
           "--log-verbose=0"]
    env = dict(os.environ)
    if install.python_only:
        cmd.append(f"--backend-directory={install.backends}")
        libs = [str(_python_library_dir())] + [str(p) for p in install.libraries]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
        # the stub's interpreter imports what this one imports (stargan_rt, numpy, engines)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p and Path(p).is_dir()])
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return cmd + list(extra or []), env


def check_repository_for(install: TritonInstall, repo: Path) -> list[str]:
    """Parse every config; a python-only server cannot load native models: say so now."""
    from stargan_rt.serve.repository import read_repository

    configs = read_repository(repo)
    if install.python_only:
        native = [name for name, c in configs.items()
                  if c.platform not in ("", "ensemble") or c.backend not in ("", "python")]
        if native:
            raise UserError(f"{repo}: model(s) {', '.join(native)} need a native Triton backend "
                            f"(onnxruntime / openvino / tensorrt), and {install.binary} has only "
                            "the Python backend; write this repository with `export --triton "
                            "DIR --backend python`, or serve it in NVIDIA's Triton container")
    return list(configs)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class TritonServer:
    """A running tritonserver process (start / wait_ready / stop)."""

    def __init__(self, repo, host: str = "127.0.0.1", ports: Ports = Ports(), log_path=None,
                 extra: list[str] | None = None):
        self.repo = Path(repo).resolve()
        self.host = host
        self.ports = ports
        self.install = find_tritonserver()
        self.models = check_repository_for(self.install, self.repo)
        for what, port in (("--http", ports.http), ("--grpc", ports.grpc),
                           ("--metrics", ports.metrics)):
            if not port_free(host, port):
                raise UserError(f"{what} {port}: {host}:{port} is already in use; pick another "
                                "port")
        self.cmd, self.env = server_command(self.install, self.repo, host, ports, extra)
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    def start(self) -> TritonServer:
        out = open(self.log_path, "ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(self.cmd, env=self.env, stdout=out or None,
                                            stderr=subprocess.STDOUT if out else None,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if out:
                out.close()
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every model is loaded (strict readiness) or the process ends."""
        deadline = time.monotonic() + timeout
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"tritonserver exited with status {self.process.returncode} "
                                f"while loading {self.repo}" + self._log_hint())
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise UserError(f"tritonserver did not get ready within {timeout:.0f} s" + self._log_hint())

    def _log_hint(self) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if " E1" in ln[:8] or "error" in ln.lower()][-3:]
        return f"; see {self.log_path}" + (": " + " | ".join(errors) if errors else "")

    def terminate(self) -> None:
        """Ask the server to shut down (SIGTERM to its process group: the stubs too)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, no shutdown (tests: a server that dies)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
