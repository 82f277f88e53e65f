"""Layering rules (docs/ARCHITECTURE.md): the deployable package never imports the training
package, and the runtime path (backends, build, runtime, stream, the CLI's start) never imports
torch. Checked by running code in a subprocess in which those packages cannot be imported."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "stargan_rt"

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} cannot be imported here (blocked by the layering test)")
sys.meta_path.insert(0, Block())
"""


def run_blocked(code: str, blocked: set[str], timeout: float = 300) -> subprocess.CompletedProcess:
    script = textwrap.dedent(BLOCK.format(blocked=sorted(blocked))) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_the_package_source_never_imports_the_training_package():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "stargan_train" for name in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_runtime_modules_import_without_torch_or_the_training_package():
    done = run_blocked("""
        import importlib, pkgutil, sys
        import stargan_rt.backends, stargan_rt.stream
        names = ["stargan_rt." + n for n in ("build", "bundle", "cli", "defaults", "files",
                                             "imaging", "latents", "metrics", "parity", "runtime",
                                             "synth", "targets")]
        for package in (stargan_rt.backends, stargan_rt.stream):
            names += [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
        for name in names:
            importlib.import_module(name)
        from stargan_rt.cli import build_parser
        build_parser()  # every verb registers (the training verbs are left out)
        bad = [m for m in ("torch", "stargan_train") if m in sys.modules]
        print("imported", len(names), "modules; forbidden:", bad)
        sys.exit(1 if bad else 0)
    """, {"torch", "stargan_train"})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_webcam_runs_with_torch_and_the_training_package_unimportable(tmp_path):
    """With the demo model's graphs in the engine cache, the live runtime streams the sample video
    in a process that can import neither torch nor the training package."""
    from stargan_rt.defaults import DEMO_MODELS
    from stargan_rt.runtime import Translator

    cache = tmp_path / "cache"
    Translator.create(DEMO_MODELS["v1"], target="onnxruntime", cache_dir=cache,
                      log=lambda m: None).close()       # exports (with torch) into the cache
    stats = tmp_path / "stats.json"
    args = ["webcam", "--source", "sample", "--headless", "--max-frames", "6", "--target",
            "onnxruntime", "--cache-dir", str(cache), "--domain", "smile", "--stats", str(stats)]
    done = run_blocked(f"""
        import sys
        from stargan_rt.cli import main
        code = main({args!r})
        bad = [m for m in ("torch", "stargan_train") if m in sys.modules]
        print("forbidden:", bad)
        sys.exit(code or (3 if bad else 0))
    """, {"torch", "stargan_train"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(stats.read_text())["frames_out"] == 6
