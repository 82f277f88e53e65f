"""Bundle manifest, domain aliases, atomic writes."""
import pytest
import torch

from stargan_rt import bundle as bundle_mod
from stargan_rt.bundle import Bundle, Domain, Manifest, default_aliases, write_bundle
from stargan_rt.errors import UserError
from stargan_rt.models import GeneratorV1


def small_manifest():
    names = ["Black_Hair", "Blond_Hair", "Smiling"]
    return Manifest(arch="v1", image_size=32,
                    domains=[Domain(n, default_aliases(n)) for n in names],
                    config={"conv_dim": 8, "c_dim": 3, "repeat_num": 1, "d_conv_dim": 8,
                            "d_repeat_num": 5})


def test_round_trip_and_aliases(tmp_path):
    g = GeneratorV1(8, 3, 1)
    b = write_bundle(tmp_path / "b", small_manifest(), {"generator": g.state_dict()})
    again = Bundle.open(tmp_path / "b")
    assert again.manifest.domain_names == ["Black_Hair", "Blond_Hair", "Smiling"]
    assert again.domain_index("smile") == 2 and again.domain_index("SMILING") == 2
    assert again.domain_index("blonde") == 1 and again.domain_index("black hair") == 0
    state = again.state_dict("generator")
    assert all(torch.equal(state[k], v) for k, v in g.state_dict().items())
    assert b.content_hash == again.content_hash


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(UserError, match="disk is full"):
        write_bundle(tmp_path / "b", small_manifest(), {"generator": GeneratorV1(8, 3, 1).state_dict()})
    assert list(tmp_path.iterdir()) == []


def test_tampered_weights_detected(tmp_path):
    write_bundle(tmp_path / "b", small_manifest(), {"generator": GeneratorV1(8, 3, 1).state_dict()})
    path = tmp_path / "b" / "generator.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        Bundle.open(tmp_path / "b").state_dict("generator")


def test_not_a_bundle(tmp_path):
    with pytest.raises(UserError, match="not a stargan-rt bundle"):
        Bundle.open(tmp_path)
    assert bundle_mod.SCHEMA_VERSION >= 1


def test_set_config_adds_entries_to_a_bundle_on_disk(tmp_path):
    import shutil

    from stargan_rt.bundle import set_config
    from stargan_rt.defaults import DEMO_MODELS

    copy = shutil.copytree(DEMO_MODELS["v2"], tmp_path / "demo")
    before = Bundle.open(copy)
    after = set_config(copy, crop_scale=1.6, crop_shift=-0.1)
    assert after.manifest.config == {**before.manifest.config, "crop_scale": 1.6,
                                     "crop_shift": -0.1}
    assert Bundle.open(copy).manifest.networks == before.manifest.networks
    assert not list(copy.glob("*.tmp")) and not list(copy.glob(".*"))


def test_labels_are_parsed_once_for_every_verb(tmp_path):
    from stargan_rt.defaults import DEMO_MODELS

    bundle = Bundle.open(DEMO_MODELS["v1"])
    text = "black=0,Blond_Hair=1,brown_hair=0,smile=1,glasses=0"   # names or aliases
    assert bundle.parse_labels(text) == [0.0, 1.0, 0.0, 1.0, 0.0]
    with pytest.raises(UserError, match="missing: Eyeglasses"):
        bundle.parse_labels("black=0,blond=1,brown=0,smile=1")
    with pytest.raises(UserError, match="not NAME=0 or NAME=1"):
        bundle.parse_labels("black=2")
