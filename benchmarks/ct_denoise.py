"""Low-dose CT denoising: a realistic-geometry benchmark (default) and the two-stage ablation.

Benchmark (default): 512-px phantoms at 0.7 mm (a 36 cm field of view), 720 parallel-beam views,
Shepp-Logan FBP (the authors' filter; ``--filter ramp`` to compare), Poisson noise at N0 = 2.5e4.
Every denoiser is fitted to the benchmark's own geometry and dose, on data disjoint from the test
volumes (phantom uids ``train-i``/``val-0``/``test-i`` draw independent random streams):

- classical ones are tuned on the validation phantom with grids that auto-extend at their edges
  (BM3D with the FBP noise spectrum of ``--filter`` and, for comparison, white noise);
- the learned ones (two-stage, RED-CNN) are trained here with the existing training code
  (:mod:`harmonization.ct.training`) on ``--train-volumes`` x ``--train-slices`` training phantoms,
  both with the same budget: ``--epochs`` x ``--iters`` steps of 16 patches per network (the
  two-stage model has two networks, each trained with that budget). The budget is in the table.
  Models resume from ``--work-dir/train-<model>`` (a run folder; a changed setting is refused).

Metrics per test volume, then mean and a t-based 95% CI over volumes: PSNR/SSIM (soft-tissue
window, field-of-view mask), the same without the mask, scikit-image's default SSIM (7x7 uniform
window, whole image; ldct-benchmark's convention), noise SD of (denoised - reference) in flat
ROIs, MTF50 and its ratio to full dose. Test volumes have ``--test-slices`` slices (default 3) so
that the image-domain networks see real adjacent slices, as in training.

    python benchmarks/ct_denoise.py --work-dir /tmp/ct_bench [--size 512 --pixel-mm 0.7 --views 720]

Ablation (``--ablation``): trains each variant with the same budget on the same simulated phantoms (resumable, in --work-dir),
tunes the classical baselines on a validation phantom, and evaluates everything on held-out
phantoms at N0 = 2.5e4. Prints a markdown table and writes ``ablation.csv``/``ablation.json``.

Usage:
    python benchmarks/ct_denoise.py --ablation --work-dir /tmp/ct_ablation [--bm3d] [--redcnn] [--n-test 4]
    python benchmarks/ct_denoise.py --work-dir /tmp/ct_mixed --mixed-doses 1e4,2.5e4,1e5

``--mixed-doses`` trains the full model and the no-prior variant on volumes simulated at the listed
photon counts (cycled) and evaluates both at each of them: at one fixed training dose the noise
prior is a deterministic function of the sinogram and carries no extra information, so its value
shows when the dose varies.

The default training settings are those of the bundled ``harmonization/ct/weights/two_stage.pt``
(``medbench denoise train --epochs 10 --iters 100``), so the "two_stage" row can reuse it when its
recorded geometry (views, pixel size, FBP filter) equals the data's; the bundled weights were
trained with the ramp filter, so with today's Shepp-Logan default the ablation trains them here.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from medbench.eval.intervals import t_interval


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
    ap.add_argument("--ablation", action="store_true", help="run the 64-px two-stage ablation instead")
    ap.add_argument("--size", type=int, default=512, help="benchmark: slice size in pixels")
    ap.add_argument("--pixel-mm", type=float, default=0.7, help="benchmark: pixel size in mm")
    ap.add_argument("--views", type=int, default=720, help="benchmark: projection views")
    ap.add_argument("--test-slices", type=int, default=3, help="benchmark: slices per test volume")
    ap.add_argument("--train-volumes", type=int, default=8, help="benchmark: training phantom volumes")
    ap.add_argument("--train-slices", type=int, default=3, help="benchmark: slices per training volume")
    ap.add_argument("--filter", default="shepp-logan",
                    help="benchmark: FBP filter (scikit-image name; the authors' is shepp-logan)")
    ap.add_argument("--tune-crop", type=int, default=256,
                    help="benchmark: tune on the central crop of this size of the validation slice")
    ap.add_argument("--no-learned", action="store_true", help="benchmark: skip the learned models")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if not args.ablation and not args.mixed_doses:
        benchmark(args)
        return

    from harmonization.ct.denoisers import WEIGHTS_DIR, create_denoiser
    from harmonization.ct.evaluation import compare, make_cases, summarise, tune_classical
    from harmonization.ct.training import (
        DenoiserTrainConfig,
        make_training_data,
        train_redcnn,
        train_two_stage,
    )

    cfg = DenoiserTrainConfig(epochs=args.epochs, iters_per_epoch=args.iters, lr_drop_epoch=(2 * args.epochs) // 3)
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
        if name == "two_stage" and not args.retrain_full and _bundled_matches(WEIGHTS_DIR / "two_stage.pt", data):
            ckpts[name] = WEIGHTS_DIR / "two_stage.pt"
            continue
        t = time.time()
        ckpts[name] = train_two_stage(data, c, args.work_dir / name)
        train_time[name] = time.time() - t
    if args.redcnn:
        if not args.retrain_full and _bundled_matches(WEIGHTS_DIR / "redcnn.pt", data):
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


def _bundled_matches(path: Path, data) -> bool:
    """Whether a bundled checkpoint was trained at the training data's geometry (views, pixel, filter).

    Checkpoints without a recorded geometry (the bundled RED-CNN) or filter predate the Shepp-Logan
    default and were ramp-filtered at 180 views, 5 mm; a mismatch means the variant is trained here.
    """
    from dataclasses import asdict

    from harmonization.ct.learned import load_checkpoint

    if not path.exists():
        return False
    recorded = {"n_views": 180, "pixel_mm": 5.0, "filter_name": "ramp", **(load_checkpoint(path).get("geometry") or {})}
    want = asdict(data[0].geometry)
    same = all(recorded[k] == want[k] for k in ("n_views", "pixel_mm", "filter_name"))
    if not same:
        logging.getLogger("ct_denoise").info("bundled %s was trained at %s, the data are %s: training it here",
                                             path.name, recorded, want)
    return same


def _ci(values) -> tuple[float, float]:
    """Mean and half-width of a t-based 95% CI over volumes (NaN half-width for one volume)."""
    mean, _, hi, _ = t_interval(values)
    return mean, hi - mean


def benchmark(args: argparse.Namespace) -> None:
    """Realistic-geometry benchmark: classical denoisers tuned and learned ones trained at its geometry."""
    import numpy as np
    import pandas as pd
    from skimage.metrics import structural_similarity

    from harmonization.ct.denoisers import create_denoiser, grid_edges, tune
    from harmonization.ct.evaluation import make_cases, measure
    from harmonization.ct.quality import SOFT_TISSUE, psnr, ssim
    from harmonization.ct.simulate import Geometry

    log = logging.getLogger("ct_denoise")
    t0 = time.time()
    geo = Geometry(n_views=args.views, pixel_mm=args.pixel_mm, filter_name=args.filter)
    val = make_cases(1, 1, size=args.size, n0=args.n0, geometry=geo, split="val")
    test = make_cases(args.n_test, args.test_slices, size=args.size, n0=args.n0, geometry=geo, split="test")
    log.info("simulated %d test volumes at %d px, %.2f mm, %d views in %.0f s", len(test), args.size,
             args.pixel_mm, args.views, time.time() - t0)
    k = min(args.tune_crop, args.size)
    a = (args.size - k) // 2
    ld_v, fd_v = val[0].sim.ld_hu[:, a:a + k, a:a + k], val[0].sim.fd_hu[:, a:a + k, a:a + k]
    fixed = {"bm3d": {"filter_name": geo.filter_name}, "bm3d_white": {"psd": "white"}}
    dens, tuning = {"fbp": create_denoiser("fbp")}, {}
    for label in ("gaussian", "bilateral", "nlm", "bm3d", "bm3d_white"):
        name = label.split("_")[0]
        t = time.time()
        best, scores = tune(name, ld_v, fd_v, fixed=fixed.get(label))
        dens[label] = create_denoiser(name, **best, **fixed.get(label, {}))
        tuning[label] = {"best": best, "at_edge": grid_edges(best, scores), "n_tried": len(scores),
                         "val_psnr": max(v for _, v in scores), "seconds": time.time() - t}
        log.info("tuned %s: %s", label, tuning[label])
    dens["nlm_auto_h"] = create_denoiser("nlm")  # untuned: h from the estimated noise SD
    budget = {label: f"tuned on val ({t['n_tried']} settings)" for label, t in tuning.items()}
    training: dict = {}
    if not args.no_learned:
        trained, training = train_learned(args, geo, test)
        for label, path in trained.items():
            dens[label] = create_denoiser(label, checkpoint=path)
            budget[label] = training["budget"]
    rows = []
    for case in test:
        ref = case.sim.fd_hu
        ones = np.ones(ref.shape[-2:], bool)
        lo, hi = SOFT_TISSUE
        for label, den in dens.items():
            t = time.time()
            # the learned models were trained at this geometry, so the two-stage model gets the
            # simulated low-dose sinograms (the authors' setting), not a re-projection
            out = den(case.sim.ld_hu, pixel_mm=geo.pixel_mm, sinograms=case.sim.sino_ld, n0=case.sim.n0)
            dt = time.time() - t
            row = {"case": case.name, "denoiser": label, **measure(out, case), "seconds": dt}
            row["psnr_nofov"] = psnr(out, ref, mask=ones)
            row["ssim_nofov"] = ssim(out, ref, mask=ones)
            row["ssim_skimage"] = float(np.mean([
                structural_similarity(np.clip(o, lo, hi), np.clip(r, lo, hi), data_range=hi - lo)
                for o, r in zip(out, ref)]))
            rows.append(row)
            log.info("%s %s: PSNR %.2f (%.0f s)", case.name, label, row["psnr"], dt)
    table = pd.DataFrame(rows)
    metrics = ["psnr", "ssim", "psnr_nofov", "ssim_nofov", "ssim_skimage", "noise_sd", "mtf50", "mtf50_ratio",
               "seconds"]
    summ = []
    for label in dens:
        sub = table[table["denoiser"] == label]
        entry = {"denoiser": label, "fitted": budget.get(label, "none")}
        for m in metrics:
            if m in sub:
                entry[m], entry[m + "_ci"] = _ci(sub[m].dropna())
        summ.append(entry)
    summary = pd.DataFrame(summ)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.work_dir / "benchmark_per_volume.csv", index=False)
    summary.to_csv(args.work_dir / "benchmark.csv", index=False)
    settings = {n: {k: str(v) for k, v in d.params().items()} for n, d in dens.items()}
    meta = {"size": args.size, "pixel_mm": args.pixel_mm, "views": args.views, "filter": geo.filter_name,
            "n0": args.n0, "n_test": args.n_test, "test_slices": args.test_slices, "tune_crop": k,
            "tuning": tuning, "training": training, "settings": settings, "total_seconds": time.time() - t0}
    (args.work_dir / "benchmark.json").write_text(json.dumps(
        {"summary": summary.to_dict(orient="records"), **meta}, indent=2, default=str))
    lines = ["| denoiser | fitted | " + " | ".join(m for m in metrics) + " |",
             "|---" * (len(metrics) + 2) + "|"]
    for e in summ:
        cells = [f"{e[m]:.3f} ± {e[m + '_ci']:.3f}" if m in e else "" for m in metrics]
        lines.append(f"| {e['denoiser']} | {e['fitted']} | " + " | ".join(cells) + " |")
    (args.work_dir / "benchmark.md").write_text("\n".join(lines) + "\n")
    log.info("benchmark: %d px, %.2f mm, %d views, %s FBP, N0=%g, %d test volumes x %d slice(s); "
             "mean ± 95%% CI half-width over volumes\n%s\ntuning: %s\ntraining: %s\n%.0f s in all", args.size,
             args.pixel_mm, args.views, geo.filter_name, args.n0, args.n_test, args.test_slices, "\n".join(lines),
             tuning, training, time.time() - t0)


def train_learned(args: argparse.Namespace, geo, test) -> tuple[dict[str, Path], dict]:
    """Train the two-stage model and RED-CNN at the benchmark's geometry and dose, same budget.

    Training phantoms are the ``train`` split (uids ``train-i``), disjoint from the ``val``/``test``
    ones; a check refuses any training slice identical to a test slice.
    """
    from harmonization.ct.training import (
        DenoiserTrainConfig,
        make_training_data,
        train_redcnn,
        train_two_stage,
    )

    log = logging.getLogger("ct_denoise")
    cfg = DenoiserTrainConfig(epochs=args.epochs, iters_per_epoch=args.iters, lr_drop_epoch=(2 * args.epochs) // 3)
    t = time.time()
    data = make_training_data(args.train_volumes, args.train_slices, size=args.size, n0=args.n0, geometry=geo,
                              split="train")
    sim_s = time.time() - t
    test_keys = {c.sim.fd_hu[z].tobytes() for c in test for z in range(c.sim.fd_hu.shape[0])}
    if any(d.fd_hu[z].tobytes() in test_keys for d in data for z in range(d.fd_hu.shape[0])):
        raise RuntimeError("a training slice equals a test slice: the splits are not disjoint")
    log.info("simulated %d training volumes x %d slices in %.0f s", len(data), args.train_slices, sim_s)
    budget = (f"trained here: {cfg.epochs} ep x {cfg.iters_per_epoch} it x {cfg.batch_size} patches "
              f"{cfg.patch} px per net, {len(data)}x{args.train_slices} slices")
    paths, seconds = {}, {}
    for label, fn in (("two_stage", train_two_stage), ("redcnn", train_redcnn)):
        t = time.time()
        paths[label] = fn(data, cfg, args.work_dir / f"train-{label}", progress=False)
        seconds[label] = time.time() - t
        log.info("trained %s in %.0f s", label, seconds[label])
    info = {"budget": budget, "config": {k: str(v) for k, v in vars(cfg).items()},
            "train_volumes": len(data), "train_slices": args.train_slices, "simulate_seconds": sim_s,
            "train_seconds": seconds, "train_uids": [d.info["uid"] for d in data],
            "test_uids": [c.name for c in test]}
    return paths, info


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
