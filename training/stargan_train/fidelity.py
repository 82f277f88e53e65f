"""Fidelity against the true counterfactual, for data sets made by `stargan-rt data synth`.

The renderer draws every random choice of a face whatever its attributes, so the same face can
be re-rendered with only the edited attribute changed (`stargan_rt.synth.Recipe`): that picture
is exactly what a perfect translator returns. Each edit (one held-out face, one target) is
scored against it:

- PSNR and SSIM of the output to the counterfactual;
- background error: mean absolute error (0..255 levels) of the output on the pixels the edit
  does not touch (where the counterfactual equals the input, exactly);
- the same PSNR / SSIM for "return the input unchanged", the baseline every translator must beat
  (its background error is 0 by definition).

Counterfactuals are for judging only: training never sees them.
"""
from __future__ import annotations

import numpy as np

from stargan_rt.errors import UserError
from stargan_rt.imaging import fit_to_model
from stargan_rt.metrics import psnr, ssim
from stargan_rt.synth import ATTRIBUTE_FORCE, FOLDER_DOMAINS, Recipe

PSNR_CAP = 100.0   # dB: identical images score this instead of infinity (JSON has no inf)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


_ATTRIBUTES = {_key(k): v for k, v in ATTRIBUTE_FORCE.items()}


def domain_property(name: str) -> tuple[str, object] | None:
    """(renderer property, value when the domain is on) for a model's domain name, or None
    when the renderer cannot draw it (then that target has no counterfactual)."""
    key = _key(name)
    return _ATTRIBUTES.get(key) or FOLDER_DOMAINS.get(key)


def v1_changes(names: list[str], c_org: np.ndarray, c_trg: np.ndarray) -> dict | None:
    """The renderer changes that turn a face labelled ``c_org`` into ``c_trg`` (0/1 vectors
    over ``names``); None when some changed attribute cannot be rendered."""
    changes: dict = {}
    for i in np.flatnonzero(c_org != c_trg):
        prop = domain_property(names[i])
        if prop is None:
            return None
        key, on_value = prop
        if key == "hair":
            if c_trg[i] > 0:
                changes["hair"] = on_value
            continue                # a colour switched off: the one switched on decides
        if isinstance(on_value, bool):
            changes[key] = bool(c_trg[i] > 0) == on_value
        elif c_trg[i] > 0:          # exclusive folder domains (e.g. neutral / smiling)
            changes[key] = on_value
    return changes


class Tally:
    """Per-target lists of edit scores; ``summary()`` gives means per target and overall."""

    FIELDS = ("psnr", "ssim", "background_error", "baseline_psnr", "baseline_ssim")

    def __init__(self, targets: list[str]):
        self.scores = {t: {f: [] for f in self.FIELDS} for t in targets}
        self.unjudged = dict.fromkeys(targets, 0)

    def add(self, target: str, source: np.ndarray, truth: np.ndarray, output: np.ndarray
            ) -> None:
        """One edit: uint8 (S, S, 3) input, counterfactual and translator output."""
        row = self.scores[target]
        row["psnr"].append(min(psnr(truth, output, 255.0), PSNR_CAP))
        row["ssim"].append(ssim(truth[None], output[None], 255.0))
        row["baseline_psnr"].append(min(psnr(truth, source, 255.0), PSNR_CAP))
        row["baseline_ssim"].append(ssim(truth[None], source[None], 255.0))
        untouched = np.all(source == truth, axis=-1)
        if untouched.any():
            diff = np.abs(output.astype(np.float32) - truth.astype(np.float32))
            row["background_error"].append(float(diff[untouched].mean()))

    def summary(self) -> dict:
        per = {}
        for target, row in self.scores.items():
            per[target] = {"edits": len(row["psnr"]), "unjudged": self.unjudged[target],
                           **{f: _mean(v) for f, v in row.items()}}
        every = {f: [x for row in self.scores.values() for x in row[f]] for f in self.FIELDS}
        overall = {"edits": len(every["psnr"]), **{f: _mean(v) for f, v in every.items()}}
        return {"per_target": per, "overall": overall, "psnr_cap_db": PSNR_CAP,
                "background_error_unit": "levels of 255"}


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def render(recipe: Recipe, file: str, size: int, changes: dict | None = None) -> np.ndarray:
    """The face stored as ``file`` (re-rendered) with ``changes``, framed like the loader does."""
    return fit_to_model(recipe.face(file, changes)[1], size)


def rerender_sources(recipe: Recipe, files: list[str], images: np.ndarray) -> np.ndarray:
    """The held-out faces re-rendered exactly (no JPEG loss), after checking the recipe really
    made these files: each within a few levels of the decoded file (JPEG loss)."""
    size = images.shape[1]
    out = np.stack([render(recipe, f, size) for f in files]) if files else images.copy()
    if len(files):
        err = np.abs(out.astype(np.float32) - images.astype(np.float32)).mean(axis=(1, 2, 3))
        worst = int(np.argmax(err))
        if err[worst] > 10.0:   # JPEG q95 of these noisy faces: up to ~5; another face: ~40
            raise UserError(f"{files[worst]}: the data set's synth.json does not re-render this "
                            f"image (mean difference {err[worst]:.1f} levels); the recipe and the "
                            "images are from different runs. Re-create the data set")
    return out
