"""Training stage: data loaders, bad inputs, v1/v2 solvers at 32 px with very small networks,
checkpoint round trip and exact resume, SIGKILL + resume, disk-full saves, 2-process torchrun."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stargan_rt.bundle import Bundle
from stargan_rt.cli import main as cli_main
from stargan_rt.errors import UserError
from stargan_rt.models.build import load_network
from stargan_train import data as tdata
from stargan_train import trainer as training_loop
from stargan_train.checkpoints import CKPT_NAME, save_checkpoint
from stargan_train.device import set_threads
from stargan_train.losses import ssim_loss
from stargan_train.schedules import TrainClock, gan_ramp, linear_decay_lr, lr_ramp, schedule_iter
from stargan_train.solver_v1 import make_config as v1_config
from stargan_train.solver_v2 import V2Trainer
from stargan_train.solver_v2 import make_config as v2_config

NAMES40 = [f"Attr_{i}" for i in range(35)] + ["Black_Hair", "Blond_Hair", "Brown_Hair",
                                                "Smiling", "Eyeglasses"]
ATTRS = "Black_Hair,Blond_Hair,Smiling"
# Networks small enough for a few iterations in seconds on 2 busy cores.
V1_SMALL = ["--image-size", "32", "--conv-dim", "8", "--repeat-num", "1", "--d-conv-dim", "8",
            "--d-repeat-num", "4", "--batch", "4", "--log-every", "1", "--sample-every", "0",
            "--ae-iters", "2"]
V2_SMALL = ["--image-size", "32", "--dim-in", "8", "--max-conv-dim", "16", "--style-dim", "8",
            "--latent-dim", "4", "--hidden-dim", "16", "--batch", "4", "--log-every", "1",
            "--sample-every", "0", "--ae-iters", "1"]


def _face(rng, hair: int, smile: int, size: int = 40) -> np.ndarray:
    img = np.full((size, size, 3), rng.integers(60, 200), np.uint8)
    colour = [(20, 20, 20), (80, 200, 240), (30, 60, 110)][hair]
    cv2.rectangle(img, (0, 0), (size, size // 4), colour, -1)
    if smile:
        cv2.ellipse(img, (size // 2, 3 * size // 4), (8, 4), 0, 0, 180, (255, 255, 255), -1)
    return img


def make_celeba(root: Path, n: int = 24, garbage: int = 0) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        hair, smile = i % 3, (i // 3) % 2
        name = f"{i + 1:06d}.jpg"
        cv2.imwrite(str(root / "images" / name), _face(rng, hair, smile))
        vals = [-1] * 40
        vals[35 + hair] = 1
        vals[38] = 1 if smile else -1
        rows.append(name + " " + " ".join(map(str, vals)))
    for j in range(garbage):
        name = f"bad{j}.jpg"
        (root / "images" / name).write_bytes(b"not an image")
        rows.append(name + " " + " ".join(["-1"] * 40))
    (root / "list_attr_celeba.txt").write_text(
        f"{len(rows)}\n" + " ".join(NAMES40) + "\n" + "\n".join(rows) + "\n")
    return root


def make_folders(root: Path, per_class: int = 8, classes=("black", "blond", "brown")) -> Path:
    rng = np.random.default_rng(1)
    for ci, name in enumerate(classes):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{i}.png"), _face(rng, ci, i % 2))
    return root


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    return make_folders(tmp_path_factory.mktemp("folders"))


class KilledError(Exception):
    pass


@contextlib.contextmanager
def killed_after_checkpoint(at: int):
    """A run that dies right after its checkpoint at iteration ``at`` (as if SIGKILLed)."""
    real = training_loop.save_run

    def save_then_die(trainer):
        real(trainer)
        if trainer.it >= at:
            raise KilledError
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_loop, "save_run", save_then_die)
        with pytest.raises(KilledError):
            yield


def run_cli(*args) -> int:
    return cli_main([str(a) for a in args])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def loss_rows(run: Path) -> dict[int, dict]:
    return {r["iter"]: {k: v for k, v in r.items() if "/" in k}
            for r in metrics(run) if "event" not in r}


# ---------------------------------------------------------------------------------------------
# data

def test_celeba_loader_labels_and_skipped_images(tmp_path):
    root = make_celeba(tmp_path / "c", n=12, garbage=2)
    data = tdata.load_celeba(root, ["Smiling", "black_hair"], 32)
    assert data.images.shape == (12, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.names == ["Smiling", "Black_Hair"]
    assert data.report.skipped_undecodable == 2          # skipped and counted
    assert data.labels[0].tolist() == [0.0, 1.0] and data.labels[3].tolist() == [1.0, 1.0]
    x = tdata.to_tensor_batch(data.images[:2], np.array([True, False]))
    assert x.shape == (2, 3, 32, 32) and x.is_contiguous() and -1 <= x.min() and x.max() <= 1


def test_targets_follow_official_rules():
    names = ["Black_Hair", "Blond_Hair", "Smiling"]
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    t = tdata.test_targets(c, names)
    assert t[1].tolist() == [[0, 1, 0], [0, 1, 1]]       # hair colours exclusive
    assert t[2].tolist() == [[1, 0, 1], [0, 1, 0]]       # other attributes flipped
    torch.manual_seed(0)
    mixed = tdata.mixed_targets(c.repeat(50, 1), names, None, 1.0)
    assert (mixed[:, :2].sum(1) == 1).all()             # single edits keep one hair colour
    assert ((mixed != c.repeat(50, 1)).sum(1) >= 1).all()


def test_class_balanced_sampling():
    labels = np.array([0] * 90 + [1] * 10)
    weights = 1.0 / np.bincount(labels)[labels]
    sampler = tdata.EpochSampler(100, 0, weights=weights)
    drawn = labels[sampler.take(4000)]
    assert 0.4 < drawn.mean() < 0.6


def test_lr_decay_is_linear_and_official_is_noop():
    assert linear_decay_lr(1e-4, 0, 200, 100) == 1e-4
    assert linear_decay_lr(1e-4, 150, 200, 100) == pytest.approx(5e-5)
    assert linear_decay_lr(1e-4, 199, 200, 100) == pytest.approx(1e-6)
    lr = 1e-4  # the official update: lr -= lr / num_iters_decay every 1000 of 100k iterations
    for _ in range(100):
        lr -= lr / 100000
    assert lr > 0.998e-4


def test_schedules_follow_the_time_budget():
    """With --max-minutes the schedules run on whichever budget is tighter, so a run stopped by
    its time cap ends with its learning rate decayed; the clock survives resumes."""
    cfg = {"iters": 1000, "max_minutes": 10.0}
    assert schedule_iter(100, 0.0, cfg) == 100.0
    assert schedule_iter(100, 5 * 60, cfg) == 500.0            # half the time: half-way
    assert schedule_iter(700, 5 * 60, cfg) == 700.0            # iterations ahead
    assert schedule_iter(100, 20 * 60, cfg) == 1000.0          # never past the end
    assert schedule_iter(100, 20 * 60, {"iters": 1000, "max_minutes": 0}) == 100.0
    lr = linear_decay_lr(2e-4, schedule_iter(300, 9.9 * 60, cfg), 1000, 500)
    assert lr == pytest.approx(2e-4 * 0.02)
    assert TrainClock(before=30.0).total() >= 30.0


def test_gan_ramp_rises_after_the_warm_up():
    cfg = {"ae_iters": 100, "gan_ramp": 50}
    assert gan_ramp(100, cfg) == pytest.approx(1 / 50)     # first GAN iteration
    assert gan_ramp(124, cfg) == pytest.approx(25 / 50)
    assert gan_ramp(149, cfg) == 1.0 and gan_ramp(5000, cfg) == 1.0
    assert gan_ramp(100, {"ae_iters": 100, "gan_ramp": 0}) == 1.0   # off: full weight
    assert gan_ramp(0, {}) == 1.0                                   # the paper's config


def test_lr_ramp_rises_after_the_warm_up():
    cfg = {"ae_iters": 100, "lr_ramp": 50}
    assert lr_ramp(100, cfg) == pytest.approx(1 / 50)      # first GAN iteration
    assert lr_ramp(149, cfg) == 1.0 and lr_ramp(5000, cfg) == 1.0
    assert lr_ramp(100, {"ae_iters": 100}) == 1.0           # off (older runs, paper)


def test_v1_lr_ramp_scales_g_learning_rate_only(celeba, tmp_path):
    out = tmp_path / "lr"
    assert run_cli("train", "v1", "--data", celeba, "--attrs", ATTRS, *V1_SMALL, "--iters", "4",
                   "--g-lr", "1e-4", "--d-lr", "1e-4", "--decay-iters", "1", "--lr-ramp", "4",
                   "--gan-ramp", "3", "--out", out) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["lr_ramp"], config["gan_ramp"]) == (4, 3)
    rows = {r["iter"]: r for r in metrics(out) if "event" not in r}
    # iterations 0-1 are the warm-up (ae_lr); row N is logged after iteration N - 1
    assert rows[3]["g_lr"] == pytest.approx(1e-4 / 4) and rows[4]["g_lr"] == pytest.approx(2e-4 / 4)
    assert rows[3]["d_lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_every_setting_option_reaches_the_config(arch):
    """An option that sets a run setting but is not passed on would be ignored silently (this
    happened to --gan-ramp)."""
    import argparse

    from stargan_train.commands import train
    from stargan_train import solver_v1, solver_v2

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["train"]
    arch_parser = sub._subparsers._group_actions[0].choices[arch]
    solver = solver_v1 if arch == "v1" else solver_v2
    args = arch_parser.parse_args(["--data", "d", "--out", "o"])
    passed = set(train._overrides(args, solver.PRESETS["paper"]))
    dests = {a.dest for a in arch_parser._actions}
    handled = {"attrs", "domains", "seed"}   # passed by hand
    missing = sorted(d for d in dests & set(solver.RUN_KEYS) if d not in passed | handled)
    assert not missing


def test_auto_threads_use_idle_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        assert set_threads(-1) == 2
        monkeypatch.setattr(os, "getloadavg", lambda: (3.2, 3.0, 3.0))   # a busy machine
        assert set_threads(-1) == 1
        assert set_threads(-1, own_load=2.0) == 1               # 1.2 cores busy elsewhere
        monkeypatch.setattr(os, "getloadavg", lambda: (2.1, 2.0, 2.0))  # only this run
        assert set_threads(-1, own_load=2.0) == 2
        assert set_threads(-1, world=2) == 1                      # shared by 2 processes
    finally:
        torch.set_num_threads(before)


def test_translate_augmentation_shifts_and_passes_gradients():
    from stargan_train.augment import translate

    torch.manual_seed(0)
    x = (torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16) + 1).requires_grad_()
    y = translate(x, 0.125)
    assert y.shape == x.shape
    for b in range(2):
        # every sample is its own image moved by whole pixels (<= 2 here), zeros coming in
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(y[b], torch.roll(x[b], (dy, dx), (1, 2)) * _inside(dy, dx, 16))]
        assert len(found) == 1, b
    y.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() > 0
    assert translate(x, 0.0) is x


def _inside(dy: int, dx: int, size: int) -> torch.Tensor:
    """Mask of the pixels that a roll by (dy, dx) brings from inside the image."""
    mask = torch.zeros(size, size)
    mask[max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = 1
    return mask


# ---------------------------------------------------------------------------------------------
# bad inputs: exit status 2 with a message

@pytest.mark.parametrize("case", ["missing", "unknown_attr", "rows_mismatch", "empty_class",
                                  "count_mismatch"])
def test_bad_inputs_exit_2(tmp_path, capsys, case):
    out = tmp_path / "run"
    if case == "missing":
        args = ["train", "v1", "--data", tmp_path / "nope", "--out", out]
        expect = "does not exist"
    elif case == "unknown_attr":
        root = make_celeba(tmp_path / "c", n=3)
        args = ["train", "v1", "--data", root, "--out", out, "--attrs", "Smiling,Wings"]
        expect = "valid names: Attr_0"
    elif case == "rows_mismatch":
        root = make_celeba(tmp_path / "c", n=3)
        (root / "images" / "000002.jpg").unlink()
        args = ["train", "v1", "--data", root, "--out", out, "--attrs", ATTRS]
        expect = "not in"
    elif case == "count_mismatch":
        root = make_celeba(tmp_path / "c", n=3)
        f = root / "list_attr_celeba.txt"
        f.write_text("7" + f.read_text()[1:])
        args = ["train", "v1", "--data", root, "--out", out, "--attrs", ATTRS]
        expect = "says 7 images"
    else:
        root = make_folders(tmp_path / "f", per_class=2)
        (root / "train" / "empty").mkdir()
        args = ["train", "v2", "--data", root, "--out", out]
        expect = "no images"
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and expect in err, err
    assert not (out / "checkpoint.pt").exists()


def test_undecodable_majority_fails(tmp_path, capsys):
    root = make_celeba(tmp_path / "c", n=2, garbage=3)
    assert run_cli("train", "v1", "--data", root, "--out", tmp_path / "r", "--attrs", ATTRS) == 2
    assert "could not be decoded" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# v1: losses, checkpoint round trip, exact resume, refusals, bundle

def test_v1_resume_matches_uninterrupted_run(celeba, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    base = ["train", "v1", "--data", celeba, "--attrs", ATTRS, "--iters", "6",
            "--ckpt-every", "3", *V1_SMALL]
    assert run_cli(*base, "--out", full) == 0
    rows = loss_rows(full)
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(v) for r in rows.values() for v in r.values())
    assert set(rows[1]) == {"G/ae", "D/cls", "C/cls"}    # warm-up: G returns its input
    assert "G/cls" in rows[3] and "D/gp" in rows[3]       # tiny preset: G step every iteration
    assert "C/cls" in rows[3] and "G/cls_aux" in rows[3]  # and the auxiliary classifier
    assert "G/keep" in rows[3] and "G/id" in rows[3]      # and the identity terms

    # "killed" right after the iteration-3 checkpoint, then resumed
    from stargan_train.solver_v1 import V1Trainer as T
    cfg = v1_config("tiny", attrs=ATTRS.split(","), image_size=32, conv_dim=8, repeat_num=1,
                    d_conv_dim=8, d_repeat_num=4, batch=4, iters=6, log_every=1,
                    sample_every=0, ckpt_every=3, decay_iters=3, ae_iters=2)
    with killed_after_checkpoint(3):
        T(celeba, part, cfg, quiet=True).train()
    state = torch.load(part / "checkpoint.pt", weights_only=True)   # tensors/primitives only
    assert state["iter"] == 3
    assert run_cli(*base, "--out", part, "--resume") == 0
    resumed = loss_rows(part)
    for it in (4, 5, 6):
        assert resumed[it] == pytest.approx(rows[it], rel=1e-6, abs=1e-7), it

    bundle = Bundle.open(part / "bundle")
    assert bundle.manifest.arch == "v1" and bundle.manifest.domain_names == ATTRS.split(",")
    assert bundle.manifest.config["labels"] == "attributes"
    assert "crop_scale" not in bundle.manifest.config      # not synthetic faces: no framing
    assert bundle.manifest.source["weights"] == "EMA (beta 0.999)"   # the tiny preset's G
    ckpt = torch.load(part / "checkpoint.pt", weights_only=True)
    assert not torch.equal(ckpt["G_ema"]["main.0.weight"], ckpt["G"]["main.0.weight"])
    assert ckpt["C"] is not None and ckpt["c_opt"]["state"]   # resumed with the run
    assert set(bundle.state_dict("discriminator")) == set(ckpt["D"])  # C stays out of bundles
    assert ckpt["elapsed_s"] > 0
    g = load_network(bundle, "generator")
    d = load_network(bundle, "discriminator")
    with torch.no_grad():
        y = g(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3))
    assert y.shape == (1, 3, 32, 32) and d(y)[1].shape == (1, 3)

    # same --out without --resume, and --resume with other settings: refused
    capsys.readouterr()
    assert run_cli(*base, "--out", part) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_cli(*base, "--out", part, "--resume", "--lambda-cls-g", "5") == 2
    assert "other settings" in capsys.readouterr().err


def test_v1_identity_loss_and_no_auxiliary_classifier(celeba, tmp_path):
    out = tmp_path / "id"
    assert run_cli("train", "v1", "--data", celeba, "--attrs", ATTRS, "--iters", "2",
                   "--lambda-id", "2", "--lambda-cls-aux", "0", "--out", out, *V1_SMALL,
                   "--ae-iters", "0") == 0
    rows = loss_rows(out)
    assert rows[2]["G/id"] > 0 and np.isfinite(rows[2]["G/id"])
    assert "C/cls" not in rows[2] and "G/cls_aux" not in rows[2]
    config = json.loads((out / "config.json").read_text())
    assert config["lambda_id"] == 2.0 and config["lambda_cls_aux"] == 0.0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["C"] is None


def test_v1_ssim_term_and_resuming_a_checkpoint_from_before_it(celeba, tmp_path, capsys):
    out = tmp_path / "ssim"
    base = ("train", "v1", "--data", celeba, "--attrs", ATTRS, *V1_SMALL, "--ae-iters", "1",
            "--out", out)
    assert run_cli(*base, "--iters", "3", "--lambda-ssim", "5") == 0
    rows = loss_rows(out)
    assert 0 < rows[3]["G/ssim"] < 4 and "G/ae" in rows[1]   # two terms of 1 - SSIM
    # a checkpoint written before the setting existed ran with it off: resumable as such
    old = tmp_path / "old"
    assert run_cli(*base[:-1], old, "--iters", "3") == 0
    state = torch.load(old / "checkpoint.pt", weights_only=True)
    del state["config"]["lambda_ssim"], state["config"]["lr_ramp"]
    state["iter"] = 2   # one iteration left to run again
    torch.save(state, old / "checkpoint.pt")
    assert run_cli(*base[:-1], old, "--iters", "3", "--resume") == 0
    assert "G/ssim" not in loss_rows(old)[3] and "G/id" in loss_rows(old)[3]
    assert run_cli(*base[:-1], old, "--iters", "3", "--resume", "--lambda-ssim", "5") == 2
    assert "lambda_ssim" in capsys.readouterr().err
    # ... unless the change of that loss weight is asked for; only loss weights may change
    assert run_cli(*base[:-1], old, "--iters", "3", "--resume", "--lambda-ssim", "5",
                   "--change", "lambda-ssim,conv-dim") == 2
    assert "only loss weights" in capsys.readouterr().err
    state["iter"] = 2
    torch.save(state, old / "checkpoint.pt")
    assert run_cli(*base[:-1], old, "--iters", "3", "--resume", "--lambda-ssim", "5",
                   "--change", "lambda-ssim") == 0
    assert "G/ssim" in loss_rows(old)[3]
    resumes = [r for r in metrics(old) if r.get("event") == "resume"]
    assert resumes[-1]["changed"] == {"lambda_ssim": [0.0, 5.0]}


def test_v1_paper_preset_is_the_official_configuration_without_additions():
    cfg = v1_config("paper")
    assert (cfg["image_size"], cfg["conv_dim"], cfg["repeat_num"], cfg["batch"]) == (128, 64, 6, 16)
    assert (cfg["lambda_cls"], cfg["lambda_cls_g"], cfg["lambda_rec"], cfg["lambda_gp"]) == (
        1, 1, 10, 10)
    assert (cfg["n_critic"], cfg["g_lr"], cfg["d_lr"], cfg["beta1"], cfg["beta2"]) == (
        5, 1e-4, 1e-4, 0.5, 0.999)
    assert (cfg["iters"], cfg["decay_iters"]) == (200000, 100000)
    for addition in ("p_single", "augment", "ema_beta", "lambda_id", "lambda_cls_aux",
                     "lambda_keep", "lambda_ssim", "ae_iters", "gan_ramp", "lr_ramp"):
        assert cfg[addition] == 0, addition
    assert cfg["lambda_adv"] == 1


def test_v2_paper_preset_has_no_additions():
    from stargan_train.solver_v2 import make_config as v2_config

    cfg = v2_config("paper")
    for addition in ("lambda_id", "lambda_keep", "lambda_ssim", "ae_iters", "gan_ramp", "lr_ramp"):
        assert cfg[addition] == 0, addition


def test_ssim_loss_is_one_minus_the_eval_ssim():
    """The training term is the metric eval reports (same window, constants), differentiable."""
    from stargan_rt.metrics import ssim

    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1).astype(np.float32)
    tb = torch.from_numpy(b).requires_grad_(True)
    loss = ssim_loss(torch.from_numpy(a), tb)
    assert loss.item() == pytest.approx(1 - ssim(a, b, 2.0, channel_axis=1), abs=1e-5)
    loss.backward()
    assert torch.isfinite(tb.grad).all() and tb.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32 all the same
        assert ssim_loss(torch.from_numpy(a), torch.from_numpy(a)).item() == pytest.approx(
            0.0, abs=1e-6)


def test_checkpoint_disk_full_keeps_previous(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"iter": 1, "w": torch.ones(3)})
    before = (tmp_path / CKPT_NAME).read_bytes()

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match="disk is full.*previous checkpoint is intact"):
        save_checkpoint(tmp_path, {"iter": 2})
    assert (tmp_path / CKPT_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CKPT_NAME]


def test_v1_sigkill_then_resume(celeba, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "stargan_rt.cli", "train", "v1", "--data", str(celeba),
           "--attrs", ATTRS, "--iters", "400", "--ckpt-every", "2", "--out", str(run), "--quiet",
           *V1_SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            ckpt = run / "checkpoint.pt"
            if ckpt.exists() and (run / "metrics.jsonl").exists() and \
                    len(metrics(run)) > 6:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["iter"]
    last_logged = max(loss_rows(run))
    assert saved >= 2 and last_logged - saved <= 2        # lost at most one interval
    # resume with the same settings (--iters is one of them); --max-minutes only ends it soon
    done = subprocess.run(cmd + ["--resume", "--max-minutes", "0.02"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [r for r in metrics(run) if r.get("event") == "resume"]
    assert events and events[-1]["iter"] == saved
    assert Bundle.open(run / "bundle").manifest.source["stopped_early"] is True


def test_v1_ddp_two_processes(celeba, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), "-m", "stargan_rt.cli", "train",
           "v1", "--data", str(celeba), "--attrs", ATTRS, "--iters", "4", "--ckpt-every", "2",
           "--out", str(run), "--quiet", *V1_SMALL]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    start = [r for r in metrics(run) if r.get("event") == "start"][0]
    assert start["world"] == 2
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert len(state["ranks"]) == 2 and state["iter"] == 4
    load_network(Bundle.open(run / "bundle"), "generator")


# ---------------------------------------------------------------------------------------------
# v2

def test_v2_train_resume_and_bundle(folders, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    base = ["train", "v2", "--data", folders, "--iters", "4", "--ckpt-every", "2", *V2_SMALL,
            "--lambda-ssim", "1"]
    assert run_cli(*base, "--out", full) == 0
    rows = loss_rows(full)
    assert all(np.isfinite(v) for r in rows.values() for v in r.values())
    assert set(rows[1]) == {"G/latent_ae"}                # warm-up: G returns its input
    assert {"D/latent_reg", "G/ref_sty", "G/latent_ds", "G/latent_cyc", "G/latent_id",
            "G/latent_keep", "G/latent_ssim", "G/ref_ssim"} <= set(rows[2])

    cfg = v2_config("tiny", image_size=32, dim_in=8, max_conv_dim=16, style_dim=8,
                    latent_dim=4, hidden_dim=16, batch=4, iters=4, ds_iters=4, log_every=1,
                    sample_every=0, ckpt_every=2, ae_iters=1, lambda_ssim=1.0)
    with killed_after_checkpoint(2):
        V2Trainer(folders, part, cfg, quiet=True).train()
    assert run_cli(*base, "--out", part, "--resume") == 0
    resumed = loss_rows(part)
    for it in (3, 4):
        assert resumed[it] == pytest.approx(rows[it], rel=1e-6, abs=1e-7), it

    bundle = Bundle.open(part / "bundle")
    assert bundle.manifest.arch == "v2" and bundle.manifest.domain_names == [
        "black", "blond", "brown"]
    assert "EMA" in bundle.manifest.source["weights"]
    g = load_network(bundle, "generator")
    f = load_network(bundle, "mapping_network")
    e = load_network(bundle, "style_encoder")
    with torch.no_grad():
        s = f(torch.randn(2, 4), torch.tensor([0, 2]))
        y = g(torch.zeros(2, 3, 32, 32), s)
        assert e(y, torch.tensor([0, 1])).shape == (2, 8)
    # the EMA weights, not the raw ones, are in the bundle
    state = torch.load(part / "checkpoint.pt", weights_only=True)
    key = "from_rgb.weight"
    assert torch.equal(bundle.state_dict("generator")[key], state["nets"]["G_ema"][key])
    assert not torch.equal(state["nets"]["G_ema"][key], state["nets"]["G"][key])


def test_v2_w_hpf_needs_fan(folders, tmp_path, capsys):
    assert run_cli("train", "v2", "--data", folders, "--out", tmp_path / "r",
                   "--w-hpf", "1") == 2
    assert "--fan" in capsys.readouterr().err


def test_v2_w_hpf_trains_with_fan_masks(folders, tmp_path):
    """The CelebA-HQ path end to end: FAN masks feed G's high-pass skips during training and the
    bundle carries the FAN for the runtime (random FAN weights: plumbing, not quality)."""
    from safetensors.torch import save_file

    from stargan_rt.models.fan import FAN

    torch.manual_seed(0)
    fan_file = tmp_path / "fan.safetensors"
    save_file(FAN().state_dict(), str(fan_file))
    run = tmp_path / "hpf"
    small = [a if a != "32" else "128" for a in V2_SMALL]  # w_hpf needs >= 128 px
    assert run_cli("train", "v2", "--data", folders, "--out", run, "--iters", "2",
                   "--w-hpf", "1", "--fan", fan_file, *small, "--batch", "2") == 0
    rows = loss_rows(run)
    assert all(np.isfinite(v) for v in rows[2].values())
    bundle = Bundle.open(run / "bundle")
    assert bundle.manifest.config["w_hpf"] == 1.0 and bundle.has("fan")
    assert bundle.manifest.image_size == 128


def test_v1_joint_celeba_rafd_with_mask(celeba, tmp_path):
    rafd = make_folders(tmp_path / "rafd", per_class=3, classes=("angry", "happy"))
    run = tmp_path / "joint"
    assert run_cli("train", "v1", "--data", celeba, "--rafd", rafd / "train", "--attrs", ATTRS,
                   "--out", run, "--iters", "4", "--ckpt-every", "4", *V1_SMALL) == 0
    rows = loss_rows(run)
    assert all(np.isfinite(v) for r in rows.values() for v in r.values())
    bundle = Bundle.open(run / "bundle")
    # label = [3 CelebA attributes, 2 RaFD classes, 2 mask bits]
    assert bundle.manifest.config["c_dim"] == 7
    assert bundle.manifest.domain_names[-2:] == ["mask_celeba", "mask_rafd"]
    g = load_network(bundle, "generator")
    assert g(torch.zeros(1, 3, 32, 32), torch.zeros(1, 7)).shape == (1, 3, 32, 32)
