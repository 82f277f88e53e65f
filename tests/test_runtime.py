"""The runtime Translator: same interface and outputs as the PyTorch reference, target choice,
cached styles, and a deployed device without torch."""
from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine_bundles import SIZE, tiny_v1, tiny_v2
from stargan_rt.errors import UserError
from stargan_rt.latents import latent_for_seed
from stargan_rt.runtime import Translator
from stargan_rt.targets import resolve_target

CPU_TARGETS = ["openvino", "onnxruntime"]


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {"v1": tiny_v1(root / "v1"), "v2": tiny_v2(root / "v2"),
            "v1-no-d": tiny_v1(root / "v1-no-d", discriminator=False)}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def faces():
    from stargan_rt.export.calibration import synthetic_faces

    return synthetic_faces(SIZE, 6, seed=3)


def test_same_interface_as_the_reference():
    from stargan_rt.reference import TorchTranslator

    wanted = {n for n in dir(TorchTranslator) if not n.startswith("_")} - {"translate_float"}
    assert wanted <= set(dir(Translator)), wanted - set(dir(Translator))
    for name in ("set_domain", "set_labels", "set_style", "__call__"):
        ours = list(inspect.signature(getattr(Translator, name)).parameters)
        theirs = list(inspect.signature(getattr(TorchTranslator, name)).parameters)
        assert ours == theirs, name


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_v1_matches_the_reference(target, bundles, cache_dir, faces):
    from stargan_rt.reference import TorchTranslator

    engine = Translator.create(bundles["v1"], target=target, cache_dir=cache_dir, log=quiet)
    reference = TorchTranslator(bundles["v1"])
    assert (engine.arch, engine.image_size, engine.domains) == (
        reference.arch, reference.image_size, reference.domains)
    assert engine.target == target and target in engine.describe()
    for choose in (lambda t: t.set_labels([1, 0, 1]), lambda t: t.set_domain("blond")):
        choose(engine)
        choose(reference)
        ours, theirs = engine(faces), reference(faces)
        assert ours.dtype == np.uint8 and ours.shape == faces.shape
        assert np.abs(ours.astype(int) - theirs).max() <= 2
    # Hair colours are exclusive, the other attributes are the source's (classifier) ones.
    labels = engine._v1_labels(faces)
    assert (labels[:, 1] == 1).all() and (labels[:, 0] == 0).all()
    np.testing.assert_array_equal(labels[:, 2], engine.source_labels(faces)[:, 2])


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_v2_matches_the_reference_and_caches_styles(target, bundles, cache_dir, faces):
    import torch

    from stargan_rt.models.build import load_network
    from stargan_rt.reference import TorchTranslator

    engine = Translator.create(bundles["v2"], target=target, cache_dir=cache_dir, log=quiet)
    engine.set_domain("smile")
    engine.set_style(seed=5)
    calls = []
    mapping = engine.engines["mapping_network"]
    original = mapping.run
    mapping.run = lambda feeds: calls.append(1) or original(feeds)
    first, second = engine(faces[:3]), engine(faces)
    assert len(calls) == 1, "the style must be computed once and cached"
    np.testing.assert_array_equal(first, second[:3])

    net = load_network(engine.bundle, "mapping_network")
    y = torch.tensor([1])
    with torch.no_grad():
        want = net(torch.from_numpy(latent_for_seed(5, 8)), y).numpy()
    np.testing.assert_allclose(engine.style(), want, atol=1e-4)

    # Same style on both sides -> same frames.
    reference = TorchTranslator(bundles["v2"])
    reference.set_domain("smile")
    reference._style = torch.from_numpy(engine.style())
    assert np.abs(engine(faces).astype(int) - reference(faces)).max() <= 2

    # Truncation: lerp from the domain's mean style (over 10,000 latents) toward the style.
    engine.set_style(seed=5, psi=0.5)
    with torch.no_grad():
        z = torch.from_numpy(latent_for_seed(0, 8, 10_000))
        mean = net(z, y.expand(len(z))).mean(0, keepdim=True).numpy()
    np.testing.assert_allclose(engine.style(), mean + 0.5 * (want - mean), atol=1e-4)

    # Reference-guided: the style encoder on the reference image.
    engine.set_style(ref_bgr=faces[2])
    encoder = load_network(engine.bundle, "style_encoder")
    from stargan_rt.imaging import bgr_to_unit_nchw
    with torch.no_grad():
        want_ref = encoder(torch.from_numpy(bgr_to_unit_nchw(faces[2:3])), y).numpy()
    np.testing.assert_allclose(engine.style(), want_ref, atol=1e-4)


def test_auto_target_says_which_and_why():
    said = []
    chosen = resolve_target("auto", said.append)
    from stargan_rt.targets import probe_all

    first = next(s.name for s in probe_all() if s.available)
    assert chosen == first
    assert said and said[0].startswith(f"target auto -> {first}")
    if first != "tensorrt":
        assert "tensorrt:" in said[0]  # why TensorRT was skipped


def test_targets_that_are_unknown_or_not_installed(monkeypatch):
    from stargan_rt import targets

    with pytest.raises(UserError, match="unknown target"):
        resolve_target("cuda-magic")
    monkeypatch.setitem(targets.PROBES, "openvino",
                        lambda: targets.TargetStatus("openvino", False, detail="not installed"))
    with pytest.raises(UserError, match="pip install openvino"):
        resolve_target("openvino")
    if not targets.probe("tensorrt").available:
        with pytest.raises(UserError, match="stargan-rt\\[tensorrt\\]"):
            resolve_target("tensorrt")


def test_bad_requests(bundles, cache_dir, faces):
    engine = Translator.create(bundles["v1-no-d"], target="onnxruntime", cache_dir=cache_dir,
                               log=quiet)
    with pytest.raises(UserError, match="no discriminator"):
        engine.set_domain("smiling")
    engine.set_labels([0, 1, 1])
    with pytest.raises(UserError, match="uint8 crops"):
        engine(faces.astype(np.float32))
    with pytest.raises(UserError, match="expected 3 labels"):
        engine.set_labels([1, 0])
    with pytest.raises(UserError, match="v2 models only"):
        engine.set_style(seed=1)
    assert engine(faces[:0]).shape == (0, SIZE, SIZE, 3)


def test_translator_closes_its_engines(bundles, cache_dir, faces):
    with Translator.create(bundles["v1"], target="onnxruntime", cache_dir=cache_dir,
                           log=quiet) as engine:
        engine.set_labels([1, 0, 0])
        assert engine(faces[:1]).shape == (1, SIZE, SIZE, 3)
    with pytest.raises(UserError, match="closed"):
        engine(faces[:1])


def test_missing_network_is_a_user_error(bundles, cache_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundles["v1"], broken)
    (broken / "generator.safetensors").unlink()
    with pytest.raises(UserError, match="generator"):
        Translator.create(broken, target="onnxruntime", cache_dir=tmp_path / "c", log=quiet)


def test_deployed_device_needs_no_torch(bundles, cache_dir, tmp_path):
    """With the exported graphs cached, a process that cannot import torch builds and runs."""
    Translator.create(bundles["v1"], target="onnxruntime", cache_dir=cache_dir, log=quiet)
    code = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed on this device")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from stargan_rt.errors import UserError
        from stargan_rt.runtime import Translator
        t = Translator.create({str(bundles["v1"])!r}, target="openvino",
                              cache_dir={str(cache_dir)!r}, log=lambda m: None)
        t.set_labels([1, 0, 0])
        out = t(np.zeros((2, {SIZE}, {SIZE}, 3), np.uint8))
        assert out.shape == (2, {SIZE}, {SIZE}, 3)
        try:
            Translator.create({str(bundles["v1"])!r}, target="openvino",
                              cache_dir={str(tmp_path / "empty")!r}, log=lambda m: None)
        except UserError as exc:
            print("REFUSED:", exc)
        assert "torch" not in sys.modules
        print("OK")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout
    assert "REFUSED:" in done.stdout and "stargan-rt[export]" in done.stdout


def test_v2_with_fan_returns_its_landmarks(tmp_path, cache_dir, bundles):
    """A w_hpf model's FAN engine also returns the 98 landmarks the live runtime aligns crops
    with; they equal the PyTorch FAN's, and the translation is the same with or without them."""
    import torch

    from export_testlib import faces as face_crops
    from export_testlib import v2_bundle
    from stargan_rt.imaging import bgr_to_unit_nchw
    from stargan_rt.models.build import load_network

    bundle = v2_bundle(tmp_path, 1)
    engine = Translator.create(bundle, target="onnxruntime", cache_dir=cache_dir, log=quiet)
    assert engine.locates_landmarks
    engine.set_domain("male")
    engine.set_style(seed=1)
    crops = face_crops(64, 3)
    translated, landmarks = engine.translate_and_locate(crops)
    assert translated.shape == crops.shape and landmarks.shape == (3, 98, 3)
    np.testing.assert_array_equal(translated, engine(crops))
    fan = load_network(engine.bundle, "fan")
    with torch.no_grad():
        want = fan.masks_and_landmarks(torch.from_numpy(bgr_to_unit_nchw(crops)))[2].numpy()
    np.testing.assert_allclose(landmarks, want, atol=0.05)

    plain = Translator.create(bundles["v2"], target="onnxruntime", cache_dir=cache_dir, log=quiet)
    plain.set_domain("smile")
    assert not plain.locates_landmarks
    assert plain.translate_and_locate(face_crops(SIZE, 2))[1] is None
