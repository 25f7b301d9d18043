"""The ``denoise evaluate`` run: held-out phantoms, tuned baselines, metrics table, HTML report."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harmonization.ct.denoisers import DENOISERS, Denoiser, create_denoiser
from harmonization.ct.evaluation import (
    compare,
    comparison_figure,
    make_cases,
    summarise,
    tune_classical,
)
from harmonization.ct.quality import SOFT_TISSUE, edge_mtf, nps_2d, radial_nps
from harmonization.ct.simulate import Geometry
from medbench.eval.report import HtmlReport

log = logging.getLogger(__name__)


def build_denoisers(names: Sequence[str], val_cases: Sequence[Any], *,
                    checkpoints: Mapping[str, str | os.PathLike[str] | None] | None = None,
                    window: tuple[float, float] = SOFT_TISSUE) -> dict[str, Denoiser]:
    """Instantiate ``names``: classical ones tuned on ``val_cases``, learned ones from
    ``checkpoints[name]`` (missing or None: the bundled checkpoint)."""
    checkpoints = checkpoints or {}
    out: dict[str, Denoiser] = {}
    tunable = [n for n in names if DENOISERS.get(n).grid]
    tuned = tune_classical(tunable, val_cases, window=window) if tunable else {}
    for n in names:
        if n in tuned:
            out[n] = tuned[n]
        elif DENOISERS.get(n).learned:
            out[n] = create_denoiser(n, checkpoint=checkpoints.get(n))
        else:
            out[n] = create_denoiser(n)
    return out


def _mtf_nps_figure(images: dict[str, np.ndarray], case: Any):
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    px = case.sim.geometry.pixel_mm
    r, c, h, w = case.info.edge_roi
    ref = case.sim.fd_hu
    for name, img in {"full dose": ref, **images}.items():
        m = edge_mtf(img[:, r:r + h, c:c + w], pixel_mm=px)
        a1.plot(m.freqs, m.mtf, label=f"{name} (MTF50 {m.mtf50:.3f})")
        if name != "full dose" and case.info.flat_rois:
            rois = np.stack([(img - ref)[z, rr:rr + hh, cc:cc + ww]
                             for z in range(img.shape[0]) for rr, cc, hh, ww in case.info.flat_rois])
            f, p = radial_nps(*nps_2d(rois, pixel_mm=px))
            a2.plot(f, p, label=name)
    a1.set_xlabel("cycles/mm")
    a1.set_ylabel("MTF")
    a1.axhline(0.5, color="gray", lw=0.5)
    a1.set_ylim(0, 1.2)
    a1.legend(fontsize=7, loc="best")
    a2.set_xlabel("cycles/mm")
    a2.set_ylabel("NPS (HU^2 mm^2)")
    a2.set_yscale("log")
    if a2.lines:
        a2.legend(fontsize=7, loc="best")
    else:
        a2.text(0.5, 0.5, "no flat ROIs in this phantom", ha="center", transform=a2.transAxes)
    fig.tight_layout()
    return fig


def evaluate_to_folder(out_dir: str | os.PathLike[str], names: Sequence[str], *,
                       checkpoint: str | os.PathLike[str] | None = None,
                       redcnn_checkpoint: str | os.PathLike[str] | None = None,
                       checkpoints: Mapping[str, str | os.PathLike[str] | None] | None = None, n_volumes: int = 2,
                       n_slices: int = 8, size: int = 64, n0: float = 2.5e4,
                       geometry: Geometry = Geometry(), window: tuple[float, float] = SOFT_TISSUE,
                       seed: int = 0, restart: bool = False) -> dict[str, Path]:
    """Evaluate ``names`` on held-out phantoms; write metrics.csv, summary.csv, metrics.json, report.html.

    ``out_dir`` is a :func:`medbench.runs.open_run` run folder (``config.yaml``, ``denoise.log``);
    the evaluation is one unit: a re-run with the same settings returns the finished files, one with
    other settings (checkpoint contents included) is refused unless ``restart``. Learned denoisers
    load ``checkpoints[name]`` (default: bundled); ``checkpoint`` and ``redcnn_checkpoint`` are the
    CLI's ``--checkpoint``/``--redcnn-checkpoint`` shorthands for ``checkpoints={"two_stage": ...,
    "redcnn": ...}``.
    """
    from harmonization.ct.apply import WORKFLOW, file_fingerprint
    from medbench.runs import open_run

    out = Path(out_dir)
    paths = {"metrics": out / "metrics.csv", "summary": out / "summary.csv", "json": out / "metrics.json",
             "report": out / "report.html"}
    settings = {"command": "evaluate", "denoisers": list(names), "checkpoint": checkpoint,
                "checkpoint_sha256": file_fingerprint(checkpoint), "redcnn_checkpoint": redcnn_checkpoint,
                "redcnn_checkpoint_sha256": file_fingerprint(redcnn_checkpoint), "n_volumes": n_volumes,
                "n_slices": n_slices, "size": size, "n0": n0, "n_views": geometry.n_views,
                "pixel_mm": geometry.pixel_mm, "filter": geometry.filter_name, "window": list(window), "seed": seed}
    if checkpoints:  # learned denoisers' checkpoints by name (the CLI shorthands above also apply)
        settings["checkpoints"] = {k: {"path": None if v is None else str(v), "sha256": file_fingerprint(v)}
                                   for k, v in sorted(checkpoints.items())}
    ckpts = {k: v for k, v in (checkpoints or {}).items() if v is not None}
    if checkpoint is not None:  # --checkpoint: the default learned model's
        ckpts.setdefault("two_stage", checkpoint)
    if redcnn_checkpoint is not None:
        ckpts.setdefault("redcnn", redcnn_checkpoint)
    files = [p.name for p in paths.values()]
    with open_run(out, WORKFLOW, settings, outputs=files, restart=restart) as run:
        if run.unit_done("evaluate", settings, outputs=files):
            log.info("%s already evaluated with these settings", out)
            return paths
        _evaluate(run, paths, names, checkpoints=ckpts,
                  n_volumes=n_volumes, n_slices=n_slices, size=size, n0=n0, geometry=geometry, window=window,
                  seed=seed)
        run.mark_unit("evaluate", settings)
    return paths


def _evaluate(run: Any, paths: dict[str, Path], names: Sequence[str], *, checkpoints: Mapping[str, Any],
              n_volumes: int, n_slices: int, size: int, n0: float, geometry: Geometry,
              window: tuple[float, float], seed: int) -> None:
    val = make_cases(1, n_slices, size=size, n0=n0, geometry=geometry, seed=seed, split="val")
    test = make_cases(n_volumes, n_slices, size=size, n0=n0, geometry=geometry, seed=seed, split="test")
    dens = build_denoisers(names, val, checkpoints=checkpoints, window=window)
    outputs: dict[tuple[str, str], np.ndarray] = {}
    table = compare(dens, test, window=window, outputs=outputs)
    summary = summarise(table)
    for key, df in (("metrics", table), ("summary", summary)):
        run.write_table(paths[key].name, df)
    settings = {n: {k: str(v) for k, v in d.params().items()} for n, d in dens.items()}
    run.write_metrics({"summary": summary.to_dict(orient="records"), "settings": settings,
                                      "n0": n0, "window": list(window), "n_volumes": n_volumes,
                                      "n_slices": n_slices, "size": size, "n_views": geometry.n_views,
                                      "pixel_mm": geometry.pixel_mm, "seed": seed})
    case = next((c for c in test if c.info.flat_rois), test[0])  # one with flat ROIs for the NPS
    z = case.sim.ld_hu.shape[0] // 2
    outs = {n: outputs[(case.name, n)] for n in dens}  # computed by compare, not denoised again
    rep = HtmlReport("Low-dose CT denoising", subtitle=f"N0 = {n0:g}, {geometry.n_views} views, {size} px")
    rep.heading("Summary").text(
        f"Held-out synthetic phantoms ({n_volumes} volumes x {n_slices} slices). Reference: noise-free "
        f"full-dose FBP. PSNR/SSIM/RMSE on the HU window [{window[0]:g}, {window[1]:g}] inside the "
        "circular field of view; noise_sd = SD of (denoised - reference) in flat ROIs; MTF50 from the "
        "slice-averaged slanted-edge ROI (cycles/mm), mtf50_ratio relative to the full-dose FBP. "
        "Classical baselines were tuned by a PSNR grid search on a separate validation phantom.")
    rep.table(summary, float_format="{:.3f}")
    rep.heading("Settings").bullets([f"{n}: {s}" for n, s in settings.items()])
    rep.heading(f"Middle slice of test volume {case.name}")
    rep.figure(comparison_figure({n: o[z] for n, o in outs.items()}, case.sim.fd_hu[z], window=window),
               caption="Top: images in the window; bottom: difference to the full-dose FBP.")
    rep.heading("Resolution and noise texture")
    rep.figure(_mtf_nps_figure(outs, case), caption="Left: edge MTF; right: radial NPS of the error in flat ROIs.")
    rep.heading("Per volume").table(table, float_format="{:.3f}")
    rep.config({"denoisers": list(names), "checkpoints": {k: str(v) for k, v in checkpoints.items()},
                "n_volumes": n_volumes, "n_slices": n_slices, "size": size, "n0": n0, "n_views": geometry.n_views,
                "pixel_mm": geometry.pixel_mm, "window": list(window), "seed": seed, "denoiser_settings": settings})
    rep.save(paths["report"])
