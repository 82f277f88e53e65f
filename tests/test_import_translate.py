"""Official-format checkpoints -> `stargan-rt import` -> bundle -> `stargan-rt translate`.

Checkpoints are written exactly as the official code saves them (plain state dicts with the
official key names; v2 a dict of them), from random weights.
"""
import json
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from stargan_rt.bundle import Bundle
from stargan_rt.latents import latent_for_seed
from stargan_rt.models import (FAN, DiscriminatorV1, GeneratorV1, GeneratorV2, MappingNetwork,
                               StyleEncoder)

V1_ATTRS = "Black_Hair,Blond_Hair,Brown_Hair,Smiling,Eyeglasses"


def randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if not p.dtype.is_floating_point or name.endswith("filter"):
                continue
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif "running_var" in name or name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.4 + 0.8)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module.eval()


def face_like(size, seed=0):
    """A smooth image (not noise): a bright ellipse on a gradient."""
    rng = np.random.RandomState(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = np.linspace(40, 200, size, dtype=np.uint8)[:, None, None]
    cv2.ellipse(img, (size // 2, size // 2), (size // 3, size // 2 - 4), 0, 0, 360,
                tuple(int(v) for v in rng.randint(120, 230, 3)), -1)
    return cv2.GaussianBlur(img, (5, 5), 1.5)


def to_tensor(bgr):
    return torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(t):
    return ((t[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()[..., ::-1]


@pytest.fixture(scope="module")
def v1_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1")
    g = randomise(GeneratorV1(conv_dim=8, c_dim=5, repeat_num=2), 1)
    d = randomise(DiscriminatorV1(32, conv_dim=8, c_dim=5, repeat_num=5), 2)
    torch.save(g.state_dict(), root / "1000-G.ckpt")
    torch.save(d.state_dict(), root / "1000-D.ckpt")
    return root, g, d


@pytest.fixture(scope="module")
def v2_ckpt(tmp_path_factory):
    """Small v2 (64 px, w_hpf 1) saved like the released CelebA-HQ file: no hpf.filter, FAN."""
    root = tmp_path_factory.mktemp("v2")
    g = randomise(GeneratorV2(64, style_dim=16, max_conv_dim=64, w_hpf=1, dim_in=16), 3)
    f = randomise(MappingNetwork(8, 16, 2, hidden_dim=32), 4)
    e = randomise(StyleEncoder(64, 16, 2, 64, dim_in=16), 5)
    fan = randomise(FAN(), 6)
    g_state = g.state_dict()
    del g_state["hpf.filter"]
    torch.save({"generator": g_state, "mapping_network": f.state_dict(),
                "style_encoder": e.state_dict()}, root / "100000_nets_ema.ckpt")
    torch.save({"state_dict": {**fan.state_dict(), "extra.unused": torch.zeros(1)}},
               root / "wing.ckpt")
    return root, g, f, e, fan


def test_v1_import_infers_shape_and_translates_like_the_model(v1_ckpt, tmp_path, cli):
    root, g, d = v1_ckpt
    result = cli("import", root / "1000-G.ckpt", "--out", tmp_path / "b", "--domains", V1_ATTRS)
    assert result.code == 0, result
    manifest = Bundle.open(tmp_path / "b").manifest
    assert manifest.arch == "v1" and manifest.image_size == 32  # from the -D.ckpt
    assert manifest.config["c_dim"] == 5 and manifest.config["repeat_num"] == 2
    assert set(manifest.networks) == {"generator", "discriminator"}
    assert len(manifest.source["files"]) == 2

    img = face_like(32)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    result = cli("translate", "--model", tmp_path / "b", "--out", tmp_path / "o",
                 "--labels", "Black_Hair=0,Blond_Hair=1,Brown_Hair=0,Smiling=1,Eyeglasses=0",
                 tmp_path / "in.png")
    assert result.code == 0, result
    out = cv2.imread(str(tmp_path / "o" / "in.png"))
    with torch.no_grad():
        expected = to_uint8(g(to_tensor(img), torch.tensor([[0, 1, 0, 1, 0.0]])))
    assert np.abs(out.astype(int) - expected).max() <= 1

    # --domain keeps the other attributes as the discriminator's classifier sees them
    result = cli("translate", "--model", tmp_path / "b", "--out", tmp_path / "o2",
                 "--domain", "smile", tmp_path / "in.png")
    assert result.code == 0, result
    with torch.no_grad():
        source = (d(to_tensor(img))[1] > 0).float()
        source[0, 3] = 1
        expected = to_uint8(g(to_tensor(img), source))
    out = cv2.imread(str(tmp_path / "o2" / "in.png"))
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_v1_hair_colour_is_exclusive(v1_ckpt, tmp_path, cli):
    from stargan_rt.reference import TorchTranslator
    root, _, _ = v1_ckpt
    assert cli("import", root / "1000-G.ckpt", "--out", tmp_path / "b",
               "--domains", V1_ATTRS).code == 0
    t = TorchTranslator(tmp_path / "b")
    t.set_domain("blond")
    labels = t._v1_targets(to_tensor(face_like(32)))
    assert labels[0, :3].tolist() == [0, 1, 0]


def test_v2_import_supplies_filter_takes_fan_and_translates(v2_ckpt, tmp_path, cli):
    root, g, f, e, fan = v2_ckpt
    result = cli("import", root / "100000_nets_ema.ckpt", "--out", tmp_path / "b",
                 "--domains", "female,male", "--fan", root / "wing.ckpt")
    assert result.code == 0, result
    assert "hpf.filter" in result.out
    manifest = Bundle.open(tmp_path / "b").manifest
    assert manifest.image_size == 64 and manifest.config["w_hpf"] == 1
    assert manifest.config["dim_in"] == 16 and manifest.config["latent_dim"] == 8

    img, ref = face_like(64, 1), face_like(64, 2)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    cv2.imwrite(str(tmp_path / "ref.png"), ref)
    result = cli("translate", "--model", tmp_path / "b", "--out", tmp_path / "o",
                 "--domain", "Male", "--ref", tmp_path / "ref.png", tmp_path / "in.png")
    assert result.code == 0, result
    with torch.no_grad():
        x = to_tensor(img)
        expected = to_uint8(g(x, e(to_tensor(ref), torch.tensor([1])), fan.face_masks(x)))
    out = cv2.imread(str(tmp_path / "o" / "in.png"))
    assert np.abs(out.astype(int) - expected).max() <= 1

    result = cli("translate", "--model", tmp_path / "b", "--out", tmp_path / "s",
                 "--domain", "female", "--seed", "7", tmp_path / "in.png")
    assert result.code == 0, result
    with torch.no_grad():
        z = torch.from_numpy(latent_for_seed(7, 8))
        expected = to_uint8(g(x, f(z, torch.tensor([0])), fan.face_masks(x)))
    out = cv2.imread(str(tmp_path / "s" / "in.png"))
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_v2_truncation_moves_toward_mean_style(v2_ckpt, tmp_path, cli):
    from stargan_rt.reference import TorchTranslator
    root = v2_ckpt[0]
    assert cli("import", root / "100000_nets_ema.ckpt", "--out", tmp_path / "b",
               "--domains", "female,male", "--fan", root / "wing.ckpt").code == 0
    t = TorchTranslator(tmp_path / "b")
    t.set_domain("male")
    styles = {}
    for psi in (1.0, 0.5, 0.0):
        t.set_style(seed=3, psi=psi)
        styles[psi] = t.style()
    torch.testing.assert_close(styles[0.5], (styles[1.0] + styles[0.0]) / 2, atol=1e-5,
                               rtol=1e-4)


def test_v2_full_size_w_hpf0_three_domains(tmp_path, cli):
    """AFHQ-like official size: 256 px, w_hpf 0, 3 domains, no FAN."""
    g = randomise(GeneratorV2(256, w_hpf=0), 7)
    f = randomise(MappingNetwork(num_domains=3), 8)
    e = randomise(StyleEncoder(256, num_domains=3), 9)
    torch.save({"generator": g.state_dict(), "mapping_network": f.state_dict(),
                "style_encoder": e.state_dict()}, tmp_path / "100000_nets_ema.ckpt")
    result = cli("import", tmp_path / "100000_nets_ema.ckpt", "--out", tmp_path / "b",
                 "--domains", "cat,dog,wild")
    assert result.code == 0, result
    m = Bundle.open(tmp_path / "b").manifest
    assert (m.image_size, m.config["w_hpf"], m.config["dim_in"]) == (256, 0, None)
    img = face_like(256)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    assert cli("translate", "--model", tmp_path / "b", "--out", tmp_path / "o", "--domain",
               "wild", "--seed", "1", tmp_path / "in.png").code == 0
    with torch.no_grad():
        z = torch.from_numpy(latent_for_seed(1, 16))
        expected = to_uint8(g(to_tensor(img), f(z, torch.tensor([2]))))
    out = cv2.imread(str(tmp_path / "o" / "in.png"))
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_module_prefix_is_stripped(v1_ckpt, tmp_path, cli):
    root, g, _ = v1_ckpt
    torch.save({f"module.{k}": v for k, v in g.state_dict().items()}, tmp_path / "5-G.ckpt")
    result = cli("import", tmp_path / "5-G.ckpt", "--out", tmp_path / "b",
                 "--domains", V1_ATTRS, "--image-size", "32")
    assert result.code == 0, result


def test_v1_generator_only_import_attributes_or_classes(v1_ckpt, tmp_path, cli):
    """Without its -D.ckpt an attribute model refuses --domain (give --labels); imported with
    --classes (RaFD-style exclusive domains) --domain X is X on and the others off."""
    from stargan_rt.reference import TorchTranslator
    root, g, _ = v1_ckpt
    torch.save(g.state_dict(), tmp_path / "7-G.ckpt")  # no -D.ckpt beside it
    common = ["--domains", V1_ATTRS, "--image-size", "32"]
    assert cli("import", tmp_path / "7-G.ckpt", "--out", tmp_path / "attrs", *common).code == 0
    cv2.imwrite(str(tmp_path / "face.png"), face_like(32))
    result = cli("translate", "--model", tmp_path / "attrs", "--domain", "smile", "--out",
                 tmp_path / "o", tmp_path / "face.png")
    assert result.code == 2 and "--labels" in result.err, result
    assert cli("import", tmp_path / "7-G.ckpt", "--out", tmp_path / "classes", "--classes",
               *common).code == 0
    t = TorchTranslator(tmp_path / "classes")
    t.set_domain("blond")
    labels = t._v1_targets(to_tensor(face_like(32)).repeat(2, 1, 1, 1))
    assert labels.tolist() == [[0, 1, 0, 0, 0]] * 2


# -- bad input: one-line error, exit 2, nothing written ------------------------------------------
def assert_refused(result, *phrases, out_dir=None):
    assert result.code == 2, result
    assert result.err.count("\n") == 1, result.err  # one line
    for phrase in phrases:
        assert phrase in result.err, result.err
    if out_dir is not None:
        assert not out_dir.exists()
        assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}")]


def test_truncated_checkpoint(v1_ckpt, tmp_path, cli):
    data = (v1_ckpt[0] / "1000-G.ckpt").read_bytes()
    (tmp_path / "9-G.ckpt").write_bytes(data[: len(data) // 2])
    assert_refused(cli("import", tmp_path / "9-G.ckpt", "--out", tmp_path / "b",
                       "--domains", V1_ATTRS), "truncated or corrupt", out_dir=tmp_path / "b")


def test_not_a_checkpoint(tmp_path, cli):
    (tmp_path / "notes.ckpt").write_text("hello, not a checkpoint\n")
    assert_refused(cli("import", tmp_path / "notes.ckpt", "--out", tmp_path / "b"),
                   "notes.ckpt", out_dir=tmp_path / "b")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_without_running(tmp_path, cli):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil-G.ckpt", "wb") as handle:
        pickle.dump({"main.0.weight": RunsCode(marker)}, handle)
    torch.save({"main.0.weight": RunsCode(marker)}, tmp_path / "evil2-G.ckpt")
    for name in ("evil-G.ckpt", "evil2-G.ckpt"):
        result = cli("import", tmp_path / name, "--out", tmp_path / "b", "--domains", V1_ATTRS)
        assert_refused(result, "refused", "never runs", out_dir=tmp_path / "b")
    assert not marker.exists()


def test_wrong_arch_flag(v1_ckpt, tmp_path, cli):
    assert_refused(cli("import", v1_ckpt[0] / "1000-G.ckpt", "--out", tmp_path / "b",
                       "--arch", "v2", "--domains", V1_ATTRS), "--arch v1",
                   out_dir=tmp_path / "b")


def test_domains_required_and_counted(v1_ckpt, v2_ckpt, tmp_path, cli):
    assert_refused(cli("import", v1_ckpt[0] / "1000-G.ckpt", "--out", tmp_path / "b"),
                   "--domains", "5 names", out_dir=tmp_path / "b")
    assert_refused(cli("import", v2_ckpt[0] / "100000_nets_ema.ckpt", "--out", tmp_path / "b",
                       "--domains", "a,b,c", "--fan", v2_ckpt[0] / "wing.ckpt"),
                   "exactly 2", out_dir=tmp_path / "b")


def test_v2_needs_fan_when_w_hpf_positive(v2_ckpt, tmp_path, cli):
    assert_refused(cli("import", v2_ckpt[0] / "100000_nets_ema.ckpt", "--out", tmp_path / "b",
                       "--domains", "female,male"), "--fan", out_dir=tmp_path / "b")
    assert_refused(cli("import", v2_ckpt[0] / "100000_nets_ema.ckpt", "--out", tmp_path / "b",
                       "--domains", "female,male", "--fan", v2_ckpt[0] / "wing.ckpt",
                       "--w-hpf", "0"), "--w-hpf", out_dir=tmp_path / "b")


def test_shape_mismatch_names_keys_and_setting(v1_ckpt, tmp_path, cli):
    state = v1_ckpt[1].state_dict()
    state["main.3.weight"] = torch.zeros(16, 8, 3, 3)
    torch.save(state, tmp_path / "7-G.ckpt")
    assert_refused(cli("import", tmp_path / "7-G.ckpt", "--out", tmp_path / "b",
                       "--domains", V1_ATTRS), "main.3.weight", "probably wrong",
                   out_dir=tmp_path / "b")


@pytest.fixture
def v1_bundle(v1_ckpt, tmp_path, cli):
    assert cli("import", v1_ckpt[0] / "1000-G.ckpt", "--out", tmp_path / "b",
               "--domains", V1_ATTRS).code == 0
    return tmp_path / "b"


def test_unknown_domain_lists_known(v1_bundle, tmp_path, cli):
    cv2.imwrite(str(tmp_path / "in.png"), face_like(32))
    result = cli("translate", "--model", v1_bundle, "--out", tmp_path / "o", "--domain",
                 "Bald", tmp_path / "in.png")
    assert_refused(result, "Bald", "Smiling", "Eyeglasses", out_dir=tmp_path / "o")


def test_unreadable_image_writes_nothing(v1_bundle, tmp_path, cli):
    cv2.imwrite(str(tmp_path / "good.png"), face_like(32))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = cli("translate", "--model", v1_bundle, "--out", tmp_path / "o", "--domain", "smile",
                 tmp_path / "good.png", tmp_path / "bad.png")
    assert_refused(result, "bad.png", "cannot decode", out_dir=tmp_path / "o")


def test_newer_bundle_schema_is_refused(v1_bundle, tmp_path, cli):
    manifest = json.loads((v1_bundle / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (v1_bundle / "manifest.json").write_text(json.dumps(manifest))
    cv2.imwrite(str(tmp_path / "in.png"), face_like(32))
    assert_refused(cli("translate", "--model", v1_bundle, "--out", tmp_path / "o", "--domain",
                       "smile", tmp_path / "in.png"), "schema version 99", "upgrade",
                   out_dir=tmp_path / "o")


def test_existing_bundle_not_overwritten_without_force(v1_ckpt, v1_bundle, cli):
    before = (v1_bundle / "manifest.json").read_text()
    result = cli("import", v1_ckpt[0] / "1000-G.ckpt", "--out", v1_bundle, "--domains", V1_ATTRS)
    assert result.code == 2 and "--force" in result.err
    assert (v1_bundle / "manifest.json").read_text() == before
    assert cli("import", v1_ckpt[0] / "1000-G.ckpt", "--out", v1_bundle, "--domains", V1_ATTRS,
               "--force").code == 0
