"""Issue #11, attacked as an adversary would: hostile manifests and checkpoints, --resume on
what is not a run, numbers out of range, full disks and read-only targets, huge images, broken
engine caches. Each test carries the probe that found the problem. Every refusal is one line on
stderr, exit 2, and leaves nothing half-written."""
from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stargan_rt.bundle import Bundle, Domain, Manifest, default_aliases, write_bundle
from stargan_rt.errors import UserError
from stargan_rt.models import GeneratorV1

ATTRS = ["Black_Hair", "Blond_Hair", "Smiling"]


def refused(result, *phrases):
    assert result.code == 2, result
    assert result.err.count("\n") == 1, result.err  # one line
    assert "Traceback" not in result.err
    for phrase in phrases:
        assert phrase in result.err, result.err


def small_bundle(path: Path) -> Path:
    manifest = Manifest(arch="v1", image_size=32,
                        domains=[Domain(n, default_aliases(n)) for n in ATTRS],
                        config={"conv_dim": 8, "c_dim": 3, "repeat_num": 1, "d_conv_dim": 8,
                                "d_repeat_num": 5, "labels": "classes"})
    write_bundle(path, manifest, {"generator": GeneratorV1(8, 3, 1).state_dict()})
    return path


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    return small_bundle(tmp_path_factory.mktemp("good") / "b")


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), np.full((32, 32, 3), 128, np.uint8))
    return path


def tampered(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    change(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


# -- 5, 6: manifests -----------------------------------------------------------------------------
def _set(*path_and_value):
    *path, value = path_and_value

    def change(m):
        for key in path[:-1]:
            m = m[key]
        m[path[-1]] = value
    return change


def _drop(*path):
    def change(m):
        for key in path[:-1]:
            m = m[key]
        del m[path[-1]]
    return change


MANIFEST_PROBES = [
    (_set("networks", "generator", "generator.safetensors"), "networks.generator"),
    (_set("networks", "generator", "file", 5), "networks.generator.file"),
    (_set("networks", "generator", "file", "../../outside/x.safetensors"),
     "networks.generator.file"),
    (_set("networks", "generator", "file", "/etc/passwd"), "networks.generator.file"),
    (_set("networks", "generator", "sha256", None), "networks.generator.sha256"),
    (_set("config", "conv_dim", "16"), "config.conv_dim"),
    (_drop("config", "conv_dim"), "config.conv_dim"),
    (_set("config", "c_dim", 7), "config.c_dim"),
    (_set("config", "crop_scale", float("nan")), "config.crop_scale"),
    (_set("image_size", 63), "image_size"),
    (_set("image_size", 0), "image_size"),
    (_set("image_size", True), "image_size"),
    (_set("domains", "Smiling"), "domains"),
    (_set("domains", 0, "name", 3), "domains[0].name"),
    (_set("arch", "v3"), "arch"),
    (_set("config", "[]"), "config"),
]


@pytest.mark.parametrize("change,field", MANIFEST_PROBES)
def test_manifest_field_is_named(good_bundle, tmp_path, change, field):
    bad = tampered(good_bundle, tmp_path / "bad", change)
    with pytest.raises(UserError, match=f"manifest field {field.replace('[', '.').replace(']', '.')} "):
        Bundle.open(bad)


@pytest.mark.parametrize("verb", ["translate", "build", "webcam"])
def test_bad_manifest_is_one_line_in_every_verb(good_bundle, tmp_path, image, cli, verb):
    bad = tampered(good_bundle, tmp_path / "bad", _set("config", "conv_dim", "16"))
    args = {"translate": ["--out", tmp_path / "o", "--domain", "smile", image],
            "build": ["--cache-dir", tmp_path / "cache", "--target", "onnxruntime"],
            "webcam": ["--source", image, "--headless", "--max-frames", "1",
                       "--cache-dir", tmp_path / "cache"]}[verb]
    refused(cli(verb, "--model", bad, *args), "config.conv_dim", '"16"')
    assert not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()


def test_weights_outside_the_bundle_are_never_read(good_bundle, tmp_path, image, cli):
    """Probe: `file` = ../../outside/x.safetensors with a matching sha256 was loaded."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(good_bundle / "generator.safetensors", outside / "x.safetensors")
    (tmp_path / "deep").mkdir()
    bad = tampered(good_bundle, tmp_path / "deep" / "bad",
                   _set("networks", "generator", "file", "../../outside/x.safetensors"))
    refused(cli("translate", "--model", bad, "--out", tmp_path / "o", "--domain", "smile", image),
            "networks.generator.file", "inside the bundle directory")
    # a symlink inside the bundle that leads outside is refused as well
    link = tmp_path / "linked"
    shutil.copytree(good_bundle, link)
    (link / "generator.safetensors").unlink()
    (link / "generator.safetensors").symlink_to(outside / "x.safetensors")
    refused(cli("translate", "--model", link, "--out", tmp_path / "o", "--domain", "smile", image),
            "outside the bundle directory")
    assert not (tmp_path / "o").exists()


def test_weights_that_disagree_with_the_manifest_name_the_keys(good_bundle, tmp_path, image,
                                                               cli):
    """Probe: safetensors shapes that disagree with the manifest ended in a traceback. A config
    claiming a huge network is checked on the meta device, so nothing large is allocated."""
    wrong = tampered(good_bundle, tmp_path / "wrong", _set("config", "conv_dim", 16))
    refused(cli("translate", "--model", wrong, "--out", tmp_path / "o", "--domain", "smile",
                image), "main.0.weight", "(8, 6, 7, 7)", "(16, 6, 7, 7)")
    huge = tampered(good_bundle, tmp_path / "huge", _set("config", "conv_dim", 1024))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(cli("translate", "--model", huge, "--out", tmp_path / "o", "--domain", "smile",
                image), "do not fit the manifest")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300_000  # KiB
    assert not (tmp_path / "o").exists()


# -- 7: checkpoint bombs and shapes ----------------------------------------------------------------
def write_bomb(path: Path, inflated: int) -> None:
    """A torch.save zip whose tensor storage is one deflated entry of ``inflated`` zero bytes
    (written in 1 MiB pieces: the test never holds it in memory)."""
    real = path.with_suffix(".real")
    torch.save({"main.0.weight": torch.zeros(4)}, real)
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                dst.writestr(info, src.read(info.filename))
                continue
            entry = zipfile.ZipInfo(info.filename)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with dst.open(entry, "w", force_zip64=True) as out:
                for _ in range(inflated // len(chunk)):
                    out.write(chunk)
    real.unlink()


def test_decompression_bomb_checkpoint_is_refused_before_inflating(tmp_path, cli):
    """Probe: a 1 GiB deflate bomb .ckpt was inflated (1.27 GB RSS), then an IndexError.
    (256 MiB here, to keep the test quick; the limit is the compression ratio.)"""
    bomb = tmp_path / "bomb-G.ckpt"
    write_bomb(bomb, 256 << 20)
    assert bomb.stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = cli("import", bomb, "--out", tmp_path / "b", "--domains", "a,b,c")
    refused(result, "decompression bomb", "bomb-G.ckpt")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    assert not (tmp_path / "b").exists()


def test_checkpoint_with_misshapen_tensors_is_one_line(tmp_path, cli):
    """Probe behind the bomb's IndexError: keys where the official code has them, shapes not."""
    torch.save({"main.0.weight": torch.zeros(5)}, tmp_path / "odd-G.ckpt")
    refused(cli("import", tmp_path / "odd-G.ckpt", "--out", tmp_path / "b", "--domains", "a"),
            "layout of an official StarGAN v1")
    assert not (tmp_path / "b").exists()


# -- 8: --resume -------------------------------------------------------------------------------------
class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    from test_training import make_celeba
    return make_celeba(tmp_path_factory.mktemp("celeba"), n=6)


RESUME_PROBES = {
    "list": lambda p, marker: torch.save([1, 2, 3], p),
    "no-config": lambda p, marker: torch.save({"format": "stargan-rt-train-v1", "iter": 3}, p),
    "garbage": lambda p, marker: p.write_bytes(b"\x80\x04garbage" * 50),
    "payload": lambda p, marker: torch.save({"config": RunsCode(marker)}, p),
}


@pytest.mark.parametrize("kind", sorted(RESUME_PROBES))
def test_resume_refuses_what_is_not_a_run(celeba, tmp_path, cli, kind):
    """Probe: --resume on a list / a dict without config gave tracebacks; garbage and payloads
    gave 6 lines quoting torch's advice to load with weights_only=False."""
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    RESUME_PROBES[kind](run / "checkpoint.pt", marker)
    result = cli("train", "v1", "--data", celeba, "--attrs", ",".join(ATTRS), "--out", run,
                 "--resume", "--iters", "1", "--image-size", "32", "--conv-dim", "8",
                 "--repeat-num", "1", "--d-conv-dim", "8", "--d-repeat-num", "4")
    refused(result, "checkpoint.pt")
    assert "weights_only" not in result.err and "trust" not in result.err
    assert not marker.exists()


def test_resume_without_a_run_refuses(tmp_path, cli):
    """Probe: --resume where no checkpoint exists silently started a new run."""
    result = cli("train", "v1", "--data", tmp_path, "--out", tmp_path / "none", "--resume")
    refused(result, "--resume", "no run to continue")
    assert not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    refused(cli("train", "v2", "--data", tmp_path, "--out", tmp_path / "empty", "--resume"),
            "has no checkpoint.pt")
    assert list((tmp_path / "empty").iterdir()) == []


# -- 9: numbers --------------------------------------------------------------------------------------
NUMBER_PROBES = [
    ("translate", "--psi", "nan"), ("translate", "--psi", "inf"), ("translate", "--psi", "-0.5"),
    ("translate", "--seed", "-1"), ("translate", "--seed", "1.5"),
    ("webcam", "--crop-shift", "nan"), ("webcam", "--crop-shift", "inf"),
    ("webcam", "--crop-scale", "nan"), ("webcam", "--psi", "nan"), ("webcam", "--seed", "-1"),
    ("webcam", "--max-faces", "0"), ("webcam", "--max-faces", "-1"),
    ("webcam", "--width", "-640"), ("webcam", "--height", "0"), ("webcam", "--fps", "-30"),
    ("webcam", "--fps", "0"), ("webcam", "--fps", "nan"), ("webcam", "--detect-every", "0"),
    ("webcam", "--max-frames", "0"), ("webcam", "--parity-every", "-2"),
    ("import", "--image-size", "0"), ("import", "--w-hpf", "-1"), ("import", "--w-hpf", "nan"),
    ("train v1", "--iters", "0"), ("train v1", "--g-lr", "nan"), ("train v1", "--ema-beta", "2"),
    ("train v2", "--threads", "-5"), ("train v2", "--max-minutes", "inf"),
    ("parity", "--int8-psnr", "nan"), ("eval", "--seeds", "0"),
]
REQUIRED = {"translate": ["x.png", "--out", "o"], "webcam": [], "import": ["x.ckpt", "--out", "o"],
            "train v1": ["--data", "d", "--out", "o"], "train v2": ["--data", "d", "--out", "o"],
            "parity": [], "eval": ["--model", "m", "--data", "d"]}


@pytest.mark.parametrize("verb,option,value", NUMBER_PROBES)
def test_numeric_options_are_range_checked(tmp_path, cli, monkeypatch, verb, option, value):
    """Probe: --psi nan wrote black images (exit 0), --crop-shift nan crashed, v2 --seed -1 was a
    traceback, --max-faces 0 and negative --width/--fps were accepted."""
    monkeypatch.chdir(tmp_path)
    refused(cli(*verb.split(), *REQUIRED[verb], f"{option}={value}"), option, value, "expected")
    assert list(tmp_path.iterdir()) == []


def test_range_error_says_what_is_allowed(cli):
    refused(cli("webcam", "--max-faces", "0"), "--max-faces", "from 1 to 64")


def test_the_option_checks_serve_other_callers_too():
    from stargan_rt import options
    assert options.SEED.check(5, "seed") == 5
    for bad in (-1, 1.5, "3", True, 2**64):
        with pytest.raises(UserError, match="seed"):
            options.SEED.check(bad, "seed")
    with pytest.raises(UserError, match="finite"):
        options.PSI.check(float("nan"), "psi")


# -- 10: writers that verify, full disks, read-only targets ------------------------------------------
def test_import_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, cli, monkeypatch):
    """Probe: `import` on a full disk ended in a traceback."""
    torch.save(GeneratorV1(8, 3, 1).state_dict(), tmp_path / "1-G.ckpt")
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", filename)
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "models" / "b"
    refused(cli("import", tmp_path / "1-G.ckpt", "--out", out, "--domains", ",".join(ATTRS)),
            "disk is full")
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_targets_are_one_line(tmp_path, good_bundle, image, cli):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        torch.save(GeneratorV1(8, 3, 1).state_dict(), tmp_path / "1-G.ckpt")
        refused(cli("import", tmp_path / "1-G.ckpt", "--out", ro / "b", "--domains",
                    ",".join(ATTRS)), "not writable")
        refused(cli("translate", "--model", good_bundle, "--out", ro / "o", "--domain", "smile",
                    image), "cannot create")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_read_only_and_full_targets_via_failing_writes(tmp_path, good_bundle, image, cli,
                                                       celeba, monkeypatch):
    """The same as the read-only probe for root, who can write anywhere: the write fails."""
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", read_only)
    torch.save(GeneratorV1(8, 3, 1).state_dict(), tmp_path / "1-G.ckpt")
    refused(cli("import", tmp_path / "1-G.ckpt", "--out", tmp_path / "ro" / "b", "--domains",
                ",".join(ATTRS)), "read-only")
    refused(cli("translate", "--model", good_bundle, "--out", tmp_path / "ro" / "o", "--domain",
                "smile", image), "Read-only")
    refused(cli("train", "v1", "--data", celeba, "--attrs", ",".join(ATTRS), "--out",
                tmp_path / "ro" / "run", "--iters", "1", "--image-size", "32", "--conv-dim", "8",
                "--repeat-num", "1", "--d-conv-dim", "8", "--d-repeat-num", "4"), "read-only")
    monkeypatch.undo()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    refused(cli("translate", "--model", good_bundle, "--out", tmp_path / "o", "--domain", "smile",
                image), "No space left")
    assert list((tmp_path / "o").iterdir()) == []


RECORD_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from stream_testlib import FakeTranslator, ListSource
    from stargan_rt.stream.faces import FaceStage
    from stargan_rt.stream.pipeline import Pipeline
    from stargan_rt.stream.sinks import RecordSink

    limit = int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(64)]
    pipeline = Pipeline(ListSource(frames), FakeTranslator(), FaceStage(64, no_face=True),
                        [RecordSink(sys.argv[1])], domain="Invert", log=print)
    code = pipeline.run()
    print("ERROR", pipeline.error)
    sys.exit(code)
""")


def test_recording_on_a_full_disk_fails_and_keeps_nothing(tmp_path):
    """Probe: on a full disk `webcam --record` exited 0 and printed "recorded 64 frames", but
    the file had no moov atom and decoded 0 frames. A size-limited file (RLIMIT_FSIZE) stands in
    for the full disk; the same 64 frames without the limit verify and are kept."""
    script = tmp_path / "record.py"
    script.write_text(RECORD_SCRIPT)
    out = tmp_path / "rec.mp4"
    tests = str(Path(__file__).parent)
    full = subprocess.run([sys.executable, str(script), str(out), str(64 << 10), tests],
                          capture_output=True, text=True, timeout=120)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "64 frames were written" in full.stdout and "nothing was kept" in full.stdout
    assert "recorded 64 frames" not in full.stdout
    assert "Traceback" not in full.stderr and "WARN" not in full.stderr, full.stderr
    assert list(tmp_path.iterdir()) == [script]  # no partial file, no .rec.partial.mp4
    ok = subprocess.run([sys.executable, str(script), str(out), "0", tests],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "recorded 64 frames" in ok.stdout, ok.stdout + ok.stderr
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 64
    cap.release()


def test_record_onto_a_directory_is_refused_up_front(tmp_path, cli):
    """Probe: --record onto an existing directory named x.mp4 left .x.partial.mp4 behind."""
    (tmp_path / "x.mp4").mkdir()
    refused(cli("webcam", "--source", "sample", "--headless", "--max-frames", "2", "--record",
                tmp_path / "x.mp4"), "is a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]
    assert list((tmp_path / "x.mp4").iterdir()) == []


# -- 11: image pixel limit -----------------------------------------------------------------------------
def test_huge_image_is_refused_from_its_header(tmp_path, good_bundle, cli):
    """Probe: a 20000x20000 PNG (389 KB) took translate to 2.6 GB RSS."""
    from stargan_rt.imaging import image_dimensions

    big = tmp_path / "big.png"
    # 20000 x 20000 declared; the first 64 rows of pixel data (black) are enough to decode from
    idat = zlib.compress(b"".join([b"\0" + bytes(3 * 20000)] * 64))
    big.write_bytes(_png(20000, 20000, idat))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(cli("translate", "--model", good_bundle, "--out", tmp_path / "o", "--domain",
                "smile", big), "20000x20000", "megapixels")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    assert not (tmp_path / "o").exists()
    # the header reader knows the common formats
    for suffix in (".png", ".jpg", ".bmp", ".webp", ".tif"):
        ok, data = cv2.imencode(suffix, np.zeros((37, 53, 3), np.uint8))
        assert image_dimensions(data.tobytes()[:1 << 16]) == (53, 37), suffix


def _png(width: int, height: int, idat: bytes) -> bytes:
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + \
        chunk(b"IEND", b"")


# -- 12: a truncated cached ONNX ---------------------------------------------------------------------
def test_truncated_cached_onnx_is_one_line_and_rebuild_remakes_it(good_bundle, tmp_path, cli):
    """Probe: a truncated cached ONNX gave a 6-line OpenVINO message, and --rebuild did not help
    (only deleting the cache did)."""
    cache = tmp_path / "cache"
    args = ["build", "--model", good_bundle, "--cache-dir", cache, "--target", "openvino"]
    assert cli(*args).code == 0
    (onnx_file,) = cache.glob("onnx/*/uint8/generator.uint8.fp32.onnx")
    intact = onnx_file.read_bytes()

    def truncate():
        onnx_file.write_bytes(intact[:len(intact) // 2])
        shutil.rmtree(cache / "engines")

    truncate()
    refused(cli(*args), "generator.uint8.fp32.onnx", "truncated or corrupt", "--rebuild")
    result = cli(*args, "--rebuild")
    assert result.code == 0, result
    assert "exported generator" in result.out
    from stargan_rt.export.onnx_io import load_model
    assert load_model(onnx_file).graph.node


def test_multi_line_errors_reach_the_user_as_one_line(cli, tmp_path, monkeypatch):
    def fails(cls, path):
        raise UserError("first part\nsecond part\n  third")
    monkeypatch.setattr(Bundle, "open", classmethod(fails))
    refused(cli("build", "--model", tmp_path), "first part second part third")
