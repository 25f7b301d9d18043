"""Matplotlib figures for reports: ROC curves, reliability diagrams, AUC comparisons, training curves,
example images. Legends use ``loc="best"`` or sit outside the axes so they do not cover data."""

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
    ax.legend(loc="best", fontsize=8)
    return fig


def reliability_figure(tables: Mapping[str, pd.DataFrame], *, title: str = "Reliability"):
    """Reliability diagram from :func:`medbench.eval.metrics.reliability_curve` tables.

    Top: observed positive rate against mean predicted probability (marker area grows with the bin
    count, and each point is labelled with ``n``). Bottom: the number of images per bin, so a bin
    far from the diagonal can be told apart from a bin of two images.
    """
    plt = _plt()
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(4.8, 5.6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.2], "hspace": 0.08})
    names = list(tables)
    for i, (name, rel) in enumerate(tables.items()):
        r = rel[rel["count"] > 0]
        line, = ax.plot(r["mean_pred"], r["frac_pos"], marker="o", lw=1.5, label=name, ms=4)
        if len(names) == 1:
            for x, y, n in zip(r["mean_pred"], r["frac_pos"], r["count"]):
                ax.annotate(f"n={int(n)}", (x, y), textcoords="offset points", xytext=(4, 4 if y < 0.5 else -10),
                            fontsize=7, color="#555")
        lo, bin_w = _bin_edges(rel)
        width = bin_w / len(names)
        axn.bar(lo + width * (i + 0.5), rel["count"], width=width * 0.95, color=line.get_color(), alpha=0.8)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(ylabel="Observed positive rate", title=title, xlim=(0, 1), ylim=(-0.02, 1.02))
    ax.legend(loc="best", fontsize=8)
    axn.set(xlabel="Mean predicted probability (bin)", ylabel="images", xlim=(0, 1))
    return fig


def _bin_edges(rel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Lower edges and widths of the reliability bins (equal width over [0, 1] when not stored)."""
    n = len(rel)
    if {"lo", "hi"} <= set(rel.columns):
        return rel["lo"].to_numpy(float), (rel["hi"] - rel["lo"]).to_numpy(float)
    return np.arange(n) / n, np.full(n, 1.0 / n)


def training_curves_figure(history: pd.DataFrame, *, title: str = "Training curves"):
    """Train/val loss (left) and validation AUC or accuracy (right) per epoch from ``history.csv``.

    Epochs are drawn 1-based, as the progress bar counts them.
    """
    plt = _plt()
    score = next((c for c in ("val_auc", "val_acc") if c in history.columns and history[c].notna().any()), None)
    fig, axes = plt.subplots(1, 2 if score else 1, figsize=(9.0 if score else 4.8, 3.4), squeeze=False)
    # history.csv numbers epochs from 1 (as the progress bar and the log do)
    x = history["epoch"].to_numpy() if "epoch" in history.columns else np.arange(1, len(history) + 1)
    ax = axes[0, 0]
    for col, style in (("train_loss", "-o"), ("val_loss", "-s")):
        if col in history.columns and history[col].notna().any():
            ax.plot(x, history[col], style, ms=3, label=col.replace("_", " "))
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=8)
    if score:
        ax2 = axes[0, 1]
        ax2.plot(x, history[score], "-o", ms=3, c="#2a7")
        if score == "val_auc":
            ax2.axhline(0.5, ls="--", c="grey", lw=0.8)
            ax2.text(x[0], 0.505, "chance", fontsize=7, color="grey", va="bottom")
        name = "AUC" if score == "val_auc" else "accuracy"
        ax2.set(xlabel="epoch", ylabel=f"validation {name}", title=f"Validation {name}", ylim=(0, 1))
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def examples_figure(images: list[np.ndarray], captions: list[str], *, title: str = "", ncols: int = 4):
    """A grid of grayscale images in [0, 1], each with a one-line caption (e.g. label and probability)."""
    plt = _plt()
    n = max(1, len(images))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.1 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, cap in zip(axes.ravel(), images, captions):
        ax.imshow(np.asarray(img), cmap="gray", vmin=0.0, vmax=1.0)  # images in [0, 1]: no per-image stretch
        ax.set_title(cap, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
