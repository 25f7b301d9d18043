"""Matplotlib figures for reports: ROC curves, reliability diagrams, AUC comparisons."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def _plt():
    import matplotlib.pyplot as plt

    return plt


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "ROC"):
    """ROC curves, one per name: ``{name: (labels, scores)}``; legend shows the AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (y, p) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def reliability_figure(tables: Mapping[str, pd.DataFrame], *, title: str = "Reliability"):
    """Reliability diagram from :func:`medbench.eval.metrics.reliability_curve` tables."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, rel in tables.items():
        r = rel[rel["count"] > 0]
        ax.plot(r["mean_pred"], r["frac_pos"], marker="o", lw=1.5, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="Mean predicted probability", ylabel="Observed positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return fig


def auc_bar_figure(table: pd.DataFrame, *, name_col: str = "source", title: str = "AUC with 95% CI"):
    """Horizontal bars of AUC with CI whiskers, one per row of ``table`` (columns auc, lo, hi)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * len(table)))
    y = np.arange(len(table))
    err = np.vstack([table["auc"] - table["lo"], table["hi"] - table["auc"]])
    ax.barh(y, table["auc"], xerr=err, color="#58a", capsize=3)
    ax.set_yticks(y, table[name_col].astype(str))
    ax.set(xlim=(0.0, 1.0), xlabel="AUC", title=title)
    ax.axvline(0.5, ls="--", c="grey", lw=0.8)
    return fig
