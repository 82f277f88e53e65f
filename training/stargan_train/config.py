"""A run's settings: a preset plus overrides, the crop framing of synthetic data, and the
primitive copy saved in checkpoints and config.json."""
from __future__ import annotations

from stargan_rt.errors import UserError


def make_config(presets: dict, preset: str, defaults: dict, overrides: dict) -> dict:
    """A preset's settings plus ``defaults``, then every override that is not None."""
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    cfg = dict(presets[preset], preset=preset, seed=0, holdout=0.02, **defaults)
    cfg.update({key: value for key, value in overrides.items() if value is not None})
    return cfg


def synth_framing(data_dir) -> dict:
    """The crop framing (``crop_scale``, ``crop_shift``) of faces made by `stargan-rt data
    synth` when ``data_dir`` is such a set (it carries its recipe), else {}: a bundle trained on
    it carries the framing, so the runtime's live crops are framed like its training images."""
    from stargan_rt.synth import HAAR_FRAMING, read_recipe

    if data_dir is None or read_recipe(data_dir) is None:
        return {}
    return dict(HAAR_FRAMING)


def primitive(value):
    """JSON/torch.load(weights_only)-safe copy of a config."""
    if isinstance(value, dict):
        return {str(k): primitive(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [primitive(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
