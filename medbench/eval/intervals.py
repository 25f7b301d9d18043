"""Confidence intervals over repeats (seeds, splits, volumes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)`` of the finite ``values``: the two-sided Student-t interval of the mean,
    ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (``sd`` with ``ddof=1``); lo/hi NaN for n < 2.

    With few repeats the interval is wide (t_{0.975, 2} = 4.30 for three seeds).
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n
