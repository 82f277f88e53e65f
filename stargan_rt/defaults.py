"""The built-in demo models that every verb uses when no --model is given."""
from __future__ import annotations

from pathlib import Path

from stargan_rt.errors import UserError

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_MODELS = {"v1": ASSETS / "models" / "demo-v1", "v2": ASSETS / "models" / "demo-v2"}
DEFAULT_ARCH = "v1"


def default_bundle_path(arch: str = DEFAULT_ARCH) -> Path:
    path = DEMO_MODELS[arch]
    if not (path / "manifest.json").is_file():
        raise UserError(f"the built-in {arch} demo model is missing at {path}; pass --model BUNDLE "
                        "or rebuild the demo models with `python -m stargan_train.demo`")
    return path


def resolve_model(model: str | None, arch: str = DEFAULT_ARCH) -> Path:
    """--model value, or the demo bundle; `demo-v1` / `demo-v2` name the built-in ones."""
    if model is None:
        return default_bundle_path(arch)
    if model in ("demo-v1", "demo-v2"):
        return default_bundle_path(model[-2:])
    return Path(model)
