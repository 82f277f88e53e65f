"""Counterfactual fidelity: the renderer re-draws a face with only the chosen attributes changed,
and eval scores translators against that truth (identity = the baseline, oracle = perfect)."""
from __future__ import annotations

import numpy as np
import pytest

from stargan_rt.synth import Recipe, make_face, read_recipe, synthesize

EDITS = [{"hair": "blond"}, {"hair": "black"}, {"smile": True}, {"smile": False},
         {"glasses": True}, {"glasses": False}]


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=-1)


@pytest.mark.parametrize("seed", [0, 7, 123, 4096])
def test_a_counterfactual_changes_only_the_edited_attribute(seed):
    """Over many faces: the other attributes stay, the edit is local (the image corners, which
    are background, never change for a mouth or glasses edit), undoing an edit restores the
    image exactly, and two edits together touch no pixel that neither touches alone (beyond
    rounding)."""
    for index in range(8):
        face, image = make_face(seed, index, 64)
        for edit in EDITS:
            other, edited = make_face(seed, index, 64, force=edit)
            key, value = next(iter(edit.items()))
            field = {"smile": "smiling"}.get(key, key)
            assert getattr(other, field) == value
            for name in ("skin_t", "bangs", "young", "male", "lipstick", "stubble"):
                assert getattr(other, name) == getattr(face, name), (edit, name)
            for name in {"hair", "smiling", "glasses"} - {field}:
                assert getattr(other, name) == getattr(face, name), (edit, name)
            changed = _changed(image, edited)
            assert changed.mean() < 0.4, (seed, index, edit, changed.mean())
            if key != "hair":
                corners = np.concatenate([changed[:6, :6].ravel(), changed[:6, -6:].ravel()])
                assert not corners.any(), (seed, index, edit)
            back = {"hair": face.hair, "smile": face.smiling, "glasses": face.glasses}[key]
            assert np.array_equal(make_face(seed, index, 64, force={key: back})[1], image)
        smile = make_face(seed, index, 64, force={"smile": not face.smiling})[1]
        glasses = make_face(seed, index, 64, force={"glasses": not face.glasses})[1]
        both = make_face(seed, index, 64, force={"smile": not face.smiling,
                                                  "glasses": not face.glasses})[1]
        untouched = ~(_changed(image, smile) | _changed(image, glasses))
        # up to rounding: two changes below half a level each can add up to one level
        diff = np.abs(both[untouched].astype(int) - image[untouched].astype(int))
        assert diff.max(initial=0) <= 1, (seed, index, diff.max())


def test_the_data_set_records_its_recipe_and_re_renders_its_files(tmp_path):
    out = tmp_path / "faces"
    synthesize(out, count=6, image_size=48, layout="folders", seed=3, workers=1,
               domains="neutral,smiling", val_fraction=0.0)
    recipe = read_recipe(out)
    assert recipe == Recipe(3, 48, "folders", ("black_hair", "blond_hair", "brown_hair"), 0.0)
    import cv2

    for path in sorted((out / "train").glob("*/*.png")):
        file = f"{path.parent.name}/{path.name}"
        face, image = recipe.face(file)
        assert np.array_equal(image, cv2.imread(str(path)))
        assert face.smiling == (path.parent.name == "smiling")
        assert recipe.face(file, {"smile": not face.smiling})[0].smiling != face.smiling


def test_a_broken_recipe_is_one_clear_error(tmp_path):
    from stargan_rt.errors import UserError

    (tmp_path / "synth.json").write_text('{"seed": "x"}')
    with pytest.raises(UserError, match="synth.json: unreadable synthetic data recipe"):
        read_recipe(tmp_path)
    assert read_recipe(tmp_path / "elsewhere") is None


# ---------------------------------------------------------------------------------------------
# eval's numbers on translators whose answers are known
torch = pytest.importorskip("torch")
ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling", "Eyeglasses"]


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    from stargan_train import evaluate as ev
    from stargan_train import fidelity

    out = tmp_path_factory.mktemp("fidelity") / "celeba"
    synthesize(out, count=16, image_size=64, layout="celeba", seed=41, workers=1)
    held = ev.load_celeba(out, ATTRS, 64)
    recipe = read_recipe(out)
    held.images = fidelity.rerender_sources(recipe, held.files, held.images)
    return held, recipe


class Counterfactual:
    """Returns the true counterfactual: a perfect translator."""

    def __init__(self, held, recipe):
        from stargan_train import fidelity

        self.fidelity, self.recipe = fidelity, recipe
        self.rows = {img.tobytes(): (f, lab) for img, f, lab in
                     zip(held.images, held.files, held.onehot())}

    def translate(self, crops, labels):
        out = []
        for crop, target in zip(crops, labels):
            file, c_org = self.rows[crop.tobytes()]
            out.append(self.fidelity.render(self.recipe, file, 64,
                                            self.fidelity.v1_changes(ATTRS, c_org, target)))
            self.rows.setdefault(out[-1].tobytes(), (file, target))
        return np.stack(out)


class Identity:
    def translate(self, crops, labels):
        return crops.copy()


class AlwaysPositive:
    """A stand-in judge that answers 'every attribute present' (fidelity ignores it)."""

    def __call__(self, x):
        return torch.full((len(x), len(ATTRS)), 5.0)

    def eval(self):
        return self


def test_identity_scores_the_baseline_exactly_and_the_counterfactual_is_perfect(held):
    from stargan_train import evaluate as ev
    from stargan_train.fidelity import PSNR_CAP

    held, recipe = held
    same = ev.evaluate_v1(Identity(), AlwaysPositive(), held, recipe=recipe)["fidelity"]
    assert same["overall"]["edits"] > 0
    for row in [same["overall"], *same["per_target"].values()]:
        if row["edits"]:
            assert row["psnr"] == row["baseline_psnr"]
            assert row["ssim"] == row["baseline_ssim"]
            assert row["background_error"] == 0.0
            assert row["baseline_psnr"] < PSNR_CAP and row["baseline_ssim"] < 1.0
    perfect = ev.evaluate_v1(Counterfactual(held, recipe), AlwaysPositive(), held,
                             recipe=recipe)["fidelity"]
    assert perfect["overall"]["edits"] == same["overall"]["edits"]
    assert perfect["overall"]["psnr"] == PSNR_CAP
    assert perfect["overall"]["ssim"] == pytest.approx(1.0)
    assert perfect["overall"]["background_error"] == 0.0
    text = "\n".join(ev.format_fidelity(perfect))
    assert "all edits" in text and "Smiling" in text


def test_v1_changes_maps_targets_to_renderer_properties():
    from stargan_train.fidelity import v1_changes

    org = np.array([1, 0, 0, 1, 0], np.float32)
    assert v1_changes(ATTRS, org, np.array([0, 1, 0, 1, 0], np.float32)) == {"hair": "blond"}
    assert v1_changes(ATTRS, org, np.array([1, 0, 0, 0, 1], np.float32)) == {
        "smile": False, "glasses": True}
    assert v1_changes(["Bald", "Smiling"], np.array([0, 1.0]), np.array([1, 1.0])) is None


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    from stargan_train.metrics import kernel_inception_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same = kernel_inception_distance(a, b)
    assert abs(same) < 0.02
    assert kernel_inception_distance(a, b + 0.5) > 10 * abs(same) + 0.05


def test_a_bundle_trained_on_synthetic_faces_carries_their_framing(tmp_path):
    from stargan_rt.synth import HAAR_FRAMING
    from stargan_train.config import synth_framing

    synthesize(tmp_path / "faces", count=4, image_size=32, seed=2, workers=1)
    assert synth_framing(tmp_path / "faces") == HAAR_FRAMING
    (tmp_path / "photos").mkdir()
    assert synth_framing(tmp_path / "photos") == {} and synth_framing(None) == {}
