"""Evaluation: the independent classifier, the v1/v2 protocol, FID / LPIPS computations, errors."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stargan_train import evaluate as ev  # noqa: E402
from stargan_train import metrics  # noqa: E402
from stargan_rt.synth import make_face, synthesize  # noqa: E402

ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling", "Eyeglasses"]
SEED = 17


# ---------------------------------------------------------------------------------------------
# Shared: one small synthetic CelebA-layout set and one classifier trained on it.
@pytest.fixture(scope="module")
def celeba_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "celeba"
    synthesize(out, count=560, image_size=64, layout="celeba", seed=SEED, workers=1)
    return out


@pytest.fixture(scope="module")
def trained(celeba_dir):
    full = ev.load_celeba(celeba_dir, ATTRS, 64)
    train, held = ev._split(full, 0.15, 0)
    model, info = ev.train_classifier(train, epochs=8, seconds=75, seed=0)
    return model, info, train, held


def test_classifier_learns_the_synthetic_attributes(trained):
    model, info, _, held = trained
    accuracy = ev.classifier_accuracy(model, held)
    for name in ("Black_Hair", "Blond_Hair", "Brown_Hair"):
        assert accuracy[name] >= 0.9, (name, accuracy, info)
    for name in ("Smiling", "Eyeglasses"):
        assert accuracy[name] >= 0.8, (name, accuracy, info)


class OracleV1:
    """Re-renders the synthetic face with the target attributes: a perfect translator."""

    def __init__(self, held, seed=SEED):
        self.seed = seed
        self.index = {}
        for image, name in zip(held.images, held.files):
            self.index[self._key(image)] = int(Path(name).stem) - 1

    @staticmethod
    def _key(image):
        return hashlib.sha1(image.tobytes()).hexdigest()

    def translate(self, crops, labels):
        out = []
        for crop, c in zip(crops, labels):
            index = self.index[self._key(crop)]
            hair = ["black", "blond", "brown"][int(np.argmax(c[:3]))] if c[:3].max() > 0 else None
            force = {"smile": bool(c[3] > 0.5), "glasses": bool(c[4] > 0.5)}
            if hair:
                force["hair"] = hair
            image = make_face(self.seed, index, 64, force=force)[1]
            self.index[self._key(image)] = index
            out.append(image)
        return np.stack(out)


class IdentityV1:
    def translate(self, crops, labels):
        return crops.copy()


def test_oracle_translations_score_high_and_identity_scores_low(trained):
    model, _, _, held = trained
    held = held.subset(np.arange(min(60, len(held))))
    oracle = ev.evaluate_v1(OracleV1(held), model, held)
    assert oracle["mean_target_accuracy"] >= 0.85, oracle
    assert min(oracle["target_accuracy"].values()) >= 0.7, oracle
    assert oracle["mean_untouched_kept"] >= 0.85, oracle
    assert oracle["reconstruction_l1"] < 0.03, oracle    # re-rendered source (JPEG vs raw only)

    identity = ev.evaluate_v1(IdentityV1(), model, held)
    for name in ("Smiling", "Eyeglasses"):   # flipped attributes: identity never shows them
        assert identity["target_accuracy"][name] <= 0.25, identity
    assert identity["mean_untouched_kept"] >= 0.85, identity
    assert identity["reconstruction_l1"] == 0.0
    # no-op hair targets are skipped: each hair target counts only faces of another colour
    hair_rows = held.labels[:, :3].argmax(1)
    assert identity["translations"]["Blond_Hair"] == int((hair_rows != 1).sum())


def test_v1_targets_follow_create_labels():
    c = np.array([[1, 0, 0, 1, 0]], np.float32)
    targets = ev.v1_targets(c, ATTRS, "attributes")
    assert targets[1].tolist() == [[0, 1, 0, 1, 0]]       # hair exclusive
    assert targets[3].tolist() == [[1, 0, 0, 0, 0]]       # smiling flipped
    assert targets[4].tolist() == [[1, 0, 0, 1, 1]]       # glasses flipped


# ---------------------------------------------------------------------------------------------
# End to end through the CLI with tiny random bundles (numbers meaningless, plumbing real).
def _tiny_v1(out: Path, names) -> Path:
    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.v1 import GeneratorV1

    torch.manual_seed(0)
    manifest = Manifest(arch="v1", image_size=32, domains=[Domain(n, default_aliases(n))
                                                             for n in names],
                        config=dict(conv_dim=8, c_dim=len(names), repeat_num=1, d_conv_dim=8,
                                    d_repeat_num=2), name="tiny-v1")
    write_bundle(out, manifest, {"generator": GeneratorV1(8, len(names), 1).state_dict()})
    return out


def _tiny_v2(out: Path, names) -> Path:
    from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
    from stargan_rt.models.v2 import GeneratorV2, MappingNetwork, StyleEncoder

    torch.manual_seed(0)
    config = dict(style_dim=16, latent_dim=8, max_conv_dim=32, w_hpf=0, dim_in=16, hidden_dim=32)
    manifest = Manifest(arch="v2", image_size=32, domains=[Domain(n, default_aliases(n))
                                                             for n in names],
                        config=config, name="tiny-v2")
    write_bundle(out, manifest, {
        "generator": GeneratorV2(32, 16, 32, 0, 16).state_dict(),
        "mapping_network": MappingNetwork(8, 16, len(names), 32).state_dict(),
        "style_encoder": StyleEncoder(32, 16, len(names), 32, 16).state_dict()})
    return out


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalsets")
    synthesize(root / "celeba", count=90, image_size=32, seed=1, workers=1)
    synthesize(root / "folders", count=90, image_size=32, seed=2, layout="folders", workers=1)
    return root


def test_eval_cli_v1_writes_table_and_json(tmp_path, cli, small_sets):
    model = _tiny_v1(tmp_path / "v1", ATTRS)
    report = tmp_path / "out" / "report.json"
    result = cli("eval", "--model", model, "--data", small_sets / "celeba", "--max-images", "12",
                 "--classifier-epochs", "1", "--report", report, "--samples",
                 tmp_path / "grid.png", "--quiet")
    assert result.code == 0, result
    assert "mean target accuracy" in result.out and "Eyeglasses" in result.out
    data = json.loads(report.read_text())
    assert data["arch"] == "v1" and data["held_out_images"] == 9   # 10 % of 90
    assert set(data["target_accuracy"]) == set(ATTRS)
    assert 0.0 <= data["mean_untouched_kept"] <= 1.0
    assert data["reconstruction_l1"] > 0
    assert (tmp_path / "grid.png").stat().st_size > 0

    # --test-data: translate every image of another set (here the folder-free CelebA set made
    # with another seed) instead of the held-out part
    other = tmp_path / "other"
    synthesize(other, count=7, image_size=32, seed=44, workers=1)
    result = cli("eval", "--model", model, "--data", small_sets / "celeba", "--test-data", other,
                 "--classifier-epochs", "1", "--report", report, "--quiet")
    assert result.code == 0, result
    data = json.loads(report.read_text())
    assert data["held_out_images"] == 7 and data["test_data"] == str(other)
    # a synthetic set carries its recipe: every edit is judged against its counterfactual
    fid = data["fidelity"]
    assert fid["overall"]["edits"] == sum(data["translations"].values())
    assert fid["overall"]["baseline_psnr"] > fid["overall"]["psnr"] > 0   # a random G
    assert "fidelity against the true counterfactual" in result.out
    assert set(data["realism"]["kid_x1000"]) <= set(ATTRS) and data["realism"]["kid_x1000"]


def test_classifier_cache_is_reused_only_for_the_same_data(tmp_path, small_sets):
    messages = []
    full = ev.load_celeba(small_sets / "celeba", ATTRS, 32)
    first, info = ev.cached_classifier(tmp_path / "clf.safetensors", full, 1, 30, 0,
                                       messages.append)
    assert (tmp_path / "clf.safetensors").is_file() and "cached" not in info
    again, info = ev.cached_classifier(tmp_path / "clf.safetensors", full, 1, 30, 0,
                                       messages.append)
    assert info["cached"] and "loaded from" in messages[-1]
    probe = full.images[:8]
    assert (ev.predict(first, probe, "attributes") == ev.predict(again, probe, "attributes")).all()
    fewer = full.subset(np.arange(40))
    ev.cached_classifier(tmp_path / "clf.safetensors", fewer, 1, 30, 0, messages.append)
    assert "retraining" in messages[-2] or "retraining" in " ".join(messages)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ev.UserError, match="not a classifier cache"):
        ev.cached_classifier(tmp_path / "junk.safetensors", full, 1, 30, 0, messages.append)


def test_eval_cli_v2_reports_diversity(tmp_path, cli, small_sets):
    model = _tiny_v2(tmp_path / "v2", ["black_hair", "blond_hair", "brown_hair"])
    report = tmp_path / "r.json"
    result = cli("eval", "--model", model, "--data", small_sets / "folders", "--max-images", "6",
                 "--classifier-epochs", "1", "--seeds", "2", "--report", report, "--quiet")
    assert result.code == 0, result
    data = json.loads(report.read_text())
    assert data["layout"] == "folders" and data["held_out_images"] == 6
    assert data["mean_diversity_l1"] > 0          # different seeds, different outputs
    assert data["reconstruction_l1"] > 0
    assert set(data["diversity_l1"]) == {"black_hair", "blond_hair", "brown_hair"}
    per = data["fidelity"]["per_target"]
    assert set(per) == {"black_hair", "blond_hair", "brown_hair"}
    assert sum(v["edits"] for v in per.values()) == sum(data["translations"].values())


def test_eval_bad_inputs_exit_2(tmp_path, cli, small_sets):
    v1 = _tiny_v1(tmp_path / "v1", ["Black_Hair", "Purple_Hair"])
    result = cli("eval", "--model", v1, "--data", small_sets / "celeba")
    assert result.code == 2 and "no attribute Purple_Hair" in result.err
    assert "valid: 5_o_Clock_Shadow" in result.err

    result = cli("eval", "--model", v1, "--data", tmp_path / "nowhere")
    assert result.code == 2 and "no such data directory" in result.err

    v2 = _tiny_v2(tmp_path / "v2", ["neutral", "smiling"])
    result = cli("eval", "--model", v2, "--data", small_sets / "folders")
    assert result.code == 2 and "no folder for the model's domain(s) neutral, smiling" in result.err

    result = cli("eval", "--model", v1, "--data", small_sets / "celeba", "--max-images", "0")
    assert result.code == 2 and "--max-images" in result.err

    result = cli("eval", "--model", v1, "--data", small_sets / "celeba", "--lpips", "x.pth")
    assert result.code == 2 and "--lpips-backbone" in result.err


def test_attribute_file_rows_must_match_images(tmp_path):
    root = tmp_path / "broken"
    synthesize(root, count=5, image_size=32, workers=1)
    (root / "images" / "000003.jpg").unlink()
    with pytest.raises(ev.UserError, match="1 of 5 rows name images missing"):
        ev.load_celeba(root, ATTRS, 32)
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join(["7"] + lines[1:]) + "\n")
    with pytest.raises(ev.UserError, match="line 1 says 7 images but the file has 5 rows"):
        ev.load_celeba(root, ATTRS, 32)


# ---------------------------------------------------------------------------------------------
# FID / LPIPS computations
def test_frechet_distance_closed_forms():
    d = 6
    eye = np.eye(d)
    assert metrics.frechet_distance(np.zeros(d), eye, np.zeros(d), eye) == pytest.approx(0, abs=1e-9)
    # N(0, I) vs N(1, 4I): |mu|^2 + d (1 + 4 - 2 * 2) = d + d
    assert metrics.frechet_distance(np.zeros(d), eye, np.ones(d), 4 * eye) == pytest.approx(2 * d)
    # symmetric also for covariances that do not commute
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * eye, b @ b.T + 0.1 * eye
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    forward = metrics.frechet_distance(m1, s1, m2, s2)
    assert forward == pytest.approx(metrics.frechet_distance(m2, s2, m1, s1), rel=1e-7)
    # tr sqrt(S1 S2) cross-checked against the eigenvalues of S1 S2 (real, non-negative)
    cross = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    expected = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * cross)
    assert forward == pytest.approx(expected, rel=1e-6)


def _random_feature_net():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()

    def features(images):
        with torch.no_grad():
            return net(metrics._to_unit(images)).double().numpy()
    return features


def test_fid_with_a_small_random_network():
    features = _random_feature_net()
    faces = np.stack([make_face(4, i, 32)[1] for i in range(120)])
    others = np.stack([make_face(5, i, 32)[1] for i in range(120)])
    same = metrics.fid_from_features(features(faces), features(faces))
    assert same == pytest.approx(0, abs=1e-6)
    fresh = metrics.fid_from_features(features(faces), features(others))   # same distribution
    shifted = np.clip(faces.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    moved = metrics.fid_from_features(features(faces), features(shifted))
    assert moved > 0 and moved > 3 * fresh, (fresh, moved)


def test_lpips_computation_and_loading(tmp_path):
    from safetensors.torch import save_file

    from stargan_train.nets_metrics import AlexNetFeatures, LPIPS_ALEX_CHANNELS

    torch.manual_seed(0)
    backbone = AlexNetFeatures()
    torch.save(backbone.state_dict(), tmp_path / "alex.pth")
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1)
           for k, c in enumerate(LPIPS_ALEX_CHANNELS)}
    save_file(lin, str(tmp_path / "lin.safetensors"))
    distance = metrics.lpips_fn(tmp_path / "lin.safetensors", tmp_path / "alex.pth")
    a = np.stack([make_face(6, i, 64)[1] for i in range(4)])
    b = np.stack([make_face(7, i, 64)[1] for i in range(4)])
    noise = np.random.default_rng(0).normal(0, 1, a.shape)
    slight = np.clip(a + 4 * noise, 0, 255).astype(np.uint8)
    strong = np.clip(a + 40 * noise, 0, 255).astype(np.uint8)
    assert np.allclose(distance(a, a), 0, atol=1e-7)
    assert np.allclose(distance(a, b), distance(b, a), rtol=1e-5)
    assert (distance(a, slight) < distance(a, strong)).all()
    assert (distance(a, b) > 0).all()
    with pytest.raises(ev.UserError, match="not LPIPS v0.1 AlexNet linear weights"):
        metrics.lpips_fn(tmp_path / "alex.pth", tmp_path / "alex.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ev.UserError, match="cannot load as plain weights"):
        metrics.lpips_fn(tmp_path / "lin.safetensors", tmp_path / "junk.pth")


def test_inception_features_load_by_name(tmp_path):
    from safetensors.torch import save_file

    from stargan_train.nets_metrics import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3()
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(tmp_path / "inception.safetensors"))
    features = metrics.inception_features_fn(tmp_path / "inception.safetensors")
    out = features(np.stack([make_face(8, i, 64)[1] for i in range(2)]))
    assert out.shape == (2, 2048) and np.isfinite(out).all()
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ev.UserError, match="not pytorch-fid Inception v3 weights"):
        metrics.inception_features_fn(tmp_path / "wrong.pth")
