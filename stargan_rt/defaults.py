"""The built-in demo models that every verb uses when no --model is given."""
from __future__ import annotations

from pathlib import Path

from stargan_rt.errors import UserError

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_MODELS = {"v1": ASSETS / "models" / "demo-v1", "v2": ASSETS / "models" / "demo-v2"}
DEFAULT_ARCH = "v1"
# --model's help, the same in every verb that takes one (the verb adds its default)
MODEL_HELP = ("bundle directory or model name: demo-v1, demo-v2, or a model fetched with "
              "`stargan-rt pull NAME` (`stargan-rt models` lists them)")


def demo_hint(arch: str) -> str:
    """What to expect from a demo model on real faces, and the one command for real weights."""
    real = {"v1": ("celeba-128", "--domain blond"),
            "v2": ("celeba-hq", "--domain male --ref FACE.jpg")}[arch]
    return (f"note: demo-{arch} is a small demo trained on synthetic faces only: real faces "
            f"come out blurred. For real faces: `stargan-rt pull {real[0]}`, then "
            f"--model {real[0]} {real[1]}")


def is_builtin_demo(path) -> bool:
    """Whether a bundle path is one of the built-in demo models (for the start-up hint only)."""
    try:
        return any(Path(path).resolve() == p.resolve() for p in DEMO_MODELS.values())
    except OSError:
        return False


def default_bundle_path(arch: str = DEFAULT_ARCH) -> Path:
    path = DEMO_MODELS[arch]
    if not (path / "manifest.json").is_file():
        raise UserError(f"the built-in {arch} demo model is missing at {path}; pass --model BUNDLE "
                        "or rebuild the demo models with `python -m stargan_train.demo`")
    return path


def resolve_model(model: str | None, arch: str = DEFAULT_ARCH) -> Path:
    """The one rule for a --model value: none -> the demo bundle; `demo-v1` / `demo-v2` -> the
    built-in ones; a bundle directory; or a model name pulled into the model home
    (stargan_rt.catalogue.resolve_name, which explains unknown and not-yet-pulled names)."""
    if model is None:
        return default_bundle_path(arch)
    if model in ("demo-v1", "demo-v2"):
        return default_bundle_path(model[-2:])
    from stargan_rt.catalogue import resolve_name
    return resolve_name(model)
