"""Rank evaluation: weighted/plain Kendall tau per target, Friedman, Nemenyi."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medbench.errors import InputError
from transferability.ranking import (
    add_minmax_product,
    critical_difference,
    friedman_test,
    mean_ranks,
    nemenyi,
    nemenyi_q,
    plot_critical_difference,
    plot_taus,
    rank_correlations,
    summary,
    tau_table,
)


def _long_table(seed: int = 0) -> pd.DataFrame:
    """4 targets x 6 sources; metric 'good' tracks the AUC, 'noisy' partly, 'bad' is random."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(4):
        auc = rng.uniform(0.6, 0.95, 6)
        scores = {"good": auc * 10 + 3, "noisy": auc + rng.normal(0, 0.08, 6), "bad": rng.normal(size=6),
                  "lp": auc + rng.normal(0, 0.02, 6), "fu": rng.uniform(1, 2, 6)}
        for m, s in scores.items():
            for j in range(6):
                rows.append({"target": f"t{t}", "source": f"s{j}", "metric": m, "score": s[j], "auc": auc[j]})
    return pd.DataFrame(rows)


def test_weighted_tau_matches_scipy_directly() -> None:
    df = _long_table()
    corr = rank_correlations(df)
    assert len(corr) == 4 * 5
    for _, r in corr.iterrows():
        g = df[(df.target == r.target) & (df.metric == r.metric)]
        assert r.weighted_tau == stats.weightedtau(g.score, g.auc).statistic
        assert r.kendall_tau == stats.kendalltau(g.score, g.auc).statistic
        assert r.n_sources == 6


def test_perfect_ranking_gives_tau_one_and_reversed_minus_one() -> None:
    df = _long_table()
    corr = rank_correlations(df)
    assert np.allclose(corr[corr.metric == "good"][["weighted_tau", "kendall_tau"]], 1.0)
    rev = df[df.metric == "good"].assign(score=lambda d: -d.score, metric="reversed")
    assert np.allclose(rank_correlations(rev)[["weighted_tau", "kendall_tau"]], -1.0)


def test_friedman_matches_scipy_including_ties() -> None:
    table = tau_table(rank_correlations(_long_table()))
    stat, p = friedman_test(table)
    ref = stats.friedmanchisquare(*[table[c].to_numpy() for c in table.columns])
    assert stat == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-10)
    tied = pd.DataFrame({"a": [1.0, 1.0, 0.5, 0.2], "b": [1.0, 0.3, 0.5, 0.1], "c": [0.1, 0.3, 0.2, 0.2]})
    ref = stats.friedmanchisquare(tied.a, tied.b, tied.c)
    assert friedman_test(tied)[0] == pytest.approx(ref.statistic, rel=1e-12)


def test_mean_ranks_and_nemenyi() -> None:
    table = pd.DataFrame({"a": [0.9, 0.8, 0.95, 0.7], "b": [0.5, 0.6, 0.4, 0.5], "c": [0.1, 0.7, 0.2, 0.0]})
    r = mean_ranks(table)
    assert list(r.index) == ["a", "b", "c"]
    assert r.to_dict() == pytest.approx({"a": 1.0, "b": 2.25, "c": 2.75})
    # Demsar (2006), table 5: q_0.05 = 1.960, 2.343, 2.569, 2.728 for k = 2..5
    for k, q in zip(range(2, 6), (1.960, 2.343, 2.569, 2.728)):
        assert nemenyi_q(k) == pytest.approx(q, abs=1e-3)
    assert critical_difference(3, 4) == pytest.approx(2.3437 * np.sqrt(3 * 4 / 24), rel=1e-3)
    p = nemenyi(table)
    assert p.loc["a", "a"] == 1.0 and p.loc["a", "c"] == p.loc["c", "a"] < p.loc["a", "b"]


def test_summary_and_combined_metric() -> None:
    df = add_minmax_product(_long_table())
    assert set(df.metric) >= {"lp_x_fu"}
    comb = df[(df.metric == "lp_x_fu") & (df.target == "t0")].set_index("source").score
    lp = df[(df.metric == "lp") & (df.target == "t0")].set_index("source").score
    fu = df[(df.metric == "fu") & (df.target == "t0")].set_index("source").score
    expected = (lp - lp.min()) / (lp.max() - lp.min()) * (fu - fu.min()) / (fu.max() - fu.min())
    pd.testing.assert_series_equal(comb.sort_index(), expected.sort_index(), check_names=False)
    out = summary(df)
    assert out["mean_ranks"].index[0] == "good"
    assert out["friedman"][1] < 0.05
    assert plot_taus(out["correlations"]).axes
    assert plot_critical_difference(out["mean_ranks"], out["critical_difference"]).axes


def test_bad_tables_rejected() -> None:
    df = _long_table()
    with pytest.raises(InputError, match="columns"):
        rank_correlations(df.drop(columns="auc"))
    with pytest.raises(InputError, match="duplicate"):
        rank_correlations(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(InputError, match="2 sources"):
        rank_correlations(df[df.source == "s0"])
