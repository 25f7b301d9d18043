"""Downstream evaluation of X-ray harmonization: reference-classifier AUC per vendor and method,
vendor-classifier accuracy (how well the vendor can still be told apart), histograms and curves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from harmonization.xray.baselines import Harmonizer
from harmonization.xray.classifier import train_classifier  # noqa: F401 - re-exported for callers
from harmonization.xray.gdce_harmonizer import GDCEHarmonizer, gdce_transform  # noqa: F401 - re-exported
from medbench.eval.metrics import bootstrap_auc_ci

log = logging.getLogger(__name__)

Images = np.ndarray  # (N, H, W) float32 in [0, 1]


@torch.no_grad()
def predict_proba(model: nn.Module, images: Images, batch: int = 64) -> np.ndarray:
    """Positive-class probabilities of a 2-class (or 1-logit) classifier on grey images."""
    model.eval()
    out = []
    x_all = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    for i in range(0, len(x_all), batch):
        logits = model(x_all[i : i + batch])
        out.append(torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else logits.softmax(1)[:, 1])
    return torch.cat(out).numpy()


#: GDCE as a harmonizer is the registry entry ``"gdce"``; these names are kept for callers.
PerVendorGDCE = GDCEHarmonizer


def vendor_separability(images_by_vendor: Mapping[str, Images], *, bins: int = 32, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic-regression vendor classifier on intensity histograms
    and moments; chance is 1 / number of vendors. Lower after harmonization is better."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats, ys = [], []
    for k, (_, ims) in enumerate(sorted(images_by_vendor.items())):
        x = np.asarray(ims, np.float32).reshape(len(ims), -1)
        hist = np.stack([np.histogram(r, bins=bins, range=(0, 1), density=True)[0] for r in x])
        q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95], axis=1).T
        feats.append(np.hstack([hist, q, x.mean(1, keepdims=True), x.std(1, keepdims=True)]))
        ys.append(np.full(len(x), k))
    X, y = np.vstack(feats), np.concatenate(ys)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    from sklearn.model_selection import StratifiedKFold

    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, X, y, cv=cv).mean())


def evaluate_methods(
    reference_classifier: nn.Module,
    reference_train: tuple[Images, np.ndarray],
    reference_test: tuple[Images, np.ndarray],
    vendor_tests: Mapping[str, tuple[Images, np.ndarray]],
    methods: Mapping[str, Harmonizer | Callable[[Images], Images]],
    *,
    retrain: Callable[[Images, np.ndarray, str], nn.Module] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """AUC with a bootstrap CI per (method, vendor), the reference vendor included, and the vendor
    separability. Test tuples may carry patient ids as a third element ``(images, labels,
    patient_ids)``: the CI then resamples whole patients (``auc_lo``/``auc_hi``, ``resampled_by``).

    Methods that change reference images too (``maps_to_reference`` False: per-image
    normalisations) get a classifier retrained on normalised reference images through
    ``retrain(images, labels, method_name)``; methods that map onto the reference look use
    ``reference_classifier`` as it is. ``"none"`` (no harmonization) is always included.
    """
    xr, yr = reference_train
    rows: list[dict[str, Any]] = []
    all_methods: dict[str, Any] = {"none": None, **dict(methods)}
    for name, method in all_methods.items():
        if isinstance(method, Harmonizer):
            method.fit(xr)
        maps = method is None or getattr(method, "maps_to_reference", True)
        transform = (lambda ims: np.asarray(ims, np.float32)) if method is None else method
        clf = reference_classifier
        if not maps:
            if retrain is None:
                log.warning("skipping %s: it changes reference images and no retrain function was given", name)
                continue
            clf = retrain(transform(xr), yr, name)
        per_vendor = getattr(method, "per_vendor", False)
        harmonised = {"reference": transform(reference_test[0])}
        labels, groups = {"reference": reference_test[1]}, {"reference": _groups(reference_test)}
        for vendor, test in vendor_tests.items():
            xv, yv = test[0], test[1]
            harmonised[vendor] = transform(xv, vendor=vendor) if per_vendor else transform(xv)
            labels[vendor], groups[vendor] = yv, _groups(test)
        sep = vendor_separability(harmonised)
        for vendor, ims in harmonised.items():
            ci = bootstrap_auc_ci(labels[vendor], predict_proba(clf, ims), groups=groups[vendor],
                                  n_boot=n_boot, seed=seed)
            rows.append({"method": name, "vendor": vendor, "auc": ci.auc, "auc_lo": ci.lo, "auc_hi": ci.hi,
                         "n": len(labels[vendor]), "resampled_by": ci.resampled_by,
                         "vendor_accuracy": sep, "retrained": not maps})
    return pd.DataFrame(rows)


def _groups(test: tuple) -> np.ndarray | None:
    return np.asarray(test[2]) if len(test) > 2 and test[2] is not None else None


def curves_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "Intensity curves"):
    """Plot named curves ``{name: (x, y)}`` on [0, 1]^2 (vendor curves, fitted GDCE curves, inverses)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name, lw=1.6)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="input intensity", ylabel="output intensity", title=title)
    ax.legend(fontsize=7)
    return fig


def histograms_figure(images_by_vendor: Mapping[str, Images], *, title: str = "Intensity histograms", bins: int = 64):
    """Mean intensity histogram per vendor."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, ims in images_by_vendor.items():
        h, edges = np.histogram(np.asarray(ims).ravel(), bins=bins, range=(0, 1), density=True)
        ax.plot((edges[1:] + edges[:-1]) / 2, h, label=name, lw=1.4)
    ax.set(xlabel="intensity", ylabel="density", title=title)
    ax.legend(fontsize=7)
    return fig
