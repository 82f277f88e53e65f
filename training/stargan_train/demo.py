"""Re-create the built-in demo models: ``python -m stargan_train.demo``.

1. renders the synthetic face sets (stargan_rt.synth): a CelebA-layout set at 64 px and a
   three-domain hair-colour folder set at 64 px;
2. trains StarGAN v1 with ``--preset demo`` on Black_Hair, Blond_Hair, Brown_Hair, Smiling,
   Eyeglasses and StarGAN v2 with ``--preset demo`` (w_hpf 0) on black/blond/brown hair;
3. writes the bundles (v1: generator + discriminator; v2: EMA generator, mapping network, style
   encoder) to stargan_rt/assets/models/demo-v1 and demo-v2, replacing the old ones atomically.

Everything is seeded. The demo presets stop at their --max-minutes limits (120 min; --v1-minutes
/ --v2-minutes change them) or at their iteration counts. The shipped models ran side by side,
one core each: v1 with the preset as it is, 110 minutes, then --resume --v1-minutes 225 (it
reached the preset's 20,000 iterations after 216); v2 for 180 minutes, then --resume
--v2-minutes 240 --v2-lambda-ssim 2. So on
a slower or busier machine a run stops at an earlier
iteration, its schedules following the time (the bundle's manifest records the iteration and
whether it stopped early). Runs go on with --resume while --work is kept. Judge the result with
`stargan-rt eval` on faces of another seed (README, training).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stargan_rt.bundle import set_config
from stargan_rt.synth import HAAR_FRAMING

DEMO_ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling", "Eyeglasses"]
V2_DOMAINS = "black_hair,blond_hair,brown_hair"
ASSETS = Path(__file__).resolve().parents[2] / "stargan_rt" / "assets" / "models"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stargan_train.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("demo-work"),
                        help="folder for the data sets and training runs (default ./demo-work)")
    parser.add_argument("--assets", type=Path, default=ASSETS,
                        help="where demo-v1/ and demo-v2/ are written (default: the package's)")
    parser.add_argument("--only", choices=("v1", "v2"), help="train only one of the models")
    parser.add_argument("--count-v1", type=int, default=4000)
    parser.add_argument("--count-v2", type=int, default=1500)
    parser.add_argument("--v1-minutes", type=float, help="time cap (default: the demo preset's)")
    parser.add_argument("--v2-minutes", type=float, help="time cap (default: the demo preset's)")
    parser.add_argument("--v1-lambda-ssim", type=float,
                        help="weight of the SSIM term (default: the demo preset's); with "
                             "--resume it may differ from the run's checkpoint")
    parser.add_argument("--v2-lambda-ssim", type=float, help="the same for v2")
    parser.add_argument("--resume", action="store_true", help="continue killed training runs")
    args = parser.parse_args(argv)

    from stargan_train.data import load_celeba, load_folders
    from stargan_train.solver_v1 import V1Trainer
    from stargan_train.solver_v1 import make_config as v1_config
    from stargan_train.solver_v2 import V2Trainer
    from stargan_train.solver_v2 import make_config as v2_config
    from stargan_rt.synth import synthesize

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    report = {}
    if args.only in (None, "v1"):
        data_dir = work / "celeba64"
        if not (data_dir / "list_attr_celeba.txt").exists():
            print(f"rendering {args.count_v1} CelebA-layout faces -> {data_dir}", flush=True)
            synthesize(data_dir, count=args.count_v1, image_size=64, layout="celeba", seed=1)
        cfg = v1_config("demo", attrs=DEMO_ATTRS, seed=0, max_minutes=args.v1_minutes,
                        lambda_ssim=args.v1_lambda_ssim,
                        change_on_resume=["lambda_ssim"] if args.v1_lambda_ssim is not None
                        else None)
        data = load_celeba(data_dir, DEMO_ATTRS, 64)
        # The discriminator stays: the runtime estimates a face's own attributes with its
        # classifier head before flipping the requested one (about 11 MB at this size).
        report["v1"] = _train_demo(
            lambda: V1Trainer(None, work / "run-v1", cfg, resume=args.resume, data=data),
            args.assets / "demo-v1", "demo-v1 (synthetic faces, 64 px)", discriminator=True)
    if args.only in (None, "v2"):
        data_dir = work / "hair64"
        if not (data_dir / "domains.txt").exists():
            print(f"rendering {args.count_v2} hair-colour faces -> {data_dir}", flush=True)
            synthesize(data_dir, count=args.count_v2, image_size=64, layout="folders", seed=2,
                       domains=V2_DOMAINS)
        cfg = v2_config("demo", seed=0, max_minutes=args.v2_minutes,
                        lambda_ssim=args.v2_lambda_ssim,
                        change_on_resume=["lambda_ssim"] if args.v2_lambda_ssim is not None
                        else None)
        data = load_folders(data_dir, 64)
        report["v2"] = _train_demo(
            lambda: V2Trainer(None, work / "run-v2", cfg, resume=args.resume, data=data),
            args.assets / "demo-v2", "demo-v2 (synthetic faces, hair colours, 64 px)",
            discriminator=False)
    return 0


def _train_demo(make_trainer, bundle_path: Path, name: str, discriminator: bool) -> dict:
    """Train (or finish, with --resume) one demo run and install its bundle; returns the
    summary it also prints."""
    t0 = time.time()
    trainer = make_trainer()
    summary = trainer.train()
    bundle = trainer.write_bundle(bundle_path, include_discriminator=discriminator, name=name,
                                  stopped_early=summary["stopped_early"])
    # the synthetic faces' framing, so that live crops are framed like the training images
    bundle = set_config(bundle.path, **HAAR_FRAMING)
    report = {**summary, "wall_s": round(time.time() - t0), "bundle": str(bundle.path)}
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    sys.exit(main())
