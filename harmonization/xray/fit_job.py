"""``medbench harmonize fit`` as a library function: reference classifier, GDCE, baselines, report."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harmonization.xray.baselines import create_harmonizer
from harmonization.xray.classifier import train_classifier
from harmonization.xray.compare import (
    START,
    compare_with_global_curves,
    constant_predictor,
    predicted_params,
)
from harmonization.xray.curves import curve_values
from harmonization.xray.evaluate import (
    curves_figure,
    evaluate_methods,
    gdce_transform,
    histograms_figure,
)
from harmonization.xray.features import (
    feature_network_from_source,
    random_conv_features,
    vgg16_conv2_2,
)
from harmonization.xray.gdce import (
    RECIPES,
    GDCEConfig,
    fit_gdce,
    holdout_split,
    paper_config,
    save_predictor,
)
from harmonization.xray.pipeline import load_images
from medbench.errors import InputError
from medbench.eval.report import HtmlReport
from medbench.utils.files import atomic_path

log = logging.getLogger(__name__)

BASELINES = ("histmatch", "zscore", "histeq", "clahe", "minmax")
#: The registered harmonizer this job fits (against the reference classifier).
GDCE = "gdce"
#: Below this many test images of a class, AUCs and their CIs are flagged as unreliable.
MIN_PER_CLASS = 15


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


#: The fit's own outputs (removed by ``restart``), besides ``classifier_<baseline>/`` folders.
FIT_OUTPUTS = ("model.pt", "results.csv", "predictor_vs_global.csv", "report.html", "reference_classifier",
               "checkpoints")
#: Where each GDCE optimisation keeps its resume file (``fit_gdce(checkpoint=...)``).
CHECKPOINTS = "checkpoints"


def gdce_checkpoint(out: Path, vendor: str) -> Path:
    """The resume file of the GDCE fit for ``vendor`` (``"*"``: the pooled, any-vendor predictor)."""
    name = "pooled" if vendor == "*" else "".join(c if c.isalnum() or c in "-_." else "_" for c in vendor)
    if vendor != "*" and name != vendor:  # two vendors must not share a file
        name = f"{name}-{hashlib.sha256(vendor.encode()).hexdigest()[:8]}"
    return out / CHECKPOINTS / f"gdce_{name}.pt"


def fit_harmonizer(table: pd.DataFrame, out_dir: str | Path, *, restart: bool = False,
                   **kw: Any) -> dict[str, Any]:
    """:func:`_fit_harmonizer` in a :func:`medbench.runs.open_run` run folder (workflow ``harmonize``).

    The settings are every keyword (defaults filled in), a content hash of ``table`` and of the VGG
    weights: a re-run with the same settings returns the finished run (``results`` read back,
    ``resumed=True``; the reference classifiers resume inside their engine run folders when a run
    was killed), one with any other setting is refused listing every change unless ``restart``.
    """
    import inspect

    from harmonization.xray.pipeline import WORKFLOW
    from medbench.runs import open_run

    params = inspect.signature(_fit_harmonizer).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise TypeError(f"fit_harmonizer() got unexpected keyword(s) {unknown}")
    missing = sorted(k for k, v in params.items() if v.kind == v.KEYWORD_ONLY and v.default is v.empty and k not in kw)
    if missing:
        raise TypeError(f"fit_harmonizer() missing keyword(s) {missing}")
    args = {k: kw.get(k, v.default) for k, v in params.items() if v.kind == v.KEYWORD_ONLY}
    if args["recipe"] not in RECIPES:  # bad names fail before the run folder is written
        raise InputError(f"--recipe must be one of {RECIPES}, got {args['recipe']!r}")
    for name in args["baselines"]:
        create_harmonizer(name)
    if args["recipe"] == "paper":  # a missing or wrong VGG16 file fails before the run folder is written
        vgg16_conv2_2(str(args["vgg_weights"]) if args.get("vgg_weights") else None)
    settings = {"command": "fit", "table_sha256": _table_hash(table),
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items() if k != "progress"}}
    vgg = args.get("vgg_weights")
    settings["vgg_weights_sha256"] = _file_hash(vgg)
    out = Path(out_dir)
    outputs = [*FIT_OUTPUTS, *(f"classifier_{b}" for b in args["baselines"])]
    with open_run(out, WORKFLOW, settings, outputs=outputs, restart=restart) as run:
        files = ["model.pt", "results.csv", "report.html"]
        if run.unit_done("fit", settings, outputs=files):
            log.info("%s already holds this fit: returning its results", out)
            from harmonization.xray.gdce import load_predictors

            return {"results": pd.read_csv(out / "results.csv"), "predictors": load_predictors(out / "model.pt")[0],
                    "comparison": None, "resumed": True}
        res = _fit_harmonizer(table, out, **kw)
        results = res["results"]
        run.write_metrics({"auc": results[["method", "vendor", "auc", "auc_lo", "auc_hi"]].to_dict(orient="records"),
                           "keep_predictor": bool(res["comparison"].keep_predictor)})
        run.mark_unit("fit", settings)
    return {**res, "resumed": False}


def _table_hash(table: pd.DataFrame) -> str:
    digest = hashlib.sha256(",".join(map(str, table.columns)).encode())
    digest.update(pd.util.hash_pandas_object(table.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _file_hash(path: str | Path | None) -> str | None:
    if path is None or not Path(str(path)).is_file():
        return None
    from harmonization.xray.pipeline import model_fingerprint

    return model_fingerprint(path)


def _fit_harmonizer(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    vendor_column: str,
    reference: str,
    label: str = "label",
    size: int = 128,
    steps: int = 400,
    lr: float | None = None,
    recipe: str = "medbench",
    vgg_weights: str | Path | None = None,
    loss_lambda: float = 0.5,
    per_vendor: bool = False,
    classifier_source: str | None = None,
    classifier_arch: str | None = None,
    classifier_epochs: int = 20,
    feature_source: str = "auto",
    feature_weight: float = 1.0,
    baselines: tuple[str, ...] = BASELINES,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit GDCE on a labelled multi-vendor table and compare it with the baselines.

    Writes ``model.pt`` (the predictor, with its recipe), ``checkpoints/gdce_*.pt`` (each GDCE
    optimisation's resume file: a killed fit resumes mid-optimisation), ``results.csv`` (AUC with patient-level
    CIs per method x vendor), ``predictor_vs_global.csv`` and ``report.html``. One
    image-conditioned predictor (``"*"``) is fitted on all non-reference vendors pooled, so that
    ``harmonize apply`` needs no vendor name; ``per_vendor=True`` adds one per source vendor (the
    authors' setup, one enhancer per source machine). The pooled predictor is kept only when it
    beats the best single global curve on validation images; otherwise that curve is saved.

    The reference classifier is :class:`~harmonization.xray.classifier.SmallCnn` trained from
    scratch unless ``classifier_source``/``classifier_arch`` name a medbench source (see
    :func:`~harmonization.xray.classifier.resolve_source`). Per-image baselines (``baselines``)
    each retrain that classifier on normalised reference images.

    Args:
        recipe: ``"paper"`` (VGG16 conv2_2 loss from ``vgg_weights``, Adam 1e-4, 12 images per
            batch, flips) or ``"medbench"`` (see :mod:`harmonization.xray.gdce`).
        vgg_weights: torchvision VGG16 state dict (required by the paper recipe).
        loss_lambda: The paper's lambda (0.5 chest X-ray, 0.95 mammography).
        lr: Adam learning rate (default: 1e-4 for the paper recipe, 1e-3 for medbench's).
    """
    from medbench.train.experiment import assign_splits, prepare_table

    if recipe not in RECIPES:
        raise InputError(f"--recipe must be one of {RECIPES}, got {recipe!r}")
    out = Path(out_dir)
    methods_base = {b: create_harmonizer(b) for b in baselines}  # unknown names fail before any training
    for b, m in methods_base.items():
        if m.needs:
            raise InputError(f"--baselines {b!r}: it needs {', '.join(sorted(m.needs))} to be fitted, which only "
                             "its own job gives; list harmonizers fitted from reference images alone")
    if recipe == "paper":  # fails on a missing weights file before any training
        feat, feat_desc = vgg16_conv2_2(str(vgg_weights) if vgg_weights else None), \
            f"VGG16 conv2_2 before ReLU ({Path(str(vgg_weights)).name})"
    vcol = resolve_vendor_column(table, vendor_column)
    df = prepare_table(table, label)
    vendor_of = df[vcol].astype(str).to_numpy()
    vendors = sorted(set(vendor_of))
    if reference not in vendors:
        raise InputError(f"reference vendor {reference!r} not found in column {vcol!r}: vendors are {vendors}")
    if len(vendors) < 2:
        raise InputError("harmonization needs at least one vendor besides the reference")
    df["split"] = assign_splits(df, val_frac=0.15, test_frac=0.3, seed=seed)
    patients = _patient_ids(df)
    images, hows = load_images(df["path"].tolist(), size, with_how=True)
    if "window" in methods_base:
        dicom_windows = all(h == "DICOM window" for h in hows)
        methods_base["window"] = create_harmonizer("window", dicom=dicom_windows)
        log.info("window baseline: %s", "each file's DICOM VOI window" if dicom_windows else
                 "per-image 1-99th percentiles (not every file has a DICOM window)")
    y = df[label].to_numpy()
    is_ref = vendor_of == reference
    part = {s: (df["split"] == s).to_numpy() for s in ("train", "val", "test")}
    ref_train = (images[is_ref & ~part["test"]], y[is_ref & ~part["test"]])
    ref_test = (images[is_ref & part["test"]], y[is_ref & part["test"]], patients[is_ref & part["test"]])
    log.info("training the reference classifier on %d %s images", len(ref_train[0]), reference)
    clf_kw = {"source": classifier_source, "arch": classifier_arch, "epochs": classifier_epochs, "seed": seed,
              "progress": progress}
    clf = train_classifier(*ref_train, out / "reference_classifier", **clf_kw)

    def retrain(x: np.ndarray, yy: np.ndarray, name: str):
        return train_classifier(x, yy, out / f"classifier_{name}", **clf_kw)

    if recipe != "paper":
        feat, feat_desc = _feature_net(feature_source)
    common = {"steps": steps, "input_size": min(256, size), "seed": seed, "feature_network": feat_desc}
    if recipe == "paper":
        cfg = paper_config(loss_lambda=loss_lambda, **common, **({"lr": lr} if lr is not None else {}))
    else:
        cfg = GDCEConfig(lr=1e-3 if lr is None else lr, lambda_feat=feature_weight, **common)
    src = ~is_ref
    for v in vendors:
        if v != reference and len(np.unique(y[(vendor_of == v) & part["train"]])) < 2:
            raise InputError(f"vendor {v!r} has fewer than two classes in its training part: add more images")
    tr, va = _train_val(src & part["train"], src & part["val"], y, seed)
    log.info("fitting GDCE (%s recipe) on %d source-vendor images, %d for validation", recipe, int(tr.sum()),
             int(va.sum()))
    pooled = fit_gdce(clf, feat, images[tr], y[tr], *ref_train, val_images=images[va], val_labels=y[va],
                      cfg=cfg, checkpoint=gdce_checkpoint(out, "*"), progress=progress)
    src_test = src & part["test"]
    comparison = compare_with_global_curves(clf, pooled.predictor, pooled.start_params, images[tr],
                                            (images[va], y[va]), (images[src_test], y[src_test]),
                                            patients[src_test], n_boot=n_boot, seed=seed)
    log.info("%s", comparison.verdict)
    star = pooled.predictor
    if not comparison.keep_predictor:
        params = pooled.start_params if comparison.best_global == START else \
            predicted_params(pooled.predictor, images[tr]).mean(0)
        star = constant_predictor(pooled.predictor, params)
    fits = {"*": pooled}
    predictors = {"*": star}
    if per_vendor:
        for v in vendors:
            if v == reference:
                continue
            is_v = vendor_of == v
            tr_v, va_v = _train_val(is_v & part["train"], is_v & part["val"], y, seed)
            log.info("fitting GDCE for %s (%d training images)", v, int(tr_v.sum()))
            fits[v] = fit_gdce(clf, feat, images[tr_v], y[tr_v], *ref_train, val_images=images[va_v],
                               val_labels=y[va_v], cfg=cfg, checkpoint=gdce_checkpoint(out, v), progress=progress)
            predictors[v] = fits[v].predictor
    save_predictor(predictors, out / "model.pt", cfg, reference=reference)
    vendor_tests = {v: (images[(vendor_of == v) & part["test"]], y[(vendor_of == v) & part["test"]],
                        patients[(vendor_of == v) & part["test"]]) for v in vendors if v != reference}
    methods = {GDCE: create_harmonizer(GDCE, predictors=predictors), **methods_base}
    results = evaluate_methods(clf, ref_train, ref_test, vendor_tests, methods, retrain=retrain,
                               n_boot=n_boot, seed=seed)
    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(out / "predictor_vs_global.csv") as tmp:
        comparison.table.to_csv(tmp, index=False)
    _report(out, results, fits, predictors, comparison, vendor_tests, ref_test, reference, cfg)
    return {"results": results, "predictors": predictors, "fits": fits, "classifier": clf,
            "comparison": comparison}


def _patient_ids(df: pd.DataFrame) -> np.ndarray:
    for c in ("patient_id", "PatientID", "uid", "path"):
        if c in df.columns:
            return df[c].astype(str).to_numpy()
    return np.arange(len(df)).astype(str)


def _train_val(train: np.ndarray, val: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation part when it has both classes, else a stratified 20% of the training part."""
    if len(np.unique(y[val])) == 2:
        return train, val
    idx = np.flatnonzero(train)
    tr_i, va_i = holdout_split(torch.as_tensor(y[idx]), 0.2, seed)
    new_tr, new_va = np.zeros_like(train), np.zeros_like(train)
    new_tr[idx[tr_i.numpy()]] = True
    new_va[idx[va_i.numpy()]] = True
    return new_tr, new_va


def _fmt_ci(row: pd.Series) -> str:
    return f"{row['auc']:.3f} [{row['auc_lo']:.3f}, {row['auc_hi']:.3f}]"


def _warnings(results: pd.DataFrame, vendor_tests, ref_test) -> list[str]:
    out = []
    ref = results[(results["method"] == "none") & (results["vendor"] == "reference")].iloc[0]
    if ref["auc_lo"] <= 0.5:
        out.append(f"The reference classifier is at chance on its own vendor: AUC {_fmt_ci(ref)} (95% CI includes "
                   "0.5). Nothing below measures harmonization; train it on more reference images or longer.")
    for v, test in {"reference": ref_test, **vendor_tests}.items():
        counts = np.bincount(np.asarray(test[1]).astype(int), minlength=2)
        if counts.min() < MIN_PER_CLASS:
            out.append(f"Tiny test set for {v}: {counts.tolist()} images per class (< {MIN_PER_CLASS}); "
                       "its AUCs and CIs are unreliable.")
    return out


def _report(out: Path, results: pd.DataFrame, fits, predictors, comparison, vendor_tests, ref_test,
            reference: str, cfg: GDCEConfig) -> None:
    rep = HtmlReport("Cross-vendor harmonization (GDCE)", subtitle=f"reference vendor: {reference}")
    rep.warning(_warnings(results, vendor_tests, ref_test))
    results = results.assign(auc_ci=results.apply(_fmt_ci, axis=1))
    wide = results.pivot_table(index="method", columns="vendor", values="auc_ci", aggfunc="first")
    rep.heading("Summary")
    means = results.pivot_table(index="method", columns="vendor", values="auc")
    others = [v for v in means.columns if v != "reference"]
    ref_row = results[(results["method"] == "none") & (results["vendor"] == "reference")].iloc[0]
    rep.text(f"Reference-vendor AUC {_fmt_ci(ref_row)} (95% patient-level bootstrap CI). Mean AUC on the "
             f"other vendors: {means.loc['none', others].mean():.3f} without harmonization, "
             f"{means.loc['gdce', others].mean():.3f} after GDCE.")
    rep.text(comparison.verdict, css_class="note" if comparison.keep_predictor else "warn")
    rep.text("GDCE curves fix 0 and 1 and are monotone: a vendor look that moves the end points "
             "(e.g. a compressed sigmoid range) cannot be undone by GDCE; histogram matching can.", css_class="note")
    rep.table(wide.reset_index(), caption="AUC [95% CI, whole patients resampled] of the reference classifier "
              "per method and vendor (per-image normalisations use a classifier retrained on normalised "
              "reference images)")
    rep.heading("Does the image-conditioned predictor earn its place?")
    rep.table(comparison.table, caption="Pooled source vendors. val_auc decides (held-out validation images); "
              f"test AUCs with patient-level CIs. Spread of the predicted curve parameters across test images "
              f"(mean SD): {comparison.param_spread:.4f} (0 = one global curve for every image).")
    sep = results.drop_duplicates("method")[["method", "vendor_accuracy", "retrained"]]
    rep.table(sep, caption=f"Vendor-classifier accuracy (chance = {1 / (len(vendor_tests) + 1):.2f}); lower is better")
    curves = {}
    grid = np.linspace(0, 1, 101)
    with torch.no_grad():
        for v, test in vendor_tests.items():
            model = predictors.get(v) or predictors["*"]
            a = model(torch.from_numpy(test[0][:, None])).mean(0).numpy()
            curves[f"GDCE mean curve: {v}"] = (grid, curve_values(a, 101))
    rep.heading("Fitted curves").figure(curves_figure(curves))
    before = {"reference": ref_test[0], **{v: t[0] for v, t in vendor_tests.items()}}
    after = {"reference": ref_test[0],
             **{v: gdce_transform(predictors.get(v) or predictors["*"])(t[0]) for v, t in vendor_tests.items()}}
    rep.heading("Intensity histograms").figure(histograms_figure(before, title="before"))
    rep.figure(histograms_figure(after, title="after GDCE"))
    rows = [{"predictor": v, "best_step": r.best_step, "kept_starting_curve": r.kept_start,
             "val_worst_recall": r.best_worst_recall} for v, r in fits.items()]
    rep.heading("Training").table(pd.DataFrame(rows), caption=f"recipe: {cfg.recipe}; feature network: "
                                  f"{cfg.feature_network}; lr {cfg.lr:g}; model selection by worst per-class "
                                  "recall on held-out validation images (step 0 = the starting curve)")
    rep.config({"reference": reference, "gdce": cfg})
    rep.save(out / "report.html")
