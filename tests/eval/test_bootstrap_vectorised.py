"""The vectorised bootstrap equals the resample-by-resample loop: same generator stream, same
resamples (those lacking a class redrawn), each AUC from average ranks (Mann-Whitney)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medbench.eval.metrics import bootstrap_auc_ci, paired_bootstrap_test


def _loop(y, scores, groups, n_boot, seed, combine=None):
    """The textbook loop: draw clusters with replacement, concatenate, rank, Mann-Whitney AUC."""
    keys = np.unique(groups)
    members = [np.flatnonzero(groups == k) for k in keys]
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_boot:
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), size=len(members))])
        yy = y[idx]
        n1, n0 = int(yy.sum()), int((1 - yy).sum())
        if n1 == 0 or n0 == 0:
            continue
        aucs = []
        for s in scores:
            r = stats.rankdata(s[idx])
            aucs.append((r[yy == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
        out.append(aucs[0] if combine is None else combine(*aucs))
    return np.array(out)


@pytest.mark.parametrize("grouped", [False, True])
def test_bootstrap_ci_equals_the_loop(grouped: bool) -> None:
    rng = np.random.default_rng(0)
    n = 60
    y = (rng.random(n) < 0.15).astype(int)  # few positives: some resamples lack them and are redrawn
    y[:2] = 1
    p = np.round(rng.random(n) + 0.4 * y, 1)  # rounded: many ties
    groups = np.repeat(np.arange(20), 3) if grouped else np.arange(n)
    boots = _loop(y, [p], groups.astype(str) if grouped else groups, 300, seed=5)
    ci = bootstrap_auc_ci(y, p, groups=groups.astype(str) if grouped else None, n_boot=300, seed=5)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    assert ci.lo == pytest.approx(lo, abs=1e-12) and ci.hi == pytest.approx(hi, abs=1e-12)


def test_paired_bootstrap_equals_the_loop() -> None:
    rng = np.random.default_rng(1)
    n = 80
    y = (rng.random(n) < 0.4).astype(int)
    p1, p2 = rng.random(n) + 0.5 * y, np.round(rng.random(n) + 0.2 * y, 2)
    groups = np.repeat(np.arange(40), 2).astype(str)
    diffs = _loop(y, [p1, p2], groups, 400, seed=2, combine=lambda a, b: a - b)
    res = paired_bootstrap_test(y, p1, p2, groups=groups, n_boot=400, seed=2)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    tail = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    assert res["lo"] == pytest.approx(lo, abs=1e-12) and res["hi"] == pytest.approx(hi, abs=1e-12)
    assert res["p_value"] == pytest.approx(min(1.0, 2 * (tail + 1) / 401))
