"""Statistics over audit rows: per-(source, confounder, p) summaries and source comparisons.

The headline comparison is the authors' (Source Matters, ``statistical_tests.ipynb``): an unpaired
Student t-test between two sources' per-split AUCs, its p-value from 10,000 permutations of the
source labels (exact enumeration when there are fewer relabellings, e.g. 252 at 5 vs 5). medbench
adds the paired sign-flip test over matching splits (``p_paired``) and the paired parametric
t-test (``p_ttest``) as extra columns. Each test reports the smallest p its design can reach
(``*_min``); ``floor_above_alpha`` flags comparisons that cannot reach ``alpha`` at all.
"""

from __future__ import annotations

import logging

import pandas as pd

logger = logging.getLogger(__name__)

METRICS = ("auc_iid", "auc_ood", "auc_clean", "gap")
#: Keras one-hot AUCs (the paper's numbers), summarised when the rows carry them.
KERAS_METRICS = ("auc_iid_keras", "auc_ood_keras", "auc_clean_keras")


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean/sd over splits per source, confounder and p (Keras AUC columns included when present)."""
    metrics = list(METRICS) + [m for m in KERAS_METRICS if m in results.columns]
    g = results.groupby(["source", "confounder", "p"], sort=True)[metrics]
    mean, sd = g.mean(), g.std(ddof=1)
    out = mean.join(sd.add_suffix("_sd")).join(g.size().rename("n_splits"))
    return out.reset_index()


def compare_sources(results: pd.DataFrame, *, metric: str = "auc_ood", seed: int = 0, n_perm: int = 10000,
                    alpha: float = 0.05, equal_var: bool = True) -> pd.DataFrame:
    """Every pair of sources per confounder and p.

    Columns: ``p_perm`` (headline: unpaired permutation t-test over all finished splits of each
    source), ``p_perm_min``, ``p_perm_exact``; ``p_paired``/``p_paired_min`` (sign-flip test over
    the splits both sources finished) and ``p_ttest`` (``scipy.stats.ttest_rel``);
    ``floor_above_alpha`` is True when even the most extreme outcome cannot give ``p_perm < alpha``.
    """
    from medbench.eval.metrics import permutation_ttest_folds, permutation_ttest_ind, ttest_folds

    rows = []
    sources = list(dict.fromkeys(results["source"]))
    for (conf, p), g in results.groupby(["confounder", "p"], sort=True):
        wide = g.pivot_table(index="split", columns="source", values=metric)
        for i, a in enumerate(sources):
            for b in sources[i + 1 :]:
                if a not in wide or b not in wide:
                    continue
                va, vb = wide[a].dropna(), wide[b].dropna()
                pair = wide[[a, b]].dropna()
                row = {"confounder": conf, "p": p, "metric": metric, "source_a": a, "source_b": b,
                       "n_a": len(va), "n_b": len(vb), "n_splits": len(pair),
                       "mean_a": va.mean(), "mean_b": vb.mean()}
                if len(va) >= 2 and len(vb) >= 2:
                    ind = permutation_ttest_ind(va, vb, n_perm=n_perm, seed=seed, equal_var=equal_var)
                    row.update({"mean_diff": ind["mean_diff"], "t": ind["t"], "p_perm": ind["p_value"],
                                "p_perm_min": ind["p_min"], "p_perm_exact": ind["exact"],
                                "floor_above_alpha": bool(ind["p_min"] >= alpha)})
                    if row["floor_above_alpha"]:
                        logger.warning(
                            "%s p=%g, %s vs %s: %d vs %d splits cannot reach p < %g (smallest p %.4f); "
                            "run more splits", conf, p, a, b, len(va), len(vb), alpha, ind["p_min"])
                if len(pair) >= 2:
                    paired = permutation_ttest_folds(pair[a], pair[b], seed=seed, n_perm=n_perm)
                    row.update({"p_paired": paired["p_value"], "p_paired_min": paired["p_min"],
                                "p_ttest": ttest_folds(pair[a], pair[b])["p_value"]})
                rows.append(row)
    return pd.DataFrame(rows)
