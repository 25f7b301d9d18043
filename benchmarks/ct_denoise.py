"""Low-dose CT denoising ablation: two-stage model vs. no noise prior vs. no projection stage vs. baselines.

Trains each variant with the same budget on the same simulated phantoms (resumable, in --work-dir),
tunes the classical baselines on a validation phantom, and evaluates everything on held-out
phantoms at N0 = 2.5e4. Prints a markdown table and writes ``ablation.csv``/``ablation.json``.

Usage:
    python benchmarks/ct_denoise.py --work-dir /tmp/ct_ablation [--bm3d] [--redcnn] [--n-test 4]
    python benchmarks/ct_denoise.py --work-dir /tmp/ct_mixed --mixed-doses 1e4,2.5e4,1e5

``--mixed-doses`` trains the full model and the no-prior variant on volumes simulated at the listed
photon counts (cycled) and evaluates both at each of them: at one fixed training dose the noise
prior is a deterministic function of the sinogram and carries no extra information, so its value
shows when the dose varies.

The default training settings are those of the bundled ``harmonization/ct/weights/two_stage.pt``
(``medbench denoise train --epochs 10 --iters 100``), so the "two_stage" row can reuse it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=Path("ct_ablation"))
    ap.add_argument("--n-train", type=int, default=24, help="training volumes")
    ap.add_argument("--n-test", type=int, default=4, help="held-out volumes")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--n0", type=float, default=2.5e4)
    ap.add_argument("--bm3d", action="store_true", help="include BM3D (slow on CPU)")
    ap.add_argument("--redcnn", action="store_true", help="include RED-CNN")
    ap.add_argument("--retrain-full", action="store_true",
                    help="train the full model and RED-CNN instead of using the bundled ones")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mixed-doses", default="", help="comma-separated N0 list: run the mixed-dose ablation")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    from harmonization.ct.denoisers import WEIGHTS_DIR, create_denoiser
    from harmonization.ct.evaluation import compare, make_cases, summarise, tune_classical
    from harmonization.ct.training import (
        TrainConfig,
        make_training_data,
        train_redcnn,
        train_two_stage,
    )

    cfg = TrainConfig(epochs=args.epochs, iters_per_epoch=args.iters, lr_drop_epoch=(2 * args.epochs) // 3)
    if args.mixed_doses:
        mixed_dose(args, cfg)
        return
    t0 = time.time()
    data = make_training_data(args.n_train, args.slices, n0=args.n0)
    variants = {"two_stage": cfg, "no_noise_prior": replace(cfg, use_prior=False),
                "no_projection_stage": replace(cfg, use_projection=False)}
    ckpts = {}
    train_time = {}
    for name, c in variants.items():
        if name == "two_stage" and not args.retrain_full and (WEIGHTS_DIR / "two_stage.pt").exists():
            ckpts[name] = WEIGHTS_DIR / "two_stage.pt"
            continue
        t = time.time()
        ckpts[name] = train_two_stage(data, c, args.work_dir / name)
        train_time[name] = time.time() - t
    if args.redcnn:
        if not args.retrain_full and (WEIGHTS_DIR / "redcnn.pt").exists():
            ckpts["redcnn"] = WEIGHTS_DIR / "redcnn.pt"
        else:
            t = time.time()
            ckpts["redcnn"] = train_redcnn(data, cfg, args.work_dir / "redcnn")
            train_time["redcnn"] = time.time() - t

    val = make_cases(1, args.slices, n0=args.n0, split="val")
    test = make_cases(args.n_test, args.slices, n0=args.n0, split="test")
    classical = ["gaussian", "bilateral", "nlm"] + (["bm3d"] if args.bm3d else [])
    dens = {"fbp": create_denoiser("fbp"), **tune_classical(classical, val)}
    for name, path in ckpts.items():
        dens[name] = create_denoiser("redcnn" if name == "redcnn" else "two_stage", checkpoint=path)
    table = compare(dens, test)
    summary = summarise(table)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.work_dir / "ablation_per_volume.csv", index=False)
    summary.to_csv(args.work_dir / "ablation.csv", index=False)
    settings = {n: {k: str(v) for k, v in d.params().items()} for n, d in dens.items()}
    (args.work_dir / "ablation.json").write_text(json.dumps(
        {"summary": summary.to_dict(orient="records"), "settings": settings, "train_seconds": train_time,
         "n0": args.n0, "n_test": args.n_test, "total_seconds": time.time() - t0}, indent=2))
    logging.getLogger("ct_denoise").info("held-out phantoms, N0=%g, %d volumes\n%s\nsettings: %s",
                                         args.n0, args.n_test, _markdown(summary), settings)


def _markdown(summary, cols=("denoiser", "psnr", "ssim", "rmse", "noise_sd", "mtf50", "mtf50_ratio",
                             "seconds")) -> str:
    cols = [c for c in cols if c in summary.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in summary[cols].iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def mixed_dose(args: argparse.Namespace, cfg) -> None:
    """Train with/without the noise prior on mixed doses; evaluate both at every dose."""
    import pandas as pd

    from harmonization.ct.denoisers import create_denoiser
    from harmonization.ct.evaluation import compare, make_cases, summarise
    from harmonization.ct.training import make_training_data, train_two_stage

    doses = [float(v) for v in args.mixed_doses.split(",")]
    data = make_training_data(args.n_train, args.slices, n0=doses)
    dens = {}
    for name, c in {"two_stage": cfg, "no_noise_prior": replace(cfg, use_prior=False)}.items():
        dens[name] = create_denoiser("two_stage", checkpoint=train_two_stage(data, c, args.work_dir / name))
    dens = {"fbp": create_denoiser("fbp"), **dens}
    rows = []
    for n0 in doses:
        test = make_cases(args.n_test, args.slices, n0=n0, split="test")
        summ = summarise(compare(dens, test))
        summ.insert(1, "n0", n0)
        rows.append(summ)
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(args.work_dir / "mixed_dose.csv", index=False)
    logging.getLogger("ct_denoise").info("mixed-dose training %s, held-out phantoms (%d volumes)\n%s",
                                         doses, args.n_test, _markdown(table, cols=(
                                             "denoiser", "n0", "psnr", "ssim", "rmse", "mtf50_ratio")))


if __name__ == "__main__":
    main()
