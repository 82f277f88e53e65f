"""StarGAN v1 training: WGAN-GP + domain classification + cycle reconstruction.

Losses (the StarGAN v1 paper and its official code):
  D: -mean D_src(x) + mean D_src(G(x, c_trg)) + lambda_cls * cls(D_cls(x), c_org) + lambda_gp * GP
  G (every n_critic D steps): -lambda_adv * mean D_src(G(x, c_trg))
                              + lambda_rec * L1(x, G(G(x, c_trg), c_org))
                              + lambda_cls_g * cls(D_cls(G(x, c_trg)), c_trg)
                              [+ lambda_id * L1(x, G(x, c_org)): not in the paper; optional]
                              [+ lambda_cls_aux * cls(C(G(x, c_trg)), c_trg): not in the paper]
                              [+ lambda_keep * L1(x, G(x, c_trg)): not in the paper]
                              [+ lambda_ssim * (1 - SSIM of the cycle and identity outputs
                                 against x): not in the paper]
  Warm-up (ae_iters > 0, not in the paper): G first learns L1(x, G(x, c_org)) alone (plus the
  SSIM term at lambda_ssim / lambda_id) at ae_lr while D's classifier head and C learn the real
  labels; then the losses above.
  Why lambda_adv and lambda_keep: with the gradient penalty D's gradient w.r.t. an image has norm
  about 1, while lambda * L1 gives lambda / sqrt(pixels) (0.09 for lambda 10 at 64 px): at weight
  1 the adversarial term outweighs identity tenfold, and a short run ends with faces that fool
  the critic but have lost background, skin and identity.
  C (lambda_cls_aux > 0): a separate attribute classifier trained on the real images each step.
  cls: CelebA attributes BCE-with-logits summed over attributes, mean over the batch; RaFD classes
  cross-entropy; joint CelebA+RaFD ("both"): label = [celeba, rafd one-hot, mask(2)], D's
  classification uses only the valid slice, batches alternate data sets.
Adam (beta1, beta2), learning rate linear to 0 over the last ``decay_iters`` iterations (the
official code's decay is a no-op, see schedules.linear_decay_lr).

The ``paper`` preset is the official configuration (lambda_cls_g = lambda_cls = 1, p_single 0:
targets are the batch's shuffled labels, no augmentation, no EMA). The ``tiny`` preset is tuned
for small CPU runs at 64 px; its additions are optional settings of the same loop: single
test-style target edits (p_single), DiffAugment translation of everything D sees (augment, see
augment.py), an EMA copy of G that the bundle holds (ema_beta) and the auxiliary classifier
for G (lambda_cls_aux, see build_attribute_classifier).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stargan_rt.bundle import Domain, Manifest, default_aliases, write_bundle
from stargan_rt.errors import UserError
from stargan_rt.models.v1 import DiscriminatorV1, GeneratorV1

from . import config
from .augment import translate
from .data import (V1Batches, detect_layout, load_celeba, load_folders, mixed_targets,
                   split_holdout, test_targets)
from .device import autocast
from .ema import ema_update
from .losses import autoencoder_loss, ssim_loss
from .rng import rng_state, seed_all, set_rng_state
from .samples import save_grid
from .schedules import gan_ramp, linear_decay_lr, lr_ramp, set_lr
from .trainer import Trainer

DEFAULT_ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]


def build_attribute_classifier(outputs: int) -> nn.Sequential:
    """The training-only classifier behind ``lambda_cls_aux``: learns the labels from real images
    only (like D's classifier head) and G's classification loss asks it as well as D.

    Why: on faces with small smiles D's head (strided 4x4 convs, shared with the WGAN critic)
    stayed at chance on held-out smiles, and so did a strided GroupNorm classifier; G cannot learn
    an edit its judge cannot see. 3x3 convs with BatchNorm and max-pooling keep 1-2 px detail
    and learn it in a few epochs. Widths and head differ from `stargan-rt eval`'s judge (global
    max instead of average pooling, no dropout), so the two are not the same network. In train
    mode only for its own step; G asks it in eval mode (BatchNorm statistics of real images).
    Not written to the bundle.
    """
    layers: list[nn.Module] = []
    dim = 3
    for out in (16, 32, 48, 96, 128):
        layers += [nn.Conv2d(dim, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        dim = out
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(dim, outputs)]
    return nn.Sequential(*layers)


# Small CPU run at 64 px: a narrow G (conv_dim 16, 3 residual blocks), a 5-layer D, batch 8,
# a G step after every D step. Its additions to the paper's loop, each a setting (why:
# docs/TRAINING-NOTES.md): G first learns to return its input (ae_iters, at ae_lr) while
# D's head and C learn the labels; G's adversarial weight 0.1 (with the gradient penalty the
# critic's pull is otherwise ten times the identity terms'); identity (lambda_id) and
# "change no more than needed" (lambda_keep) L1 terms; 3/4 of the targets single test-style
# edits (p_single); D's inputs shifted by up to 1/8 (augment); an EMA generator; G also
# judged by a separate classifier (lambda_cls_aux: D's head misses subtle smiles); bf16
# autocast; threads from the machine's idle cores. Stops at max_minutes with the learning
# rate decayed on time.
_TINY = dict(image_size=64, conv_dim=16, repeat_num=3, d_conv_dim=32, d_repeat_num=5,
             lambda_cls=2.0, lambda_cls_g=2.0, lambda_cls_aux=2.0, lambda_rec=10.0,
             lambda_gp=10.0, n_critic=1,
             g_lr=2e-4, d_lr=2e-4, beta1=0.5, beta2=0.999, batch=8, iters=5000,
             decay_iters=2500, p_single=0.75, augment=0.125, ema_beta=0.999, lambda_id=10.0,
             lambda_keep=2.0, lambda_ssim=0.0, ae_iters=1000, ae_lr=1e-3, lambda_adv=0.1,
             gan_ramp=0, lr_ramp=0, bf16=True,
             channels_last=False, ckpt_every=100, sample_every=100, log_every=10,
             max_minutes=20.0, threads=-1)

PRESETS = {
    # Official StarGAN v1 (CelebA, 128 px).
    "paper": dict(image_size=128, conv_dim=64, repeat_num=6, d_conv_dim=64, d_repeat_num=6,
                  lambda_cls=1.0, lambda_cls_g=1.0, lambda_cls_aux=0.0, lambda_rec=10.0,
                  lambda_gp=10.0, n_critic=5,
                  g_lr=1e-4, d_lr=1e-4, beta1=0.5, beta2=0.999, batch=16, iters=200000,
                  decay_iters=100000, p_single=0.0, augment=0.0, ema_beta=0.0, lambda_id=0.0,
                  lambda_keep=0.0, lambda_ssim=0.0, ae_iters=0, ae_lr=0.0, lambda_adv=1.0,
                  gan_ramp=0, lr_ramp=0, bf16=False,
                  channels_last=False, ckpt_every=10000, sample_every=1000, log_every=10,
                  max_minutes=0.0, threads=0),
    "tiny": _TINY,
    # The demo models: tiny's settings with a longer schedule (about 2 hours on a quiet 2-core
    # CPU; --max-minutes shortens it, schedules following the time) and the SSIM term from the
    # start (at the same budget: +0.4 dB, +0.06 SSIM, -0.7 background levels; at 20 minutes it
    # cost the smiles, so tiny keeps it off).
    "demo": dict(_TINY, iters=20000, decay_iters=8000, ae_iters=3000, gan_ramp=1000,
                 lambda_ssim=5.0, ckpt_every=200,
                 sample_every=200, max_minutes=120.0),
}

# Settings a resumed run must share with the checkpoint.
RUN_KEYS = ("dataset", "attrs", "image_size", "conv_dim", "repeat_num", "d_conv_dim",
            "d_repeat_num", "lambda_cls", "lambda_cls_g", "lambda_cls_aux", "lambda_rec",
            "lambda_gp", "n_critic",
            "g_lr", "d_lr", "beta1", "beta2", "batch", "iters", "decay_iters", "p_single",
            "augment", "ema_beta", "lambda_id", "lambda_keep", "lambda_ssim", "ae_iters", "ae_lr",
            "lambda_adv", "gan_ramp", "lr_ramp",
            "bf16", "seed", "world")


def make_config(preset: str, **overrides) -> dict:
    return config.make_config(PRESETS, preset, {"attrs": None}, overrides)


class V1Trainer(Trainer):
    ARCH = "v1"
    RUN_KEYS = RUN_KEYS

    def __init__(self, data_dir, out_dir, cfg: dict, resume: bool = False, rafd_dir=None,
                 device: str | None = None, quiet: bool = False, data=None):
        super().__init__(out_dir, cfg, resume, device, quiet)
        self.framing = config.synth_framing(data_dir)
        self._validate()
        self._load_data(data_dir, rafd_dir, data)
        self._build()

    # -- set-up ---------------------------------------------------------------------------
    def _validate(self) -> None:
        cfg = self.cfg
        size = cfg["image_size"]
        if size < 16 or size % (2 ** cfg["d_repeat_num"]):
            raise UserError(f"--image-size {size} must be a multiple of 2**d_repeat_num = "
                            f"{2 ** cfg['d_repeat_num']} (and >= 16)")
        for key in ("iters", "batch", "n_critic", "conv_dim", "d_conv_dim"):
            if int(cfg[key]) <= 0:
                raise UserError(f"--{key.replace('_', '-')} must be positive, got {cfg[key]}")
        if cfg["batch"] % self.dist.world:
            raise UserError(f"--batch {cfg['batch']} must be divisible by the number of "
                            f"processes ({self.dist.world})")

    def _load_data(self, data_dir, rafd_dir, data) -> None:
        cfg = self.cfg
        size = cfg["image_size"]
        if data is not None:  # already loaded (tests, demo)
            main, rafd = data, None
            cfg["dataset"] = "celeba" if data.kind == "attributes" else "rafd"
        else:
            layout = detect_layout(data_dir)
            if layout == "celeba":
                attrs = cfg["attrs"] or DEFAULT_ATTRS
                main = load_celeba(data_dir, attrs, size)
                cfg["attrs"] = main.names
            else:
                main = load_folders(data_dir, size)
                cfg["attrs"] = main.names
            rafd = load_folders(rafd_dir, size) if rafd_dir else None
            if rafd is not None and main.kind != "attributes":
                raise UserError("--rafd (joint training) needs --data in the CelebA layout")
            cfg["dataset"] = ("both" if rafd is not None else
                              "celeba" if main.kind == "attributes" else "rafd")
            if rafd is not None:
                cfg["rafd_classes"] = rafd.names
        cfg["attrs"] = list(main.names)
        self.report = {"main": main.report.as_dict()}
        train, hold = split_holdout(main, cfg["holdout"], 1234)
        if len(train) < 2:
            raise UserError(f"{data_dir}: only {len(main)} usable images; need at least a few")
        self.names = list(main.names)
        rank, world = self.dist.rank, self.dist.world
        per_rank = cfg["batch"] // world
        seed = cfg["seed"]
        self.batches = V1Batches(train, per_rank, seed + 17, rank, world)
        self.rafd_batches = None
        self.rafd_names: list[str] = []
        if rafd is not None:
            self.report["rafd"] = rafd.report.as_dict()
            self.rafd_batches = V1Batches(rafd, per_rank, seed + 29, rank, world)
            self.rafd_names = list(rafd.names)
        self.hold = hold if len(hold) else train
        self.n_main = len(self.names)
        self.n_rafd = len(self.rafd_names)

    @property
    def c_dim(self) -> int:
        if self.cfg["dataset"] == "both":
            return self.n_main + self.n_rafd + 2
        return self.n_main

    @property
    def d_c_dim(self) -> int:
        return self.n_main + self.n_rafd

    def _build(self) -> None:
        cfg = self.cfg
        seed_all(cfg["seed"])
        self.G = GeneratorV1(cfg["conv_dim"], self.c_dim, cfg["repeat_num"]).to(self.device)
        self.D = DiscriminatorV1(cfg["image_size"], cfg["d_conv_dim"], self.d_c_dim,
                                 cfg["d_repeat_num"]).to(self.device)
        if cfg.get("channels_last"):
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.C = (build_attribute_classifier(self.d_c_dim).to(self.device)
                  if cfg["lambda_cls_aux"] else None)
        for net in (self.G, self.D, self.C):
            if net is not None:
                self.dist.broadcast_module(net)
        # The EMA copy is what the bundle holds (ema_beta > 0); it only ever averages G.
        self.G_ema = copy.deepcopy(self.G).eval() if cfg.get("ema_beta") else None
        betas = (cfg["beta1"], cfg["beta2"])
        self.g_opt = torch.optim.Adam(self.G.parameters(), cfg["g_lr"], betas)
        self.d_opt = torch.optim.Adam(self.D.parameters(), cfg["d_lr"], betas)
        # A plain classifier: its own fixed rate, no GAN-style betas.
        self.c_opt = (torch.optim.Adam(self.C.parameters(), 2e-3) if self.C is not None
                      else None)
        # Per-rank stream for targets, GP interpolation: differs between ranks, saved in ckpts.
        torch.manual_seed(cfg["seed"] * 1000 + self.dist.rank)

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        data_states = self.dist.gather_objects({
            "batches": self.batches.state_dict(),
            "rafd": self.rafd_batches.state_dict() if self.rafd_batches else None,
            "rng": rng_state()})
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
                "g_opt": self.g_opt.state_dict(), "d_opt": self.d_opt.state_dict(),
                "C": self.C.state_dict() if self.C is not None else None,
                "c_opt": self.c_opt.state_dict() if self.C is not None else None,
                "lr": {"g": self.g_opt.param_groups[0]["lr"],
                       "d": self.d_opt.param_groups[0]["lr"]},
                "ranks": data_states}

    def load_state(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        if self.C is not None:
            self.C.load_state_dict(state["C"])
            self.c_opt.load_state_dict(state["c_opt"])
        set_lr(self.g_opt, state["lr"]["g"])
        set_lr(self.d_opt, state["lr"]["d"])
        mine = state["ranks"][self.dist.rank]
        self.batches.load_state_dict(mine["batches"])
        if self.rafd_batches and mine["rafd"]:
            self.rafd_batches.load_state_dict(mine["rafd"])
        set_rng_state(mine["rng"])

    # -- losses ---------------------------------------------------------------------------
    def _cls_loss(self, logits, target, which: str):
        if which == "celeba":
            return F.binary_cross_entropy_with_logits(logits.float(), target.float(),
                                                      reduction="sum") / logits.shape[0]
        return F.cross_entropy(logits.float(), target)

    def _next(self, it: int):
        """(x, c_org, c_trg, label_org, label_trg, which) for this iteration."""
        cfg = self.cfg
        dataset = cfg["dataset"]
        which = dataset
        if dataset == "both":
            which = "celeba" if it % 2 == 0 else "rafd"
        source = self.rafd_batches if which == "rafd" and dataset == "both" else self.batches
        x, label = source.next()
        if which == "celeba":
            label_org = label
            label_trg = mixed_targets(label, self.names, None, cfg["p_single"])
            c_org, c_trg = label_org, label_trg
        else:
            label_org = label
            label_trg = label[torch.randperm(len(label))]
            n = self.n_rafd if dataset == "both" else self.n_main
            c_org = F.one_hot(label_org, n).float()
            c_trg = F.one_hot(label_trg, n).float()
        if dataset == "both":
            b = x.shape[0]
            zc, zr = torch.zeros(b, self.n_main), torch.zeros(b, self.n_rafd)
            if which == "celeba":
                mask = torch.tensor([[1.0, 0.0]]).expand(b, 2)
                c_org, c_trg = (torch.cat([c, zr, mask], 1) for c in (c_org, c_trg))
            else:
                mask = torch.tensor([[0.0, 1.0]]).expand(b, 2)
                c_org, c_trg = (torch.cat([zc, c, mask], 1) for c in (c_org, c_trg))
        dev = self.device
        if self.cfg.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return (x.to(dev), c_org.to(dev), c_trg.to(dev), label_org.to(dev), label_trg.to(dev),
                which)

    def _classifier_step(self, x, label_org, which: str) -> float:
        """One step of the auxiliary classifier on the real batch; left in eval mode."""
        cfg = self.cfg
        self.C.train()
        with autocast(cfg["bf16"], self.device):
            c_loss = self._cls_loss(self._d_cls_slice(self.C(translate(x, cfg["augment"])), which),
                                    label_org, "celeba" if which == "celeba" else "rafd")
        self.c_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        self.dist.average_gradients([self.C])
        self.c_opt.step()
        self.dist.average_buffers(self.C)
        self.C.eval()
        return c_loss.item()

    def _d_cls_slice(self, out_cls, which):
        if self.cfg["dataset"] != "both":
            return out_cls
        return out_cls[:, :self.n_main] if which == "celeba" else out_cls[:, self.n_main:]

    def step(self, it: int) -> dict:
        cfg = self.cfg
        bf16 = cfg["bf16"]
        warm_up = it < cfg.get("ae_iters", 0)
        g_base = cfg["ae_lr"] if warm_up else cfg["g_lr"] * lr_ramp(it, cfg)
        for opt, base in ((self.g_opt, g_base), (self.d_opt, cfg["d_lr"])):
            set_lr(opt, linear_decay_lr(base, self.sched_it, cfg["iters"], cfg["decay_iters"]))
        x, c_org, c_trg, label_org, label_trg, which = self._next(it)
        cls_kind = "celeba" if which == "celeba" else "rafd"
        shift = cfg.get("augment", 0.0)
        if warm_up:
            return self._autoencoder_step(x, c_org, label_org, which)

        # Discriminator.
        with autocast(bf16, self.device):
            out_src, out_cls = self.D(translate(x, shift))
            d_real = -out_src.float().mean()
            d_cls = self._cls_loss(self._d_cls_slice(out_cls, which), label_org, cls_kind)
            with torch.no_grad():
                x_fake = self.G(x, c_trg)
            out_fake, _ = self.D(translate(x_fake, shift))
            d_fake = out_fake.float().mean()
        alpha = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
        x_hat = (alpha * x + (1 - alpha) * x_fake.float()).requires_grad_(True)
        with autocast(bf16, self.device):
            out_hat, _ = self.D(translate(x_hat, shift))
        grad = torch.autograd.grad(out_hat.float().sum(), x_hat, create_graph=True)[0]
        d_gp = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        d_loss = d_real + d_fake + cfg["lambda_cls"] * d_cls + cfg["lambda_gp"] * d_gp
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.dist.average_gradients([self.D])
        self.d_opt.step()
        losses = {"D/real": d_real.item(), "D/fake": d_fake.item(), "D/cls": d_cls.item(),
                  "D/gp": d_gp.item()}

        # The auxiliary classifier learns from the same real batch; it is asked in eval mode.
        if self.C is not None:
            losses["C/cls"] = self._classifier_step(x, label_org, which)

        # Generator, every n_critic D steps.
        if (it + 1) % cfg["n_critic"] == 0:
            judges = [n for n in (self.D, self.C) if n is not None]
            for net in judges:
                net.requires_grad_(False)
            try:
                lambda_id = cfg.get("lambda_id", 0.0)
                lambda_keep = cfg.get("lambda_keep", 0.0)
                with autocast(bf16, self.device):
                    if lambda_id > 0:  # one batched pass for the target and the identity
                        x_fake, x_id = self.G(torch.cat([x, x]), torch.cat([c_trg, c_org])).chunk(2)
                        g_id = (x.float() - x_id.float()).abs().mean()
                    else:
                        x_fake, g_id = self.G(x, c_trg), torch.zeros(())
                    g_keep = ((x_fake.float() - x.float()).abs().mean() if lambda_keep > 0
                              else torch.zeros(()))
                    seen = translate(x_fake, shift)
                    out_src, out_cls = self.D(seen)
                    g_fake = -out_src.float().mean()
                    g_cls = self._cls_loss(self._d_cls_slice(out_cls, which), label_trg, cls_kind)
                    g_cls_aux = (self._cls_loss(self._d_cls_slice(self.C(seen), which),
                                                label_trg, cls_kind)
                                 if self.C is not None else torch.zeros(()))
                    x_rec = self.G(x_fake, c_org)
                    g_rec = (x.float() - x_rec.float()).abs().mean()
                    lambda_ssim = cfg.get("lambda_ssim", 0.0)
                    g_ssim = torch.zeros(())
                    if lambda_ssim > 0:   # the cycle's and (when computed) the identity's
                        g_ssim = ssim_loss(x_rec, x)
                        if lambda_id > 0:
                            g_ssim = g_ssim + ssim_loss(x_id, x)
                ramp = gan_ramp(it, cfg)
                g_loss = (ramp * (cfg["lambda_adv"] * g_fake + cfg["lambda_cls_g"] * g_cls
                                  + cfg["lambda_cls_aux"] * g_cls_aux)
                          + cfg["lambda_rec"] * g_rec + lambda_id * g_id + lambda_keep * g_keep
                          + lambda_ssim * g_ssim)
                self.g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                self.dist.average_gradients([self.G])
                self.g_opt.step()
                if self.G_ema is not None:
                    ema_update(self.G_ema, self.G, cfg["ema_beta"], self.it)
            finally:
                for net in judges:
                    net.requires_grad_(True)
            losses.update({"G/fake": g_fake.item(), "G/rec": g_rec.item(), "G/cls": g_cls.item()})
            if lambda_id > 0:
                losses["G/id"] = g_id.item()
            if lambda_keep > 0:
                losses["G/keep"] = g_keep.item()
            if lambda_ssim > 0:
                losses["G/ssim"] = g_ssim.item()
            if self.C is not None:
                losses["G/cls_aux"] = g_cls_aux.item()
        return losses

    def _autoencoder_step(self, x, c_org, label_org, which: str) -> dict:
        """Warm-up (the first ``ae_iters`` iterations): G learns to return its input given the
        input's own labels (L1); D's classifier head and the auxiliary classifier learn the
        labels of real images, so that G's first classification gradients are not noise.

        Why: under the adversarial and classification losses from a random start, a small G
        spends a short run's whole budget without learning to reproduce faces, and its
        outputs lose background, skin and identity. Reproducing the input is learnt in a few
        hundred steps on its own; the GAN phase then only has to learn the edits."""
        cfg = self.cfg
        with autocast(cfg["bf16"], self.device):
            g_ae, loss = autoencoder_loss(self.G(x, c_org), x, cfg)
        self.g_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients([self.G])
        self.g_opt.step()
        if self.G_ema is not None:
            ema_update(self.G_ema, self.G, cfg["ema_beta"], self.it)
        with autocast(cfg["bf16"], self.device):
            _, out_cls = self.D(translate(x, cfg["augment"]))
            d_cls = self._cls_loss(self._d_cls_slice(out_cls, which), label_org,
                                   "celeba" if which == "celeba" else "rafd")
        self.d_opt.zero_grad(set_to_none=True)
        d_cls.backward()
        self.dist.average_gradients([self.D])
        self.d_opt.step()
        losses = {"G/ae": g_ae.item(), "D/cls": d_cls.item()}
        if self.C is not None:
            losses["C/cls"] = self._classifier_step(x, label_org, which)
        return losses

    # -- samples, bundle --------------------------------------------------------------------
    def generator_for_output(self):
        """The EMA generator when the run keeps one, else the trained one."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def sample(self, path: Path, n: int = 8) -> None:
        x = torch.from_numpy(self.hold.images[:n]).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1
        label = torch.from_numpy(self.hold.labels[:n])
        x = x.to(self.device)
        if self.cfg["dataset"] == "rafd":
            targets = [F.one_hot(torch.full((len(x),), i), self.n_main).float()
                       for i in range(self.n_main)]
        else:
            targets = test_targets(label, self.names)
            if self.cfg["dataset"] == "both":
                b = len(x)
                mask = torch.tensor([[1.0, 0.0]]).expand(b, 2)
                targets = [torch.cat([t, torch.zeros(b, self.n_rafd), mask], 1) for t in targets]
                rmask = torch.tensor([[0.0, 1.0]]).expand(b, 2)
                targets += [torch.cat([torch.zeros(b, self.n_main),
                                       F.one_hot(torch.full((b,), i), self.n_rafd).float(),
                                       rmask], 1) for i in range(self.n_rafd)]
        G = self.generator_for_output()
        mode = G.training
        G.eval()
        cols = [x] + [G(x, t.to(self.device)) for t in targets]
        G.train(mode)
        save_grid(path, cols)

    def write_bundle(self, path: Path, include_discriminator: bool = True, name: str = "",
                     stopped_early: bool = False):
        cfg = self.cfg
        domain_names = self.names + self.rafd_names
        if cfg["dataset"] == "both":
            domain_names = domain_names + ["mask_celeba", "mask_rafd"]
        manifest = Manifest(
            arch="v1", image_size=cfg["image_size"],
            domains=[Domain(n, default_aliases(n)) for n in domain_names],
            config={"conv_dim": cfg["conv_dim"], "c_dim": self.c_dim,
                    "repeat_num": cfg["repeat_num"], "d_conv_dim": cfg["d_conv_dim"],
                    "d_repeat_num": cfg["d_repeat_num"],
                    "labels": {"celeba": "attributes", "rafd": "classes"}.get(cfg["dataset"],
                                                                             "joint"),
                    **self.framing},
            source={"trained_by": "stargan-rt train v1", "preset": cfg["preset"],
                    "iterations": self.it, "dataset": cfg["dataset"],
                    "stopped_early": stopped_early, "settings": config.primitive(cfg),
                    "weights": (f"EMA (beta {cfg['ema_beta']:g})" if self.G_ema is not None
                                else "final")},
            name=name or f"stargan-v1-{cfg['preset']}-{cfg['image_size']}px")
        nets = {"generator": self.generator_for_output().state_dict()}
        # The joint model's D has fewer class outputs than G's label input; the manifest holds
        # one c_dim, so only the generator goes into that bundle.
        if include_discriminator and cfg["dataset"] != "both":
            nets["discriminator"] = self.D.state_dict()
        return write_bundle(path, manifest, nets, overwrite=True)

    # -- loop -----------------------------------------------------------------------------
    def progress_losses(self, avg: dict) -> dict:
        return avg

    def learning_rates(self) -> dict:
        return {"g_lr": self.g_opt.param_groups[0]["lr"], "d_lr": self.d_opt.param_groups[0]["lr"]}
