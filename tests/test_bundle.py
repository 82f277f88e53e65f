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
    with pytest.raises(OSError):
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
