"""Statistics over audit rows: per-(source, confounder, p) summaries and paired source comparisons."""

from __future__ import annotations

import pandas as pd


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean/sd over splits per source, confounder and p."""
    metrics = ["auc_iid", "auc_ood", "auc_clean", "gap"]
    g = results.groupby(["source", "confounder", "p"], sort=True)[metrics]
    mean, sd = g.mean(), g.std(ddof=1)
    out = mean.join(sd.add_suffix("_sd")).join(g.size().rename("n_splits"))
    return out.reset_index()


def compare_sources(results: pd.DataFrame, *, metric: str = "auc_ood", seed: int = 0) -> pd.DataFrame:
    """Every pair of sources per confounder and p: paired permutation t-test and t-test over splits."""
    from medbench.eval.metrics import permutation_ttest_folds, ttest_folds

    rows = []
    sources = list(dict.fromkeys(results["source"]))
    for (conf, p), g in results.groupby(["confounder", "p"], sort=True):
        wide = g.pivot_table(index="split", columns="source", values=metric)
        for i, a in enumerate(sources):
            for b in sources[i + 1 :]:
                if a not in wide or b not in wide:
                    continue
                pair = wide[[a, b]].dropna()
                row = {"confounder": conf, "p": p, "metric": metric, "source_a": a, "source_b": b,
                       "n_splits": len(pair), "mean_a": pair[a].mean(), "mean_b": pair[b].mean()}
                if len(pair) >= 2:
                    perm = permutation_ttest_folds(pair[a], pair[b], seed=seed)
                    row.update({"mean_diff": perm["mean_diff"], "t": perm["t"], "p_perm": perm["p_value"],
                                "p_ttest": ttest_folds(pair[a], pair[b])["p_value"]})
                rows.append(row)
    return pd.DataFrame(rows)
