"""Evaluation statistics against scipy/scikit-learn and brute-force computations."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medbench.errors import InputError
from medbench.eval import metrics as M


def _binormal(n: int, d: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    return y, rng.normal(size=n) + d * y


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_multiclass_auc_matches_sklearn_ovr():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)
    assert M.auc(y, p, average="weighted") == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="weighted"), abs=1e-12)


def test_keras_auc_is_flattened_micro_auc():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200) * 0.5 + 0.5 * np.eye(3)[y] * rng.random((200, 1))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[y]
    exact = roc_auc_score(onehot.ravel(), p.ravel())
    assert M.keras_auc(y, p) == pytest.approx(exact, abs=1e-12)
    assert M.keras_auc(y, p, num_thresholds=200) == pytest.approx(exact, abs=5e-3)
    assert M.keras_auc(y, p) != pytest.approx(M.auc(y, p), abs=1e-4)  # differs from per-class AUC


@pytest.mark.parametrize("bad", [
    (np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3])),
    (np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])),
    (np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3])),
    (np.array([0, 1]), np.array([0.1, 0.2, 0.3])),
])
def test_auc_rejects_bad_input(bad):
    with pytest.raises(InputError):
        M.auc(*bad)


def _auc_by_ranks(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mann-Whitney AUC from mid-ranks, vectorised over resamples (independent of the code under test)."""
    ranks = stats.rankdata(p, axis=axis)
    n_pos = y.sum(axis=axis)
    n_neg = y.shape[axis] - n_pos
    return ((ranks * y).sum(axis=axis) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_bootstrap_ci_agrees_with_scipy_bootstrap():
    """Percentile CIs of two independent bootstraps (3000 resamples each) agree within Monte-Carlo
    error: a percentile's SE here is ~0.0013 (sqrt(q(1-q)/B) over the bootstrap density at the 2.5%
    point), so the difference of two has SD ~0.002 and the 0.01 margin is 5 SD."""
    rng = np.random.default_rng(3)
    y, p = _binormal(300, 1.0, rng)
    ours = M.bootstrap_auc_ci(y, p, n_boot=3000, seed=1)
    res = stats.bootstrap((y.astype(float), p), _auc_by_ranks, paired=True, vectorized=True,
                          n_resamples=3000, method="percentile", random_state=7)
    assert ours.auc == pytest.approx(roc_auc_score(y, p))
    assert _auc_by_ranks(y.astype(float), p) == pytest.approx(roc_auc_score(y, p))
    assert ours.lo == pytest.approx(res.confidence_interval.low, abs=0.01)
    assert ours.hi == pytest.approx(res.confidence_interval.high, abs=0.01)


@pytest.mark.slow
def test_bootstrap_ci_covers_true_auc_at_its_nominal_level():
    """Calibration: binormal scores have the known AUC Phi(d / sqrt(2)).

    200 independent data sets; at 95% nominal the number covered is Binomial(200, 0.95), and we fail
    below its 0.1% quantile (179). A CI at 80% (too narrow) covers ~160: P(pass) ~ 5e-4.
    """
    from scipy.stats import binom

    d = 1.2
    true_auc = stats.norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(4)
    draws = 200
    covered = 0
    for _ in range(draws):
        y, p = _binormal(200, d, rng)
        ci = M.bootstrap_auc_ci(y, p, n_boot=400, seed=int(rng.integers(1 << 30)))
        covered += ci.lo <= true_auc <= ci.hi
    assert covered >= int(binom.ppf(0.001, draws, 0.95)), covered


def test_patient_bootstrap_is_wider_for_correlated_images():
    rng = np.random.default_rng(5)
    n_pat = 60
    y_pat = rng.integers(0, 2, n_pat)
    s_pat = rng.normal(size=n_pat) + 0.8 * y_pat
    reps = 6  # six near-identical images per patient
    y = np.repeat(y_pat, reps)
    p = np.repeat(s_pat, reps) + 0.01 * rng.normal(size=n_pat * reps)
    groups = np.repeat(np.arange(n_pat), reps)
    naive = M.bootstrap_auc_ci(y, p, n_boot=500, seed=0)
    grouped = M.bootstrap_auc_ci(y, p, groups=groups, n_boot=500, seed=0)
    assert (grouped.hi - grouped.lo) > 1.8 * (naive.hi - naive.lo)


def test_paired_tests_detect_better_model_and_not_identical_ones():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 300)
    good = rng.normal(size=300) + 2.0 * y
    weak = rng.normal(size=300) + 0.3 * y
    boot = M.paired_bootstrap_test(y, good, weak, n_boot=500)
    assert boot["delta"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, weak))
    assert boot["lo"] > 0 and boot["p_value"] < 0.01
    perm = M.permutation_test(y, good, weak, n_perm=300)
    assert perm["p_value"] < 0.01
    same = M.permutation_test(y, good, good + 1e-9 * rng.normal(size=300), n_perm=200)
    assert same["p_value"] > 0.2


def test_fold_tests_match_scipy_and_exact_enumeration():
    a = np.array([0.81, 0.79, 0.85, 0.80, 0.83])
    b = np.array([0.78, 0.77, 0.80, 0.80, 0.79])
    res = M.ttest_folds(a, b)
    ref = stats.ttest_rel(a, b)
    assert res["t"] == pytest.approx(ref.statistic) and res["p_value"] == pytest.approx(ref.pvalue)
    perm = M.permutation_ttest_folds(a, b)
    d = a - b
    t_obs = d.mean() / (d.std(ddof=1) / np.sqrt(5))
    count = 0
    for signs in itertools.product([-1, 1], repeat=5):
        x = d * np.array(signs)
        sd = x.std(ddof=1)
        t = x.mean() / (sd / np.sqrt(5)) if sd > 0 else np.sign(x.mean()) * np.inf
        count += abs(t) >= abs(t_obs) - 1e-12
    assert perm["p_value"] == pytest.approx(count / 32)
    assert perm["t"] == pytest.approx(t_obs)


def test_ece_and_reliability_against_loop():
    rng = np.random.default_rng(7)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)  # overconfident model
    rel = M.reliability_curve(y, p, n_bins=10)
    assert rel["count"].sum() == 500
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        m = (p > lo) & (p <= hi) if b else (p <= hi)
        if m.any():
            total += m.sum() / 500 * abs(y[m].mean() - p[m].mean())
    assert M.ece(y, p) == pytest.approx(total)
    calibrated = (rng.random(20000) < (q := rng.random(20000))).astype(int)
    assert M.ece(calibrated, q) < 0.02 < M.ece(y, p)


def test_subgroup_auc_and_age_bands():
    rng = np.random.default_rng(8)
    n = 400
    df = pd.DataFrame({"label": rng.integers(0, 2, n), "sex": rng.choice(["F", "M"], n)})
    df["prob"] = rng.normal(size=n) + np.where(df["sex"] == "F", 2.0, 0.0) * df["label"]
    tab = M.subgroup_auc(df, "sex", n_boot=100).set_index("sex")
    for sex in ("F", "M"):
        part = df[df["sex"] == sex]
        assert tab.loc[sex, "auc"] == pytest.approx(roc_auc_score(part["label"], part["prob"]))
    assert tab.loc["F", "auc"] > tab.loc["M", "auc"]
    bands = M.age_band(pd.Series(["035Y", "059Y", "060Y", "081Y"]))
    assert bands.tolist() == ["0-39", "40-59", "60-79", "80+"]
    with pytest.raises(InputError, match="vendor"):
        M.subgroup_auc(df, "vendor")


def test_paired_bootstrap_p_is_never_zero_and_prints_its_floor():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 200)
    good = rng.normal(size=200) + 3.0 * y
    weak = rng.normal(size=200)
    boot = M.paired_bootstrap_test(y, good, weak, n_boot=999, seed=1)
    # every resample favours `good`: k = 0 crossings, so p = 2 (0 + 1) / (999 + 1)
    assert boot["lo"] > 0 and boot["p_value"] == pytest.approx(2 / 1000) and boot["p_min"] == pytest.approx(2 / 1000)
    assert M.format_p(boot["p_value"], boot["p_min"]) == "< 0.0020"
    assert M.format_p(0.0079365, 2 / 252, exact=True) == "0.0079"  # an exact floor is a real value
    assert M.format_p(3e-5) == "3e-05" and M.format_p(float("nan")) == "n/a"


def _student_t(x: np.ndarray, z: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.ttest_ind(x, z, axis=axis).statistic


def test_unpaired_permutation_ttest_exact_and_sampled():
    a = np.array([0.15, 0.21, 0.28, 0.14, 0.07])
    b = np.array([0.40, 0.45, 0.50, 0.35, 0.42])
    res = M.permutation_ttest_ind(a, b)
    # independent: scipy's permutation_test enumerates all C(10, 5) = 252 relabellings
    ref = stats.permutation_test((a, b), _student_t, permutation_type="independent", n_resamples=10000,
                                 vectorized=True)
    assert res["exact"] and res["n_perm"] == 252
    assert res["p_value"] == pytest.approx(ref.pvalue) == pytest.approx(2 / 252)
    assert res["t"] == pytest.approx(stats.ttest_ind(a, b).statistic)
    welch = M.permutation_ttest_ind(a, b, equal_var=False)
    assert welch["t"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).statistic)
    # 8 vs 9 values: 24,310 relabellings > 10,000, so sampled with (k + 1) / (B + 1)
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=8), rng.normal(size=9) + 0.8
    samp = M.permutation_ttest_ind(x, z, n_perm=10000, seed=0)
    exact_p = stats.permutation_test((x, z), _student_t, permutation_type="independent", n_resamples=10**6,
                                     vectorized=True).pvalue
    sd = np.sqrt(exact_p * (1 - exact_p) / 10000)
    assert not samp["exact"] and abs(samp["p_value"] - exact_p) < 4 * sd + 1 / 10001
    assert samp["p_min"] == pytest.approx(1 / 10001)
    with pytest.raises(InputError, match="at least 2"):
        M.permutation_ttest_ind([0.5], [0.6, 0.7])


def test_html_tables_never_print_a_zero_p_value():
    from medbench.eval.report import HtmlReport

    df = pd.DataFrame({"p": [0.5], "p_value": [4e-5], "p_perm_min": [1e-4], "auc": [0.81234]})
    html = HtmlReport("t").table(df).render()
    assert "4e-05" in html and "0.0001" in html and "0.8123" in html and "0.0000" not in html
