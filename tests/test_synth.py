"""The synthetic face data set: layouts, attribute file, visible attributes, determinism, errors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from stargan_rt import synth
from stargan_rt.synth import make_face, synthesize

# The 40 CelebA attribute names in the official order, written out independently of synth.py.
OFFICIAL_40 = """5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips
Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses
Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes
No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling
Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace
Wearing_Necktie Young""".split()


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def celeba_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "celeba"
    summary = synthesize(out, count=40, image_size=64, layout="celeba", seed=5, workers=1)
    return out, summary


def test_celeba_attribute_file_parses_like_celeba(celeba_set):
    out, summary = celeba_set
    lines = (out / "list_attr_celeba.txt").read_text().splitlines()
    assert int(lines[0]) == 40 == len(lines) - 2
    assert lines[1].split() == OFFICIAL_40
    files = sorted(p.name for p in (out / "images").iterdir())
    assert len(files) == 40
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == files
    values = np.array([[int(v) for v in r[1:]] for r in rows])
    assert values.shape == (40, 40) and set(np.unique(values)) <= {-1, 1}
    col = {name: values[:, i] for i, name in enumerate(OFFICIAL_40)}
    hair = np.stack([col["Black_Hair"], col["Blond_Hair"], col["Brown_Hair"], col["Gray_Hair"]])
    assert ((hair == 1).sum(0) == 1).all(), "exactly one hair colour per face"
    assert (col["Gray_Hair"] == -1).all()          # not among the default hair colours
    for name in ("Smiling", "Eyeglasses", "Male"):  # both values occur
        assert set(col[name]) == {-1, 1}, name
    assert (col["Smiling"] == col["Mouth_Slightly_Open"]).all()
    for name in ("Attractive", "Bald", "Wearing_Hat", "Big_Nose"):   # not rendered -> -1
        assert (col[name] == -1).all(), name
    image = cv2.imread(str(out / "images" / files[0]))
    assert image.shape == (64, 64, 3)
    assert summary["positives"]["Smiling"] == int((col["Smiling"] == 1).sum())


def _pair(force_a, force_b, index, size=64, seed=11):
    a = make_face(seed, index, size, force=force_a)[1].astype(np.int32)
    b = make_face(seed, index, size, force=force_b)[1].astype(np.int32)
    return np.abs(a - b).sum(axis=2)


def test_smile_changes_the_mouth_region_only():
    for index in range(6):
        diff = _pair({"smile": False, "glasses": False}, {"smile": True, "glasses": False}, index)
        mouth = diff[38:56, 12:52]          # lower middle of a 64 px face
        top = diff[:12]                     # hair / background above the face
        # measured on seed 11, faces 0-29: mean 9.8-24, changed pixels 21-90
        assert mouth.mean() > 6, f"face {index}: smile barely visible ({mouth.mean():.1f})"
        assert (mouth > 60).sum() >= 12, f"face {index}: too few changed mouth pixels"
        assert top.max() == 0, "toggling the smile must not change the rest of the image"


def test_glasses_change_the_eye_band():
    for index in range(6):
        diff = _pair({"smile": False, "glasses": False}, {"smile": False, "glasses": True}, index)
        eyes = diff[22:42, 10:54]
        below = diff[48:]
        # measured on seed 11, faces 0-11: mean 19-41, changed pixels 54-148
        assert eyes.mean() > 12, f"face {index}: glasses barely visible ({eyes.mean():.1f})"
        assert (eyes > 90).sum() >= 30, f"face {index}: too few dark frame pixels"
        assert below.max() == 0, "toggling glasses must not change the mouth / shoulders"


def test_subtlety_shrinks_smile_and_glasses_but_keeps_them_visible():
    def changed(force_a, force_b, subtlety):
        return sum(int((np.abs(make_face(11, i, 64, force=force_a, subtlety=subtlety)[1]
                               .astype(np.int32) - make_face(11, i, 64, force=force_b,
                                                             subtlety=subtlety)[1]).sum(2)
                        > 60).sum()) for i in range(6))

    off = {"smile": False, "glasses": False}
    for key in ("smile", "glasses"):
        on = dict(off, **{key: True})
        bold, subtle = changed(off, on, 0.0), changed(off, on, 1.0)
        assert 0 < subtle < 0.8 * bold, (key, bold, subtle)
        assert subtle > 60, (key, subtle)       # still there: ~10+ changed pixels per face
    assert np.array_equal(make_face(3, 1, 64)[1], make_face(3, 1, 64, subtlety=0.0)[1])


def test_hair_colours_are_distinct():
    # Same faces in each hair colour; hair pixels = where black and blond versions differ.
    means = {h: [] for h in ("black", "blond", "brown", "gray")}
    for index in range(8):
        images = {h: make_face(2, index, 64, force={"hair": h})[1].astype(np.float32)
                  for h in means}
        hair = np.abs(images["black"] - images["blond"]).sum(axis=2) > 150
        assert hair.sum() > 150, f"face {index}: hair region too small ({hair.sum()} px)"
        for h in means:
            means[h].append(images[h][hair].mean(axis=0))
    means = {h: np.mean(v, axis=0) for h, v in means.items()}   # BGR
    lum = {h: m.mean() for h, m in means.items()}
    assert lum["black"] + 40 < lum["brown"] < lum["blond"] - 40, lum
    b, g, r = means["blond"]
    assert r > b + 50, f"blond is yellow, not grey: {means['blond']}"
    b, g, r = means["brown"]
    assert r > g + 15 > b + 25, f"brown is red-brown, not olive: {means['brown']}"
    b, g, r = means["gray"]
    assert abs(r - b) < 12 and lum["gray"] > lum["brown"], f"gray is neutral: {means['gray']}"


def test_deterministic_and_seed_dependent(tmp_path):
    a = synthesize(tmp_path / "a", count=12, seed=3, layout="folders", workers=1)
    synthesize(tmp_path / "b", count=12, seed=3, layout="folders", workers=1)
    synthesize(tmp_path / "c", count=12, seed=4, layout="folders", workers=1)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")
    assert a["splits"]["train"] == {"black_hair": 4, "blond_hair": 4, "brown_hair": 4}
    # one image alone renders exactly as inside a data set
    alone = make_face(3, 0, 64, force={"hair": "black"})[1]
    ondisk = cv2.imread(str(tmp_path / "a" / "train" / "black_hair" / "000001.png"))
    assert np.array_equal(alone, ondisk)


def test_worker_processes_give_identical_files(tmp_path):
    synthesize(tmp_path / "one", count=520, image_size=32, seed=9, workers=1, image_format="png")
    synthesize(tmp_path / "two", count=520, image_size=32, seed=9, workers=2, image_format="png")
    assert _tree_digest(tmp_path / "one") == _tree_digest(tmp_path / "two")


def test_folders_layout_with_smile_domains(tmp_path, cli):
    out = tmp_path / "smile"
    result = cli("data", "synth", out, "--layout", "folders", "--domains", "neutral,smiling",
                 "--count", "20", "--image-size", "32", "--val-fraction", "0.2")
    assert result.code == 0, result
    assert (out / "domains.txt").read_text().split() == ["neutral", "smiling"]
    for split, n in (("train", 8), ("val", 2)):
        for domain in ("neutral", "smiling"):
            files = sorted((out / split / domain).glob("*.png"))
            assert len(files) == n
            assert cv2.imread(str(files[0])).shape == (32, 32, 3)
    assert "train: neutral 8, smiling 8" in result.out
    preview = tmp_path / "preview.png"
    result = cli("data", "synth", tmp_path / "again", "--layout", "folders", "--count", "20",
                 "--image-size", "32", "--preview", preview)
    assert result.code == 0, result
    # train has 6/6/5 images per domain; round-robin takes 5 of each: 15 tiles, 8 a row
    assert cv2.imread(str(preview)).shape == (2 * 32, 8 * 32, 3)


@pytest.mark.parametrize("args, message", [
    (["--count", "0"], "--count must be a positive integer"),
    (["--count", "-5"], "--count must be a positive integer"),
    (["--layout", "imagenet"], "unknown layout 'imagenet'"),
    (["--layout", "folders", "--domains", "smiling,blond_hair"], "mixes attribute groups"),
    (["--layout", "folders", "--domains", "purple_hair,black_hair"], "unknown domain"),
    (["--layout", "folders", "--domains", "smiling"], "at least two domains"),
    (["--domains", "smiling"], "picks the hair colours"),
    (["--image-size", "8"], "--image-size must be"),
    (["--subtlety", "2"], "--subtlety must be in [0, 1]"),
])
def test_bad_input_exits_2(tmp_path, cli, args, message):
    out = tmp_path / "out"
    result = cli("data", "synth", out, *args)
    assert result.code == 2, result
    assert message in result.err
    assert not out.exists() or not any(out.iterdir()), "nothing written on bad input"


def test_existing_non_empty_output_is_refused(tmp_path, cli):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("data", "synth", out, "--count", "3")
    assert result.code == 2 and "not empty" in result.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_attribute_file_is_written_last(tmp_path, monkeypatch):
    """An interrupted run leaves images but no list_attr_celeba.txt (the completeness marker)."""
    calls = []

    def fail_after_three(done, total):
        calls.append(done)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "cut", count=10, workers=1, progress=fail_after_three)
    assert len(list((tmp_path / "cut" / "images").iterdir())) == 3
    assert not (tmp_path / "cut" / "list_attr_celeba.txt").exists()


def test_haar_cascade_finds_the_faces():
    # measured on 300 faces (seed 7): 85 % of all faces, 96-100 % without glasses
    plain = [make_face(21, i, 256, force={"glasses": False})[1] for i in range(30)]
    assert synth.haar_detection_rate(plain) >= 0.85
    mixed = [make_face(22, i, 128)[1] for i in range(40)]
    assert synth.haar_detection_rate(mixed) >= 0.7


def test_haar_box_matches_the_published_framing():
    import cv2 as _cv2

    cascade = _cv2.CascadeClassifier(_cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    boxes = []
    for i in range(30):
        grey = _cv2.equalizeHist(_cv2.cvtColor(make_face(23, i, 256, force={"glasses": False})[1],
                                               _cv2.COLOR_BGR2GRAY))
        found = cascade.detectMultiScale(grey, 1.1, 5, minSize=(64, 64))
        if len(found):
            boxes.append(max(found, key=lambda b: b[2]))
    x, y, w, h = np.mean(boxes, axis=0)
    scale, shift = synth.HAAR_FRAMING["crop_scale"], synth.HAAR_FRAMING["crop_shift"]
    assert abs(scale * w - 256) < 0.08 * 256                     # crop side ~ the image side
    assert abs((y + h / 2 + shift * w) - 128) < 0.05 * 256       # crop centre ~ image centre
