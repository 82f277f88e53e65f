"""`stargan-rt train v1|v2`: train StarGAN models; the run directory ends with a bundle.

Runs under torchrun for data parallel training (gloo on CPU, nccl on GPUs):
    torchrun --nproc_per_node 2 -m stargan_rt.cli train v1 --data DIR --out RUN
"""
from __future__ import annotations

import json
from pathlib import Path

from stargan_rt import options
from stargan_rt.errors import UserError


def _common(p) -> None:
    p.add_argument("--data", required=True, type=Path, help="data set directory")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoint, "
                   "metrics.jsonl, samples/, bundle/)")
    p.add_argument("--preset", default="tiny", help="paper (official hyper-parameters) or tiny "
                   "(small CPU run); default tiny")
    p.add_argument("--image-size", type=options.IMAGE_SIZE)
    p.add_argument("--iters", type=options.COUNT, help="total iterations")
    p.add_argument("--batch", type=options.COUNT, help="global batch size (split over processes)")
    p.add_argument("--seed", type=options.SEED, default=0)
    p.add_argument("--change", metavar="NAME[,NAME]",
                   help="with --resume: loss weights (e.g. lambda-ssim) that may take new values "
                        "in the continued run (recorded in metrics.jsonl); other settings must "
                        "match the checkpoint")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (same settings required)")
    p.add_argument("--ckpt-every", type=options.COUNT, help="checkpoint interval (iterations)")
    p.add_argument("--sample-every", type=options.COUNT_OR_NONE, help="sample grid interval (0 = never)")
    p.add_argument("--log-every", type=options.COUNT)
    p.add_argument("--max-minutes", type=options.MINUTES,
                   help="stop (checkpoint + bundle) after this many minutes of training, "
                   "summed over resumes; when this is the tighter limit the schedules (LR "
                   "decay, v2's diversity weight) follow the time; 0 = no limit")
    p.add_argument("--bf16", dest="bf16", action="store_true", default=None,
                   help="bf16 autocast (default on for tiny)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    p.add_argument("--threads", type=options.THREADS, help="CPU threads per process (0 = torch default; "
                   "-1 = auto, the cores the load average shows idle: the tiny presets' default, "
                   "as extra threads are much slower on a busy machine)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


# Hyper-parameter options, by type (each --name-with-dashes sets the config key); the ones with
# help texts of their own are added by hand. Every option named like a setting reaches the config
# (_overrides).
V1_INTS = ("conv_dim", "repeat_num", "d_conv_dim", "d_repeat_num", "n_critic")
V1_FLOATS = ("lambda_cls", "lambda_cls_g", "lambda_cls_aux", "lambda_rec", "lambda_gp", "lambda_id",
             "lambda_adv", "g_lr", "d_lr", "p_single")
V2_INTS = ("dim_in", "max_conv_dim", "style_dim", "latent_dim", "hidden_dim")
V2_FLOATS = ("lambda_reg", "lambda_sty", "lambda_ds", "lambda_cyc", "lambda_id", "lambda_adv", "lr",
             "f_lr", "weight_decay", "ema_beta")


# The range each typed option is checked against (options.py); the rest: ints >= 1, floats >= 0.
_RANGES = {"repeat_num": options.COUNT_OR_NONE, "p_single": options.FRACTION,
           "ema_beta": options.FRACTION}


def _typed_options(parser, ints, floats) -> None:
    for names, kind in ((ints, options.COUNT), (floats, options.NON_NEGATIVE)):
        for name in names:
            parser.add_argument("--" + name.replace("_", "-"), type=_RANGES.get(name, kind),
                                dest=name)


def _warm_start_options(parser) -> None:
    parser.add_argument("--ae-iters", type=options.COUNT_OR_NONE, dest="ae_iters",
                        help="first N iterations: G only learns to return its input (L1, the "
                             "input's own labels / style); 0 = off (paper)")
    parser.add_argument("--ae-lr", type=options.NON_NEGATIVE, dest="ae_lr",
                        help="learning rate of G (and v2's E and F) during the --ae-iters warm-up")
    parser.add_argument("--gan-ramp", type=options.COUNT_OR_NONE, dest="gan_ramp",
                        help="after the warm-up, G's adversarial and classification (v2: "
                             "diversity) weights rise linearly over N iterations; 0 = off (paper)")
    parser.add_argument("--lr-ramp", type=options.COUNT_OR_NONE, dest="lr_ramp",
                        help="after the warm-up, G's (v2: and E's and F's) learning rate rises "
                             "linearly over N iterations, so Adam's moments from the warm-up "
                             "do not turn the first GAN gradients into large steps; 0 = off")
    parser.add_argument("--lambda-keep", type=options.NON_NEGATIVE, dest="lambda_keep",
                        help="weight of L1(G(x, target), x): change no more than the edit needs; "
                             "0 = off (paper)")
    parser.add_argument("--lambda-ssim", type=options.NON_NEGATIVE, dest="lambda_ssim",
                        help="weight of 1 - SSIM of G's reconstructions (identity and cycle) "
                             "beside their L1: keeps local structure that L1 alone blurs; "
                             "0 = off (paper)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a StarGAN v1 or v2 model (ends with a bundle)",
        description="Train StarGAN v1 (CelebA layout, RaFD-style class folders, or both jointly) "
                    "or v2 (train/<domain>/ folders). Checkpoints are atomic; --resume continues "
                    "a killed run. Use torchrun for several processes.")
    archs = parser.add_subparsers(dest="arch", metavar="ARCH", required=True)
    v1 = archs.add_parser("v1", help="StarGAN v1 (WGAN-GP, attribute labels)")
    _common(v1)
    v1.add_argument("--attrs", help="comma-separated CelebA attributes "
                    "(default Black_Hair,Blond_Hair,Brown_Hair,Male,Young)")
    v1.add_argument("--rafd", type=Path, help="RaFD-style class folders for joint training "
                    "(--data must be the CelebA layout)")
    _typed_options(v1, V1_INTS, V1_FLOATS)
    v1.add_argument("--augment", type=options.FRACTION, help="shift what D sees by up to this fraction of "
                    "the image (DiffAugment translation); 0 = off (paper), tiny 0.125")
    v1.add_argument("--ema-beta", type=options.FRACTION, dest="ema_beta",
                    help="keep an EMA generator "
                    "(the bundle's weights) with this beta; 0 = off (paper), tiny 0.999")
    v1.add_argument("--decay-iters", type=options.COUNT_OR_NONE,
                    help="linear LR decay over the last N iterations")
    _warm_start_options(v1)
    v1.set_defaults(func=run_v1)

    v2 = archs.add_parser("v2", help="StarGAN v2 (styles; train/<domain>/ folders)")
    _common(v2)
    v2.add_argument("--domains", help="comma-separated subset of the domain folders")
    v2.add_argument("--w-hpf", type=options.W_HPF, dest="w_hpf",
                    help="high-pass skip weight (needs --fan); 0 = none")
    v2.add_argument("--fan", type=Path, help="FAN weights (a bundle with a fan network, or a "
                    "state-dict file) for the face masks when --w-hpf > 0")
    _typed_options(v2, V2_INTS, V2_FLOATS)
    v2.add_argument("--ds-iters", type=options.COUNT_OR_NONE,
                    help="iterations over which lambda_ds decays to 0")
    _warm_start_options(v2)
    v2.set_defaults(func=run_v2)


def _changes(args, run_keys) -> list[str] | None:
    """--change NAME,...: the loss weights a resumed run may take new values of."""
    if args.change is None:
        return None
    names = [n.strip().replace("-", "_") for n in args.change.split(",") if n.strip()]
    weights = [k for k in run_keys if k.startswith("lambda_")]
    bad = [n for n in names if n not in weights]
    if bad or not names:
        raise UserError(f"--change {args.change!r}: only loss weights may change on resume; "
                        f"choose among {', '.join(w.replace('_', '-') for w in weights)}")
    if not args.resume:
        raise UserError("--change only applies to --resume (a new run takes any settings)")
    return names


def _overrides(args, settings) -> dict:
    """Every parsed option that names one of the solver's settings (None: not given). Derived
    from the settings, so a new option cannot be dropped on the way (--gan-ramp once was)."""
    return {n: getattr(args, n, None) for n in settings if hasattr(args, n)}


def _check_resume(args) -> None:
    """--resume continues a run; where there is none, refuse instead of silently starting one."""
    from stargan_train.checkpoints import CKPT_NAME

    if args.resume and not (args.out / CKPT_NAME).is_file():
        where = "does not exist" if not args.out.exists() else f"has no {CKPT_NAME}"
        raise UserError(f"--resume: {args.out} {where}, so there is no run to continue; drop "
                        "--resume to start a new run there, or give the --out of the run")


def _train(args, trainer) -> int:
    try:
        summary = trainer.train()
    finally:
        trainer.dist.close()
    if not trainer.dist.main:
        return 0
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"trained {summary['iterations']} iterations in {summary['seconds']} s"
              + (" (stopped at --max-minutes; --resume continues)" if summary["stopped_early"]
                 else "") + f"; bundle: {summary.get('bundle')}")
    return 0


def run_v1(args) -> int:
    from stargan_train.solver_v1 import PRESETS, RUN_KEYS, V1Trainer, make_config

    over = _overrides(args, PRESETS["paper"])
    if args.attrs is not None:
        attrs = [a.strip() for a in args.attrs.split(",") if a.strip()]
        if not attrs:
            raise UserError("--attrs is empty; give comma-separated attribute names")
        over["attrs"] = attrs
    _check_resume(args)
    cfg = make_config(args.preset, seed=args.seed, change_on_resume=_changes(args, RUN_KEYS),
                      **over)
    if args.iters is not None and args.decay_iters is None:
        cfg["decay_iters"] = min(cfg["decay_iters"], args.iters // 2)
    return _train(args, V1Trainer(args.data, args.out, cfg, resume=args.resume,
                                  rafd_dir=args.rafd, device=args.device, quiet=args.quiet))


def run_v2(args) -> int:
    from stargan_train.solver_v2 import PRESETS, RUN_KEYS, V2Trainer, make_config

    over = _overrides(args, PRESETS["paper"])
    if args.domains is not None:
        over["domains"] = [d.strip() for d in args.domains.split(",") if d.strip()]
    _check_resume(args)
    cfg = make_config(args.preset, seed=args.seed, change_on_resume=_changes(args, RUN_KEYS),
                      **over)
    if args.iters is not None and args.ds_iters is None:
        cfg["ds_iters"] = min(cfg["ds_iters"], args.iters)
    return _train(args, V2Trainer(args.data, args.out, cfg, resume=args.resume, fan=args.fan,
                                  device=args.device, quiet=args.quiet))
