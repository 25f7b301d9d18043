"""Every registered metric on degenerate input: a clear InputError or a finite value, never NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medbench.errors import InputError
from transferability.features import METRICS, compute_metric, hscore, list_metrics
from transferability.metrics.hscore import hscore_shape_warning


def _case(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n, d, c = 30, 8, 3
    y = np.arange(n) % c
    if kind == "constant":
        return np.ones((n, d)), y
    if kind == "one_per_class":
        return rng.standard_normal((c, d)), np.arange(c)
    if kind == "nan":
        x = rng.standard_normal((n, d))
        x[3, 2] = np.nan
        return x, y
    return rng.standard_normal((n, d)), np.zeros(n, dtype=int)  # single class


@pytest.mark.parametrize("kind", ["constant", "one_per_class", "nan", "single_class"])
@pytest.mark.parametrize("metric", list_metrics())
def test_degenerate_input_is_an_input_error_or_finite(metric: str, kind: str) -> None:
    x, y = _case(kind)
    logits = np.ones((len(y), 4)) if METRICS.get(metric).needs_logits else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent 0/0 on the way either
        try:
            value = compute_metric(metric, x, y, logits=logits)
        except InputError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
    assert np.isfinite(value)
    if kind in ("nan", "single_class"):
        pytest.fail(f"{metric} accepted {kind} input")  # these are never scoreable


@pytest.mark.parametrize("metric, kind", [("sfda", "constant"), ("sfda", "one_per_class"),
                                          ("parc", "constant"), ("parc", "one_per_class"),
                                          ("ncti", "constant")])
def test_the_reported_nan_cases_now_raise(metric: str, kind: str) -> None:
    x, y = _case(kind)
    with pytest.raises(InputError, match=metric):
        METRICS.get(metric)(x, y)


def test_hscore_warns_where_it_is_degenerate() -> None:
    rng = np.random.default_rng(1)
    n, c = 20, 3
    y = np.arange(n) % c
    for d in (n - 1, n, 3 * n):  # D >= N - 1: C - 1 for pure noise, whatever the features
        assert hscore(rng.standard_normal((n, d)), y) == pytest.approx(c - 1, rel=1e-9)
        msg = METRICS.get("hscore").warning_for(n, d, c)
        assert msg and "reg_hscore" in msg
    assert hscore_shape_warning(n, n - 2, c) is None
    assert hscore(rng.standard_normal((n, n - 8)), y) < c - 1 - 1e-3
    assert METRICS.get("reg_hscore").warning_for(n, 3 * n, c) is None
