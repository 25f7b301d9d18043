"""PARC's Spearman correlation against scipy's, with and without ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from transferability.metrics.parc import few_value_ranks, spearman


@pytest.mark.parametrize("ties_in_a", [False, True])
def test_spearman_matches_scipy(ties_in_a: bool) -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal(5000)
    if ties_in_a:  # tie groups of several sizes, and -0.0 tied with 0.0
        a = np.round(a, 1)
        a[:7] = 0.0
        a[7:11] = -0.0
    b = rng.choice([0.0, -0.0, 2.2e-16, 1.1111111111111112, 1.1111111111111114], 5000)
    b = np.where(a > 0.5, b + 1.0, b)  # some association
    assert spearman(a, b) == pytest.approx(spearmanr(a, b)[0], abs=1e-12)


def test_few_value_ranks_are_scipys_average_ranks() -> None:
    v = np.array([2.0, 0.0, -0.0, 2.2e-16, 2.0, 0.0, 5.0, 2.2e-16, 0.0])
    np.testing.assert_array_equal(few_value_ranks(v), rankdata(v, method="average"))
