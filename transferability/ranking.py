"""How well do transferability scores rank sources? Per-target rank correlations and tests.

Input is a long table with one row per (target, source, metric): columns ``target``, ``source``,
``metric``, ``score`` and ``auc`` (the fine-tuned ground truth of that source on that target).

- :func:`rank_correlations`: per (target, metric) weighted Kendall tau (``scipy.stats.weightedtau``,
  hyperbolic weigher, as in Juodelyte et al. 2024) and plain Kendall tau between scores and AUCs.
- :func:`mean_ranks`, :func:`friedman_test`, :func:`nemenyi`: compare metrics across targets
  (Demsar 2006): ranks of the metrics' taus within each target (1 = best), Friedman chi-square
  with tie correction, Nemenyi critical difference and pairwise p-values.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from medbench.errors import InputError

log = logging.getLogger(__name__)

REQUIRED = ("target", "source", "metric", "score", "auc")


def _check(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"scores table lacks columns {missing}; it needs {list(REQUIRED)} (one row per "
                         "target, source and metric)")
    if df[["score", "auc"]].isna().any().any():
        raise InputError("scores table has NaN in 'score' or 'auc'; drop those rows first")
    dup = df.duplicated(["target", "source", "metric"])
    if dup.any():
        raise InputError(f"scores table has {int(dup.sum())} duplicate (target, source, metric) rows")
    return df


def rank_correlations(df: pd.DataFrame) -> pd.DataFrame:
    """Weighted and plain Kendall tau per (target, metric).

    Returns:
        DataFrame[target, metric, weighted_tau, kendall_tau, n_sources].
    """
    from scipy.stats import kendalltau, weightedtau

    rows = []
    for (target, metric), g in _check(df).groupby(["target", "metric"], sort=True):
        if len(g) < 2:
            raise InputError(f"target {target!r}, metric {metric!r}: rank correlation needs at least 2 "
                             "sources; add sources")
        s, a = g["score"].to_numpy(float), g["auc"].to_numpy(float)
        wt = float(weightedtau(s, a).statistic)
        kt = float(kendalltau(s, a).statistic)
        rows.append({"target": target, "metric": metric, "weighted_tau": wt, "kendall_tau": kt,
                     "n_sources": len(g)})
    return pd.DataFrame(rows)


def tau_table(corr: pd.DataFrame, *, value: str = "weighted_tau") -> pd.DataFrame:
    """Pivot :func:`rank_correlations` to targets x metrics."""
    return corr.pivot(index="target", columns="metric", values=value)


def _rank_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rank metrics within each target: 1 = highest value, ties averaged."""
    if table.isna().any().any():
        raise InputError("every metric needs a value for every target; drop incomplete targets/metrics")
    return table.rank(axis=1, ascending=False, method="average")


def mean_ranks(table: pd.DataFrame) -> pd.Series:
    """Mean rank of each metric (column) over targets (rows); 1 is best. Sorted ascending."""
    return _rank_rows(table).mean(axis=0).sort_values()


def friedman_test(table: pd.DataFrame) -> tuple[float, float]:
    """Friedman chi-square test that all metrics (columns) rank equally over targets (rows).

    Uses the tie-corrected statistic of ``scipy.stats.friedmanchisquare``.

    Returns:
        (statistic, p-value).
    """
    from scipy.stats import chi2

    n, k = table.shape
    if n < 2 or k < 3:
        raise InputError(f"Friedman test needs >= 2 targets and >= 3 metrics, got {n} x {k}")
    ranks = _rank_rows(table).to_numpy()
    rsum = ranks.sum(axis=0)
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    stat = (12.0 / (n * k * (k + 1)) * float(np.sum(rsum**2)) - 3.0 * n * (k + 1)) / correction
    return stat, float(chi2.sf(stat, k - 1))


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Critical value q_alpha of the Nemenyi test (studentized range / sqrt 2), e.g. 2.569 for k=4."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: q_alpha sqrt(k (k + 1) / (6 n))."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def nemenyi(table: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Nemenyi p-values between metrics (columns) from their mean ranks."""
    from scipy.stats import studentized_range

    n, k = table.shape
    r = _rank_rows(table).mean(axis=0)
    se = math.sqrt(k * (k + 1) / (6.0 * n))
    cols = list(table.columns)
    p = np.ones((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            q = abs(r.iloc[i] - r.iloc[j]) / se * math.sqrt(2)
            p[i, j] = p[j, i] = float(studentized_range.sf(q, k, np.inf))
    return pd.DataFrame(p, index=cols, columns=cols)


def summary(df: pd.DataFrame, *, alpha: float = 0.05) -> dict[str, Any]:
    """Everything at once: correlations, tau tables, mean ranks, Friedman, CD (when >= 3 metrics)."""
    corr = rank_correlations(df)
    wt = tau_table(corr)
    out: dict[str, Any] = {"correlations": corr, "weighted_tau": wt,
                           "kendall_tau": tau_table(corr, value="kendall_tau")}
    complete = wt.dropna()
    if complete.shape[0] >= 2 and complete.shape[1] >= 3:
        out["mean_ranks"] = mean_ranks(complete)
        out["friedman"] = friedman_test(complete)
        out["critical_difference"] = critical_difference(complete.shape[1], complete.shape[0], alpha)
        out["nemenyi"] = nemenyi(complete)
    return out


def add_minmax_product(df: pd.DataFrame, a: str = "lp", b: str = "fu", *, name: str | None = None) -> pd.DataFrame:
    """Append the paper's combined metric min-max(a) x min-max(b) across sources, per target."""
    from transferability.gradient import combined_score

    name = name or f"{a}_x_{b}"
    rows = []
    for target, g in _check(df).groupby("target", sort=True):
        sa = g[g["metric"] == a].set_index("source")
        sb = g[g["metric"] == b].set_index("source")
        common = sorted(set(sa.index) & set(sb.index))
        if len(common) < 2:
            continue
        comb = combined_score(sa.loc[common, "score"].to_dict(), sb.loc[common, "score"].to_dict())
        for src in common:
            rows.append({"target": target, "source": src, "metric": name, "score": comb[src],
                         "auc": float(sa.loc[src, "auc"])})
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True) if rows else df.copy()


def plot_taus(corr: pd.DataFrame, *, value: str = "weighted_tau") -> Any:
    """Box plot of per-target taus per metric, metrics ordered by median; returns the figure."""
    import matplotlib.pyplot as plt

    order = corr.groupby("metric")[value].median().sort_values(ascending=False).index.tolist()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(order) + 2), 3.5))
    ax.boxplot([corr.loc[corr["metric"] == m, value].to_numpy() for m in order])
    ax.set_xticks(range(1, len(order) + 1), order, rotation=45, ha="right")
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel(value.replace("_", " "))
    ax.set_title("Rank correlation of scores with fine-tuned AUC, per target")
    fig.tight_layout()
    return fig


def plot_critical_difference(ranks: pd.Series, cd: float) -> Any:
    """Mean ranks on a line with the Nemenyi critical difference bar; returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.45 * len(ranks) + 1.2))
    y = np.arange(len(ranks))
    ax.scatter(ranks.to_numpy(), y, color="C0", zorder=3)
    for yi, (m, r) in zip(y, ranks.items()):
        ax.annotate(str(m), (r, yi), textcoords="offset points", xytext=(6, -3), fontsize=8)
    best = float(ranks.iloc[0])
    ax.plot([best, best + cd], [-0.8, -0.8], color="C3", lw=3)
    ax.annotate(f"CD = {cd:.2f}", (best, -0.8), textcoords="offset points", xytext=(0, 5), fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("mean rank (1 = best)")
    ax.set_ylim(-1.5, len(ranks))
    fig.tight_layout()
    return fig
