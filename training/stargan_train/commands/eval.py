"""`stargan-rt eval`: judge a model the StarGAN v1 paper's way (an independent classifier)."""
from __future__ import annotations

from pathlib import Path

from stargan_rt import options
from stargan_rt.defaults import MODEL_HELP
from stargan_rt.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a model: target-attribute accuracy, kept attributes, "
                     "reconstruction, diversity (and FID/LPIPS with user weights)",
        description="Trains a small independent attribute classifier on the data set's own labels "
                    "(CelebA layout: the model's attributes; folder layout: its domains), "
                    "translates held-out images with the PyTorch reference model to every target "
                    "and reports how often the classifier sees the target (per attribute), how "
                    "often untouched attributes are kept (v1), reconstruction L1 and, for v2, "
                    "diversity between latent seeds, and KID to real images on the classifier's "
                    "features. On data sets made by `stargan-rt data synth` each output is also "
                    "judged against the true counterfactual (the same face re-rendered with only "
                    "the target changed): PSNR, SSIM and background error next to the score of "
                    "returning the input unchanged. Prints a table; --report writes JSON; "
                    "--samples writes input | counterfactual | output grids.")
    parser.add_argument("--model", help=f"{MODEL_HELP}; default demo-v1 (--arch v2: demo-v2)")
    parser.add_argument("--arch", choices=("v1", "v2"), default="v1",
                        help="which built-in demo model when --model is not given")
    parser.add_argument("--data", type=Path, required=True,
                        help="data set: CelebA layout (list_attr_celeba.txt + images/) or "
                             "folders (train/<domain>/ [+ val/<domain>/], or <domain>/)")
    parser.add_argument("--test-data", type=Path,
                        help="translate this data set's images instead of --data's held-out part")
    parser.add_argument("--max-images", type=options.COUNT, default=200,
                        help="held-out images to translate (default 200)")
    parser.add_argument("--seeds", type=options.COUNT, default=3,
                        help="v2: latent seeds per target domain (default 3)")
    parser.add_argument("--classifier-epochs", type=options.COUNT, default=15)
    parser.add_argument("--classifier-seconds", type=options.SECONDS, default=120.0,
                        help="stop classifier training after this long (default 120)")
    parser.add_argument("--classifier-cache", type=Path, metavar="FILE",
                        help="reuse the classifier saved here when it was trained on the same "
                             "data and settings; else train and save it (safetensors)")
    parser.add_argument("--seed", type=options.SEED, default=0, help="split / classifier seed")
    parser.add_argument("--report", type=Path, help="write the full results as JSON here")
    parser.add_argument("--samples", type=Path, help="write a PNG grid of inputs and outputs")
    parser.add_argument("--inception", help="FID: pytorch-fid Inception v3 weights "
                                            "(pt_inception-2015-12-05; .pth or .safetensors)")
    parser.add_argument("--lpips", help="LPIPS: the linear-layer weights (lpips v0.1 alex.pth)")
    parser.add_argument("--lpips-backbone", help="LPIPS: AlexNet weights (torchvision "
                                                 "alexnet-owt-7be5be79.pth)")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    parser.set_defaults(func=run)


def run(args) -> int:
    from stargan_rt.defaults import resolve_model

    try:
        from stargan_train.evaluate import format_table, run_evaluation, write_report
    except ImportError as exc:
        raise UserError(f"eval needs the training extra (torch) and the stargan_train package "
                        f"({exc}); install with `pip install -e .[train]`")
    if args.classifier_epochs <= 0 or args.classifier_seconds <= 0:
        raise UserError("--classifier-epochs and --classifier-seconds must be positive")
    if bool(args.lpips) != bool(args.lpips_backbone):
        raise UserError("LPIPS needs both --lpips (linear layers) and --lpips-backbone (AlexNet)")
    model = resolve_model(args.model, args.arch)
    report = run_evaluation(
        model, args.data, max_images=args.max_images, seeds=args.seeds,
        classifier_epochs=args.classifier_epochs, classifier_seconds=args.classifier_seconds,
        seed=args.seed, test_data=args.test_data, inception=args.inception, lpips=args.lpips,
        lpips_backbone=args.lpips_backbone, samples_path=args.samples,
        classifier_cache=args.classifier_cache,
        log=(lambda *_: None) if args.quiet else print)
    print(format_table(report))
    if args.report:
        write_report(args.report, report)
        print(f"report: {args.report}")
    return 0
