"""Statistics over audit rows: per-(source, confounder, prevalence) summaries and source comparisons.

``prevalence`` is the confounder's strength p (the fraction of positives carrying the artifact, or
the sampled group's share of positives); it was called ``p`` before, which read like a p-value.
:func:`with_prevalence` renames the old column when older tables or ``row.json`` files are read back.

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
#: The column holding the confounder strength p (formerly ``p``).
PREVALENCE = "prevalence"
#: Keras one-hot AUCs (the paper's numbers), summarised when the rows carry them.
KERAS_METRICS = ("auc_iid_keras", "auc_ood_keras", "auc_clean_keras")


def with_prevalence(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with an older table's ``p`` column (the confounder strength) named ``prevalence``."""
    if "p" in df.columns and PREVALENCE not in df.columns:
        return df.rename(columns={"p": PREVALENCE})
    return df


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean/sd over splits per source, confounder and prevalence (Keras AUC columns included when
    present)."""
    results = with_prevalence(results)
    metrics = list(METRICS) + [m for m in KERAS_METRICS if m in results.columns]
    g = results.groupby(["source", "confounder", PREVALENCE], sort=True)[metrics]
    mean, sd = g.mean(), g.std(ddof=1)
    out = mean.join(sd.add_suffix("_sd")).join(g.size().rename("n_splits"))
    return out.reset_index()


def compare_sources(results: pd.DataFrame, *, metric: str = "auc_ood", seed: int = 0, n_perm: int = 10000,
                    alpha: float = 0.05, equal_var: bool = True) -> pd.DataFrame:
    """Every pair of sources per confounder and prevalence.

    Columns: ``p_perm`` (headline: unpaired permutation t-test over all finished splits of each
    source), ``p_perm_min``, ``p_perm_exact``; ``p_paired``/``p_paired_min`` (sign-flip test over
    the splits both sources finished) and ``p_ttest`` (``scipy.stats.ttest_rel``);
    ``floor_above_alpha`` is True when even the most extreme outcome cannot give ``p_perm < alpha``.
    """
    from medbench.eval.metrics import permutation_ttest_folds, permutation_ttest_ind, ttest_folds

    results = with_prevalence(results)
    rows = []
    sources = list(dict.fromkeys(results["source"]))
    for (conf, p), g in results.groupby(["confounder", PREVALENCE], sort=True):
        wide = g.pivot_table(index="split", columns="source", values=metric)
        for i, a in enumerate(sources):
            for b in sources[i + 1 :]:
                if a not in wide or b not in wide:
                    continue
                va, vb = wide[a].dropna(), wide[b].dropna()
                pair = wide[[a, b]].dropna()
                row = {"confounder": conf, PREVALENCE: p, "metric": metric, "source_a": a, "source_b": b,
                       "n_a": len(va), "n_b": len(vb), "n_splits": len(pair),
                       "mean_a": va.mean(), "mean_b": vb.mean()}
                if len(va) >= 2 and len(vb) >= 2:
                    ind = permutation_ttest_ind(va, vb, n_perm=n_perm, seed=seed, equal_var=equal_var)
                    row.update({"mean_diff": ind["mean_diff"], "t": ind["t"], "p_perm": ind["p_value"],
                                "p_perm_min": ind["p_min"], "p_perm_exact": ind["exact"],
                                "floor_above_alpha": bool(ind["p_min"] >= alpha)})
                    if row["floor_above_alpha"]:
                        logger.warning(
                            "%s prevalence %g, %s vs %s: %d vs %d splits cannot reach p < %g (smallest p %.4f); "
                            "run more splits", conf, p, a, b, len(va), len(vb), alpha, ind["p_min"])
                if len(pair) >= 2:
                    paired = permutation_ttest_folds(pair[a], pair[b], seed=seed, n_perm=n_perm)
                    row.update({"p_paired": paired["p_value"], "p_paired_min": paired["p_min"],
                                "p_ttest": ttest_folds(pair[a], pair[b])["p_value"]})
                rows.append(row)
    return pd.DataFrame(rows)
