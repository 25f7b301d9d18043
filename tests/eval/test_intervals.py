from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medbench.eval.intervals import t_interval


def test_t_interval_is_scipys_student_t_interval_over_the_finite_values() -> None:
    v = np.array([0.31, 0.52, np.nan, 0.44, 0.29, np.inf])
    finite = v[np.isfinite(v)]
    lo, hi = stats.t.interval(0.9, len(finite) - 1, loc=finite.mean(), scale=stats.sem(finite))
    mean, got_lo, got_hi, n = t_interval(v, level=0.9)
    assert n == 4 and mean == pytest.approx(finite.mean())
    assert (got_lo, got_hi) == pytest.approx((lo, hi), rel=1e-12)
    one = t_interval([0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2]) and one[3] == 1
    assert t_interval([np.nan])[3] == 0
