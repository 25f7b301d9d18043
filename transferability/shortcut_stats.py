"""Statistics of the frequency-shortcut experiment across seeds.

- :func:`~medbench.eval.intervals.t_interval` (the project's one Student-t interval): mean and CI
  of per-seed values; with few seeds the interval is wide, with one seed it is undefined (NaN).
- :func:`summarise`: per (source, band, amplitude) mean and CI of each figure over the seeds.
- :func:`onset_amplitudes`: per (source, band) the smallest amplitude whose ``auc_drop`` CI lies
  above 0, i.e. where the source starts using the band.
- :func:`alignment_rank_correlation`: does the gradient-PSD alignment before training predict which
  bands are learned? Per amplitude, Spearman's rank correlation across the (source, band) pairs
  between the seed-mean ``align_before`` and the seed-mean ``auc_drop``, with a percentile bootstrap
  CI that resamples the seeds (with replacement, jointly for all pairs, since one seed fixes the data,
  the pattern and the initialisation of every pair).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from medbench.eval.intervals import t_interval

log = logging.getLogger(__name__)

#: Figures of the per-unit table summarised across seeds.
SUMMARY_METRICS: tuple[str, ...] = ("auc_drop", "iid_auc", "ood_auc", "val_auc", "epochs_to_loss",
                                    "align_before", "align_after")
KEYS: tuple[str, ...] = ("source", "band", "amplitude")


def summarise(table: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS, level: float = 0.95) -> pd.DataFrame:
    """One row per (source, band, amplitude): ``n_seeds`` and ``<m>_mean``, ``<m>_lo``, ``<m>_hi``
    (t-interval over the seeds' finite values; ``<m>_n`` counts them where some are NaN)."""
    rows = []
    for key, g in table.groupby(list(KEYS), sort=False):
        row: dict[str, object] = dict(zip(KEYS, key, strict=True))
        row["n_seeds"] = int(g["seed"].nunique())
        for m in metrics:
            if m not in g:
                continue
            mean, lo, hi, n = t_interval(g[m].to_numpy(), level)
            row.update({f"{m}_mean": mean, f"{m}_lo": lo, f"{m}_hi": hi})
            if n != len(g):
                row[f"{m}_n"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def onset_amplitudes(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (source, band): the smallest amplitude whose ``auc_drop`` CI lies above 0 (NaN: none,
    or fewer than two seeds), and the mean drop there."""
    rows = []
    for (src, band), g in summary.groupby(["source", "band"], sort=False):
        g = g.sort_values("amplitude")
        hit = g[g["auc_drop_lo"] > 0]
        rows.append({"source": src, "band": band,
                     "onset_amplitude": float(hit["amplitude"].iloc[0]) if len(hit) else float("nan"),
                     "auc_drop_at_onset": float(hit["auc_drop_mean"].iloc[0]) if len(hit) else float("nan")})
    return pd.DataFrame(rows)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def alignment_rank_correlation(table: pd.DataFrame, *, x: str = "align_before", y: str = "auc_drop",
                               n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per amplitude: Spearman's rho across (source, band) pairs between the seed means of ``x`` and
    ``y``, and its percentile bootstrap CI over the seeds (see the module docstring).

    Columns: amplitude, n_pairs, n_seeds, spearman, ci_lo, ci_hi, n_boot (replicates with a defined
    rho; a replicate is undefined when its means are tied throughout). Seeded by ``seed``.
    """
    rows = []
    rng = np.random.default_rng(seed)
    for amp, g in table.groupby("amplitude", sort=True):
        xs = g.pivot_table(index=["source", "band"], columns="seed", values=x, aggfunc="mean", sort=False)
        ys = g.pivot_table(index=["source", "band"], columns="seed", values=y, aggfunc="mean", sort=False)
        ys = ys.loc[xs.index, xs.columns]
        ok = np.isfinite(xs.to_numpy()).all(1) & np.isfinite(ys.to_numpy()).all(1)
        xa, ya = xs.to_numpy()[ok], ys.to_numpy()[ok]
        n_pairs, n_seeds = xa.shape
        rho = _spearman(xa.mean(1), ya.mean(1)) if n_seeds else float("nan")
        boot = []
        if n_seeds >= 2 and np.isfinite(rho):
            for _ in range(n_boot):
                pick = rng.integers(0, n_seeds, n_seeds)
                boot.append(_spearman(xa[:, pick].mean(1), ya[:, pick].mean(1)))
        boot_arr = np.asarray(boot, dtype=np.float64)
        boot_arr = boot_arr[np.isfinite(boot_arr)]
        lo, hi = (np.quantile(boot_arr, [(1 - level) / 2, (1 + level) / 2]) if len(boot_arr)
                  else (float("nan"), float("nan")))
        rows.append({"amplitude": float(amp), "n_pairs": int(n_pairs), "n_seeds": int(n_seeds), "spearman": rho,
                     "ci_lo": float(lo), "ci_hi": float(hi), "n_boot": int(len(boot_arr))})
        log.info("alignment vs auc_drop at amplitude %g: Spearman %.3f [%.3f, %.3f] over %d pairs, %d seeds",
                 amp, rho, lo, hi, n_pairs, n_seeds)
    return pd.DataFrame(rows)


def unlearned_sources(summary: pd.DataFrame) -> list[str]:
    """Sources whose i.i.d. AUC CI reaches down to chance (``iid_auc_lo <= 0.5``) in every
    (band, amplitude) cell: they did not learn the task at all, so their ``auc_drop`` says nothing
    about frequency priorities. Cells without a CI (one seed) do not count as evidence either way."""
    out = []
    for src, g in summary.groupby("source", sort=False):
        lo = g["iid_auc_lo"].dropna() if "iid_auc_lo" in g else pd.Series(dtype=float)
        if len(lo) == len(g) and len(lo) and (lo <= 0.5).all():
            out.append(str(src))
    return out
