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
    """The one rule for a --model value: none -> the demo bundle; `demo-v1` / `demo-v2` -> the
    built-in ones; a bundle directory; or a model name pulled into the model home
    (stargan_rt.catalogue.resolve_name, which explains unknown and not-yet-pulled names)."""
    if model is None:
        return default_bundle_path(arch)
    if model in ("demo-v1", "demo-v2"):
        return default_bundle_path(model[-2:])
    from stargan_rt.catalogue import resolve_name
    return resolve_name(model)
