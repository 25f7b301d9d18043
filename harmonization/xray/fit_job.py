"""``medbench harmonize fit`` as a library function: reference classifier, GDCE, baselines, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harmonization.xray.baselines import create_harmonizer
from harmonization.xray.classifier import train_classifier
from harmonization.xray.curves import curve_values
from harmonization.xray.evaluate import (
    PerVendorGDCE,
    curves_figure,
    evaluate_methods,
    gdce_transform,
    histograms_figure,
)
from harmonization.xray.features import feature_network_from_source, random_conv_features
from harmonization.xray.gdce import GDCEConfig, fit_gdce, save_predictor
from harmonization.xray.pipeline import load_images
from medbench.errors import InputError
from medbench.eval.report import HtmlReport
from medbench.utils.files import atomic_path

log = logging.getLogger(__name__)

BASELINES = ("histmatch", "zscore", "histeq", "clahe", "minmax")


def _feature_net(name: str):
    if name == "random":
        return random_conv_features(), "fixed random conv features"
    if name == "auto":
        try:
            return feature_network_from_source("efficientnet-lite0-imagenet"), "efficientnet-lite0-imagenet blocks.1"
        except Exception as exc:  # noqa: BLE001 - fall back to weights-free features
            log.warning("no pretrained feature network (%s); using fixed random conv features", exc)
            return random_conv_features(), "fixed random conv features"
    return feature_network_from_source(name), name


def resolve_vendor_column(df: pd.DataFrame, column: str) -> str:
    """Find ``column`` case-insensitively (the manifest says ``manufacturer``, DICOM ``Manufacturer``)."""
    for c in df.columns:
        if c.lower() == column.lower():
            return c
    if column.lower() == "manufacturer" and "vendor" in df.columns:
        return "vendor"
    raise InputError(f"vendor column {column!r} not in the table (columns: {list(df.columns)})")


def fit_harmonizer(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    vendor_column: str,
    reference: str,
    label: str = "label",
    size: int = 128,
    steps: int = 400,
    lr: float = 1e-3,
    classifier_source: str | None = None,
    classifier_arch: str | None = None,
    classifier_epochs: int = 20,
    feature_source: str = "auto",
    feature_weight: float = 1.0,
    baselines: tuple[str, ...] = BASELINES,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit GDCE on a labelled multi-vendor table and compare it with the baselines.

    Writes ``model.pt`` (the predictor), ``results.csv`` (AUC per method x vendor), ``report.html``.
    The reference classifier is :class:`~harmonization.xray.classifier.SmallCnn` trained from
    scratch unless ``classifier_source``/``classifier_arch`` name a medbench source (see
    :func:`~harmonization.xray.classifier.resolve_source`). Per-image baselines (``baselines``)
    each retrain that classifier on normalised reference images.
    """
    from medbench.train.experiment import assign_splits, prepare_table

    out = Path(out_dir)
    methods_base = {b: create_harmonizer(b) for b in baselines}  # unknown names fail before any training
    vcol = resolve_vendor_column(table, vendor_column)
    df = prepare_table(table, label)
    vendor_of = df[vcol].astype(str).to_numpy()
    vendors = sorted(set(vendor_of))
    if reference not in vendors:
        raise InputError(f"reference vendor {reference!r} not found in column {vcol!r}: vendors are {vendors}")
    if len(vendors) < 2:
        raise InputError("harmonization needs at least one vendor besides the reference")
    df["split"] = assign_splits(df, val_frac=0.15, test_frac=0.3, seed=seed)
    images = load_images(df["path"].tolist(), size)
    y = df[label].to_numpy()
    is_ref = vendor_of == reference
    part = {s: (df["split"] == s).to_numpy() for s in ("train", "val", "test")}
    ref_train = (images[is_ref & ~part["test"]], y[is_ref & ~part["test"]])
    ref_test = (images[is_ref & part["test"]], y[is_ref & part["test"]])
    log.info("training the reference classifier on %d %s images", len(ref_train[0]), reference)
    clf_kw = {"source": classifier_source, "arch": classifier_arch, "epochs": classifier_epochs, "seed": seed,
              "progress": progress}
    clf = train_classifier(*ref_train, out / "reference_classifier", **clf_kw)

    def retrain(x: np.ndarray, yy: np.ndarray, name: str):
        return train_classifier(x, yy, out / f"classifier_{name}", **clf_kw)

    feat, feat_desc = _feature_net(feature_source)
    cfg = GDCEConfig(steps=steps, lr=lr, input_size=min(256, size), seed=seed, lambda_feat=feature_weight)
    fits = {}
    for v in vendors:
        if v == reference:
            continue
        is_v = vendor_of == v
        tr, va = is_v & part["train"], is_v & part["val"]
        if len(np.unique(y[tr])) < 2:
            raise InputError(f"vendor {v!r} has fewer than two classes in its training part: add more images")
        log.info("fitting GDCE for %s (%d training images)", v, int(tr.sum()))
        has_val = len(np.unique(y[va])) == 2
        fits[v] = fit_gdce(clf, feat, images[tr], y[tr], *ref_train,
                           val_images=images[va] if has_val else None,
                           val_labels=y[va] if has_val else None, cfg=cfg, progress=progress)
    predictors = {v: r.predictor for v, r in fits.items()}
    save_predictor(predictors, out / "model.pt", cfg, reference=reference)
    vendor_tests = {v: (images[(vendor_of == v) & part["test"]], y[(vendor_of == v) & part["test"]])
                    for v in vendors if v != reference}
    methods = {"gdce": PerVendorGDCE(predictors), **methods_base}
    results = evaluate_methods(clf, ref_train, ref_test, vendor_tests, methods, retrain=retrain)
    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    _report(out, results, fits, vendor_tests, ref_test, reference, feat_desc)
    return {"results": results, "predictors": predictors, "fits": fits, "classifier": clf}


def _report(out: Path, results: pd.DataFrame, fits, vendor_tests, ref_test, reference: str, feat_desc: str) -> None:
    rep = HtmlReport("Cross-vendor harmonization (GDCE)", subtitle=f"reference vendor: {reference}")
    wide = results.pivot_table(index="method", columns="vendor", values="auc")
    rep.heading("Summary")
    none_row, gdce_row = wide.loc["none"], wide.loc["gdce"]
    others = [v for v in wide.columns if v != "reference"]
    rep.text(f"Reference-vendor AUC {none_row['reference']:.3f}. Mean AUC on the other vendors: "
             f"{none_row[others].mean():.3f} without harmonization, {gdce_row[others].mean():.3f} after GDCE.")
    rep.text("GDCE curves fix 0 and 1 and are monotone: a vendor look that moves the end points "
             "(e.g. a compressed sigmoid range) cannot be undone by GDCE; histogram matching can.", css_class="note")
    rep.table(wide.reset_index(), caption="AUC of the reference classifier per method and vendor "
              "(per-image normalisations use a classifier retrained on normalised reference images)")
    sep = results.drop_duplicates("method")[["method", "vendor_accuracy", "retrained"]]
    rep.table(sep, caption=f"Vendor-classifier accuracy (chance = {1 / (len(vendor_tests) + 1):.2f}); lower is better")
    curves = {}
    grid = np.linspace(0, 1, 101)
    with torch.no_grad():
        for v, (x, _) in vendor_tests.items():
            a = fits[v].predictor(torch.from_numpy(x[:, None])).mean(0).numpy()
            curves[f"GDCE mean curve: {v}"] = (grid, curve_values(a, 101))
    rep.heading("Fitted curves").figure(curves_figure(curves))
    before = {"reference": ref_test[0], **{v: x for v, (x, _) in vendor_tests.items()}}
    after = {"reference": ref_test[0], **{v: gdce_transform(fits[v].predictor)(x) for v, (x, _) in vendor_tests.items()}}
    rep.heading("Intensity histograms").figure(histograms_figure(before, title="before"))
    rep.figure(histograms_figure(after, title="after GDCE"))
    rows = [{"vendor": v, "best_step": r.best_step, "worst_recall": r.best_worst_recall} for v, r in fits.items()]
    rep.heading("Training").table(pd.DataFrame(rows), caption=f"feature network: {feat_desc}; model selection "
                                  "by worst per-class recall on the vendor's validation images")
    rep.save(out / "report.html")
