"""StarGAN v2 training (the losses of the StarGAN v2 paper and its official code).

Per iteration: D step with a latent style (s = F(z, y_trg)), D step with a reference style
(s = E(x_ref, y_trg)), G step with latent styles (updates G, F, E), G step with reference styles
(updates G). D loss: non-saturating BCE on real/fake + lambda_reg * R1 (0.5 * E||grad_x D(x)||^2
on reals). G loss: adversarial + lambda_sty * L1(E(G(x, s), y_trg), s) - lambda_ds * L1(G(x, s1),
G(x, s2)) + lambda_cyc * L1(G(G(x, s), E(x, y_org)), x); lambda_ds decays linearly to 0 over
ds_iters. EMA copies of G, F, E (beta ema_beta); the bundle holds the EMA weights. With w_hpf > 0
the FAN face masks feed the generator's high-pass skip path (FAN weights required).

Not in the paper, all off in the ``paper`` preset: a warm-up (ae_iters) in which G, E and F learn
G(x, s) = x for s = E(x, y_org) and s = F(z, y_org); lambda_adv on G's adversarial term (and
gan_ramp: it and the diversity term rise linearly over the first iterations after the warm-up);
lambda_id * L1(G(x, s_own), x) with s_own = F(z2, y_org) (latent step) or E(x, y_org) (reference
step); lambda_keep * L1(G(x, s_trg), x); lambda_ssim * (1 - SSIM) of the cycle and identity
outputs against x. Why: see the v1 solver.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stargan_rt.bundle import Bundle, Domain, Manifest, default_aliases, write_bundle
from stargan_rt.errors import UserError
from stargan_rt.models.fan import FAN
from stargan_rt.models.v2 import DiscriminatorV2, GeneratorV2, MappingNetwork, StyleEncoder

from . import config
from .checkpoints import load_checkpoint
from .data import V2Batches, load_folders, split_holdout
from .device import autocast
from .ema import ema_update
from .losses import autoencoder_loss, ssim_loss
from .rng import rng_state, seed_all, set_rng_state
from .samples import save_grid
from .schedules import gan_ramp, lr_ramp, set_lr
from .trainer import Trainer

# Small CPU run at 64 px: narrow networks, a 64-wide mapping network with a 10x larger F
# learning rate than the paper's (1e-6 barely moves F in a few hundred steps) and a faster
# EMA (0.99) so the short run's EMA weights are not dominated by the initialisation. Its
# additions (see the module docstring): a warm-up in which G returns its input from E's and
# F's styles of the input's own domain, adversarial weight 0.3, identity and keep L1 terms.
_TINY = dict(image_size=64, dim_in=16, max_conv_dim=64, style_dim=16, latent_dim=8,
             hidden_dim=64, w_hpf=0.0, lambda_reg=1.0, lambda_sty=1.0, lambda_ds=1.0,
             ds_iters=1500, lambda_cyc=1.0, lr=2e-4, f_lr=2e-5, beta1=0.0, beta2=0.99,
             weight_decay=1e-4, ema_beta=0.99, batch=8, iters=1500, bf16=True,
             lambda_id=5.0, lambda_keep=2.0, lambda_ssim=0.0, ae_iters=400, ae_lr=1e-3,
             lambda_adv=0.3, gan_ramp=0, lr_ramp=0,
             channels_last=False, ckpt_every=50, sample_every=50, log_every=10,
             max_minutes=20.0, threads=-1)

PRESETS = {
    # Official StarGAN v2 (CelebA-HQ: lambda_ds 1, w_hpf 1 with FAN; AFHQ: lambda_ds 2, w_hpf 0).
    "paper": dict(image_size=256, dim_in=None, max_conv_dim=512, style_dim=64, latent_dim=16,
                  hidden_dim=512, w_hpf=0.0, lambda_reg=1.0, lambda_sty=1.0, lambda_ds=1.0,
                  ds_iters=100000, lambda_cyc=1.0, lr=1e-4, f_lr=1e-6, beta1=0.0, beta2=0.99,
                  weight_decay=1e-4, ema_beta=0.999, batch=8, iters=100000, bf16=False,
                  lambda_id=0.0, lambda_keep=0.0, lambda_ssim=0.0, ae_iters=0, ae_lr=0.0,
                  lambda_adv=1.0, gan_ramp=0, lr_ramp=0,
                  channels_last=False, ckpt_every=5000, sample_every=5000, log_every=10,
                  max_minutes=0.0, threads=0),
    "tiny": _TINY,
    # The shipped demo model: tiny's settings with a longer schedule (about 2 hours on a quiet
    # 2-core CPU; --max-minutes shortens it, schedules following the time).
    "demo": dict(_TINY, iters=6000, ds_iters=6000, ae_iters=1200, gan_ramp=500, ckpt_every=100,
                 sample_every=100, max_minutes=120.0),
}

RUN_KEYS = ("domains", "image_size", "dim_in", "max_conv_dim", "style_dim", "latent_dim",
            "hidden_dim", "w_hpf", "lambda_reg", "lambda_sty", "lambda_ds", "ds_iters",
            "lambda_cyc", "lr", "f_lr", "beta1", "beta2", "weight_decay", "ema_beta", "batch",
            "iters", "bf16", "lambda_id", "lambda_keep", "lambda_ssim", "ae_iters", "ae_lr", "lambda_adv",
            "gan_ramp", "lr_ramp", "seed", "world")


def make_config(preset: str, **overrides) -> dict:
    return config.make_config(PRESETS, preset, {"domains": None}, overrides)


def he_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def load_fan(path: Path) -> FAN:
    """FAN weights from a bundle holding a ``fan`` network or a state-dict file (safetensors or a
    torch file read with weights_only=True)."""
    path = Path(path)
    if path.is_dir():
        state = Bundle.open(path).state_dict("fan")
    elif not path.is_file():
        raise UserError(f"--fan {path}: no such file or bundle directory")
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = load_checkpoint(path)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    fan = FAN()
    try:
        fan.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    except (RuntimeError, AttributeError) as exc:
        raise UserError(f"--fan {path}: not FAN weights ({str(exc)[:200]})") from None
    return fan.eval()


class V2Trainer(Trainer):
    ARCH = "v2"
    RUN_KEYS = RUN_KEYS

    def __init__(self, data_dir, out_dir, cfg: dict, resume: bool = False, fan=None,
                 device: str | None = None, quiet: bool = False, data=None):
        super().__init__(out_dir, cfg, resume, device, quiet)
        self.framing = config.synth_framing(data_dir)
        self._validate(fan)
        if data is None:
            data = load_folders(data_dir, cfg["image_size"], domains=cfg.get("domains"))
        if data.kind != "classes" or len(data.names) < 2:
            raise UserError(f"{data_dir}: StarGAN v2 needs at least two domain folders "
                            "(train/<domain>/*.png)")
        cfg["domains"] = list(data.names)
        self.names = list(data.names)
        self.report = data.report.as_dict()
        train, hold = split_holdout(data, cfg["holdout"], 1234)
        self.hold = hold if len(hold) else train
        per_rank = cfg["batch"] // self.dist.world
        self.batches = V2Batches(train, per_rank, cfg["seed"] + 17, cfg["latent_dim"],
                                 self.dist.rank, self.dist.world)
        self.fan = load_fan(fan).to(self.device) if cfg["w_hpf"] > 0 else None
        self._build()

    def _validate(self, fan) -> None:
        cfg = self.cfg
        if cfg["image_size"] < 32 or cfg["image_size"] & (cfg["image_size"] - 1):
            raise UserError(f"--image-size {cfg['image_size']} must be a power of two >= 32")
        if cfg["w_hpf"] > 0 and not fan:
            raise UserError(f"--w-hpf {cfg['w_hpf']} needs FAN weights for the face masks: pass "
                            "--fan FILE (e.g. an imported CelebA-HQ bundle), or use --w-hpf 0")
        if cfg["w_hpf"] > 0 and cfg["image_size"] < 128:
            raise UserError("--w-hpf > 0 uses skip paths at 32/64/128 px; use --image-size >= 128 "
                            "or --w-hpf 0")
        for key in ("iters", "batch"):
            if int(cfg[key]) <= 0:
                raise UserError(f"--{key} must be positive, got {cfg[key]}")
        if cfg["batch"] % self.dist.world:
            raise UserError(f"--batch {cfg['batch']} must be divisible by the number of "
                            f"processes ({self.dist.world})")

    def _build(self) -> None:
        cfg, n = self.cfg, len(self.names)
        seed_all(cfg["seed"])
        self.G = GeneratorV2(cfg["image_size"], cfg["style_dim"], cfg["max_conv_dim"],
                             cfg["w_hpf"], cfg["dim_in"])
        self.F = MappingNetwork(cfg["latent_dim"], cfg["style_dim"], n, cfg["hidden_dim"])
        self.E = StyleEncoder(cfg["image_size"], cfg["style_dim"], n, cfg["max_conv_dim"],
                              cfg["dim_in"])
        self.D = DiscriminatorV2(cfg["image_size"], n, cfg["max_conv_dim"], cfg["dim_in"])
        for net in (self.G, self.F, self.E, self.D):
            net.apply(he_init)
            net.to(self.device)
            self.dist.broadcast_module(net)
        self.G_ema, self.F_ema, self.E_ema = (copy.deepcopy(m).eval()
                                              for m in (self.G, self.F, self.E))
        betas = (cfg["beta1"], cfg["beta2"])
        wd = cfg["weight_decay"]
        self.opt = {
            "G": torch.optim.Adam(self.G.parameters(), cfg["lr"], betas, weight_decay=wd),
            "F": torch.optim.Adam(self.F.parameters(), cfg["f_lr"], betas, weight_decay=wd),
            "E": torch.optim.Adam(self.E.parameters(), cfg["lr"], betas, weight_decay=wd),
            "D": torch.optim.Adam(self.D.parameters(), cfg["lr"], betas, weight_decay=wd),
        }
        torch.manual_seed(cfg["seed"] * 1000 + self.dist.rank)

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        ranks = self.dist.gather_objects({"batches": self.batches.state_dict(),
                                          "rng": rng_state()})
        return {"nets": {k: m.state_dict() for k, m in self._nets().items()},
                "opt": {k: o.state_dict() for k, o in self.opt.items()},
                "lr": {k: o.param_groups[0]["lr"] for k, o in self.opt.items()},
                "ranks": ranks}

    def _nets(self) -> dict:
        return {"G": self.G, "F": self.F, "E": self.E, "D": self.D, "G_ema": self.G_ema,
                "F_ema": self.F_ema, "E_ema": self.E_ema}

    def load_state(self, state: dict) -> None:
        for k, m in self._nets().items():
            m.load_state_dict(state["nets"][k])
        for k, o in self.opt.items():
            o.load_state_dict(state["opt"][k])
            set_lr(o, state["lr"][k])
        mine = state["ranks"][self.dist.rank]
        self.batches.load_state_dict(mine["batches"])
        set_rng_state(mine["rng"])

    # -- losses ---------------------------------------------------------------------------
    def _masks(self, x):
        if self.fan is None:
            return None
        with torch.no_grad():
            return self.fan.face_masks(x.float())

    def _adv(self, logits, target: float):
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def _d_step(self, b, z_trg=None, x_ref=None) -> dict:
        cfg = self.cfg
        x_real, y_org, y_trg = b["x_src"], b["y_src"], b["y_ref"]
        x_real = x_real.requires_grad_(True)
        with autocast(cfg["bf16"], self.device):
            out = self.D(x_real, y_org)
        loss_real = self._adv(out, 1.0)
        grad = torch.autograd.grad(out.float().sum(), x_real, create_graph=True)[0]
        r1 = 0.5 * grad.pow(2).flatten(1).sum(1).mean()
        with torch.no_grad(), autocast(cfg["bf16"], self.device):
            s_trg = self.F(z_trg, y_trg) if z_trg is not None else self.E(x_ref, y_trg)
            x_fake = self.G(x_real.detach(), s_trg, self._masks(x_real.detach()))
        with autocast(cfg["bf16"], self.device):
            out = self.D(x_fake.float(), y_trg)
        loss_fake = self._adv(out, 0.0)
        loss = loss_real + loss_fake + cfg["lambda_reg"] * r1
        self.opt["D"].zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients([self.D])
        self.opt["D"].step()
        x_real.requires_grad_(False)
        return {"real": loss_real.item(), "fake": loss_fake.item(), "reg": r1.item()}

    def _g_step(self, b, lambda_ds: float, latent: bool) -> dict:
        cfg = self.cfg
        x_real, y_org, y_trg = b["x_src"], b["y_src"], b["y_ref"]
        bf16 = cfg["bf16"]
        masks = self._masks(x_real)
        self.D.requires_grad_(False)
        try:
            with autocast(bf16, self.device):
                if latent:
                    s_trg = self.F(b["z_trg"], y_trg)
                else:
                    s_trg = self.E(b["x_ref"], y_trg)
                x_fake = self.G(x_real, s_trg, masks)
                loss_adv = self._adv(self.D(x_fake, y_trg), 1.0)
                s_pred = self.E(x_fake, y_trg)
                loss_sty = (s_pred.float() - s_trg.float()).abs().mean()
                with torch.no_grad():
                    s_trg2 = (self.F(b["z_trg2"], y_trg) if latent
                              else self.E(b["x_ref2"], y_trg))
                    x_fake2 = self.G(x_real, s_trg2, masks)
                loss_ds = (x_fake.float() - x_fake2.float()).abs().mean()
                masks_fake = self._masks(x_fake.detach()) if self.fan is not None else None
                s_org = self.E(x_real, y_org)
                x_rec = self.G(x_fake, s_org, masks_fake)
                loss_cyc = (x_rec.float() - x_real).abs().mean()
                extra = {}
                x_id = None
                if cfg.get("lambda_id", 0.0) > 0:   # a style of the input's domain returns it
                    s_own = self.F(b["z_trg2"], y_org) if latent else s_org
                    x_id = self.G(x_real, s_own, masks)
                    extra["id"] = (x_id.float() - x_real).abs().mean()
                if cfg.get("lambda_ssim", 0.0) > 0:  # structure, not only L1: see the v1 solver
                    extra["ssim"] = ssim_loss(x_rec, x_real) + (
                        ssim_loss(x_id, x_real) if x_id is not None else 0.0)
                if cfg.get("lambda_keep", 0.0) > 0:  # change no more than the edit needs
                    extra["keep"] = (x_fake.float() - x_real).abs().mean()
            ramp = gan_ramp(self.it, cfg)
            loss = (ramp * (cfg["lambda_adv"] * loss_adv - lambda_ds * loss_ds)
                    + cfg["lambda_sty"] * loss_sty
                    + cfg["lambda_cyc"] * loss_cyc
                    + sum(cfg[f"lambda_{k}"] * v for k, v in extra.items()))
            names = ("G", "F", "E") if latent else ("G",)
            for k in ("G", "F", "E"):
                self.opt[k].zero_grad(set_to_none=True)
            loss.backward()
            self.dist.average_gradients([{"G": self.G, "F": self.F, "E": self.E}[k]
                                         for k in names])
            for k in names:
                self.opt[k].step()
        finally:
            self.D.requires_grad_(True)
        return {"adv": loss_adv.item(), "sty": loss_sty.item(), "ds": loss_ds.item(),
                "cyc": loss_cyc.item(), **{k: v.item() for k, v in extra.items()}}

    def _autoencoder_step(self, b) -> dict:
        """Warm-up (the first ``ae_iters`` iterations): G, E and F learn to return the input
        from a style of its own domain, G(x, s) = x (L1) for s = E(x, y_org) and F(z, y_org);
        D waits. Why: see the v1 solver's warm-up; from a random start the adversarial losses
        leave a small G no time to learn to keep the input's identity, and the style alone
        decides the picture. F takes part so that its styles start in the space G learns."""
        cfg = self.cfg
        x_real, y_org = b["x_src"], b["y_src"]
        masks = self._masks(x_real)
        with autocast(cfg["bf16"], self.device):
            # both style paths: the input's own (E) and a random one of its domain (F)
            styles = torch.cat([self.E(x_real, y_org), self.F(b["z_trg"], y_org)])
            out = self.G(torch.cat([x_real, x_real]), styles,
                         None if masks is None else tuple(torch.cat([m, m]) for m in masks))
            l1, loss = autoencoder_loss(out, torch.cat([x_real, x_real]), cfg)
        for k in ("G", "E", "F"):
            self.opt[k].zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients([self.G, self.E, self.F])
        for k in ("G", "E", "F"):
            self.opt[k].step()
        return {"G/latent_ae": l1.item()}

    def step(self, it: int) -> dict:
        cfg = self.cfg
        b = {k: v.to(self.device) for k, v in self.batches.next().items()}
        lambda_ds = cfg["lambda_ds"] * max(0.0, 1.0 - self.sched_it / cfg["ds_iters"]) \
            if cfg["ds_iters"] > 0 else cfg["lambda_ds"]
        losses = {}
        warm_up = it < cfg.get("ae_iters", 0)
        for k in ("G", "E", "F"):   # the warm-up has a learning rate of its own
            set_lr(self.opt[k], cfg["ae_lr"] if warm_up
                   else cfg["f_lr" if k == "F" else "lr"] * lr_ramp(it, cfg))
        if warm_up:
            losses = self._autoencoder_step(b)
            self._update_ema()
            return losses
        for k, v in self._d_step(b, z_trg=b["z_trg"]).items():
            losses[f"D/latent_{k}"] = v
        for k, v in self._d_step(b, x_ref=b["x_ref"]).items():
            losses[f"D/ref_{k}"] = v
        for k, v in self._g_step(b, lambda_ds, latent=True).items():
            losses[f"G/latent_{k}"] = v
        for k, v in self._g_step(b, lambda_ds, latent=False).items():
            losses[f"G/ref_{k}"] = v
        self._update_ema()
        losses["lambda_ds"] = lambda_ds
        return losses

    def _update_ema(self) -> None:
        for ema, net in ((self.G_ema, self.G), (self.F_ema, self.F), (self.E_ema, self.E)):
            ema_update(ema, net, self.cfg["ema_beta"], self.it)

    # -- samples, bundle ------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, path: Path, n: int = 6, seeds: int = 2) -> None:
        cfg = self.cfg
        x = (torch.from_numpy(self.hold.images[:n]).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1
             ).to(self.device)
        gen = torch.Generator().manual_seed(0)
        masks = self._masks(x)
        cols = [x]
        for d in range(len(self.names)):
            y = torch.full((len(x),), d, dtype=torch.long, device=self.device)
            for _ in range(seeds):
                z = torch.randn(1, cfg["latent_dim"], generator=gen).expand(len(x), -1)
                s = self.F_ema(z.to(self.device), y)
                cols.append(self.G_ema(x, s, masks))
        save_grid(path, cols)

    def write_bundle(self, path: Path, include_discriminator: bool = True, name: str = "",
                     stopped_early: bool = False):
        cfg = self.cfg
        manifest = Manifest(
            arch="v2", image_size=cfg["image_size"],
            domains=[Domain(n, default_aliases(n)) for n in self.names],
            config={"style_dim": cfg["style_dim"], "latent_dim": cfg["latent_dim"],
                    "max_conv_dim": cfg["max_conv_dim"], "w_hpf": cfg["w_hpf"],
                    "dim_in": cfg["dim_in"], "hidden_dim": cfg["hidden_dim"], **self.framing},
            source={"trained_by": "stargan-rt train v2", "preset": cfg["preset"],
                    "iterations": self.it, "weights": "EMA (beta %g)" % cfg["ema_beta"],
                    "stopped_early": stopped_early, "settings": config.primitive(cfg)},
            name=name or f"stargan-v2-{cfg['preset']}-{cfg['image_size']}px")
        nets = {"generator": self.G_ema.state_dict(),
                "mapping_network": self.F_ema.state_dict(),
                "style_encoder": self.E_ema.state_dict()}
        if include_discriminator:
            nets["discriminator"] = self.D.state_dict()
        if self.fan is not None:
            nets["fan"] = self.fan.state_dict()
        return write_bundle(path, manifest, nets, overwrite=True)

    # -- loop -----------------------------------------------------------------------------
    def progress_losses(self, avg: dict) -> dict:
        return {k: v for k, v in avg.items() if "latent" in k}

    def learning_rates(self) -> dict:
        return {"lr": self.opt["G"].param_groups[0]["lr"]}
