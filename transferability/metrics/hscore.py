"""H-score (Bao et al., ICIP 2019) and its shrinkage-regularised form (Ibrahim et al., 2022).

H(f) = tr(cov(f)^+ cov(E[f | y])), with unbiased covariances and a pseudo-inverse (rcond 1e-15)
as in the authors' code; cov(E[f | y]) is formed from the C class means and the trace as a sum
of elementwise products (same value, O(D^2) instead of O(N D^2 + D^3)). The regularised H-score replaces cov(f) by the Ledoit-Wolf estimate
(1 - a) cov + a mu I and scales the between-class covariance by (1 - a)
("Newer is not always better: rethinking transferability metrics", Ibrahim et al., 2022).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from transferability._backend import get_backend
from transferability._validate import prepare
from transferability.metrics._linalg import center, class_means, ledoit_wolf
from transferability.metrics.base import register_metric

log = logging.getLogger(__name__)


def _cov_class_means(xp: Any, x: Any, y: np.ndarray, c: int) -> Any:
    """cov(g) (unbiased) of g_i = E[f | y = y_i], from the C class means instead of N rows."""
    counts = np.bincount(y, minlength=c).astype(np.float64)
    dev = class_means(xp, x, y, c) - xp.mean(x, axis=0, keepdims=True)  # the mean of g is the mean of f
    return (dev.T @ (dev * xp.asarray(counts[:, None]))) / (x.shape[0] - 1)


def _cov(xp: Any, x: Any) -> Any:
    xc = center(xp, x)
    return (xc.T @ xc) / (x.shape[0] - 1)


def _trace_product(xp: Any, a: Any, b: Any) -> float:
    """tr(A B) for symmetric A, B without forming the product."""
    return float(xp.sum(a * b))


def hscore_shape_warning(n: int, d: int, c: int) -> str | None:
    """H-score is degenerate when D >= N - 1: the centred features then span the whole sample
    space, cov(f)^+ cov(f) is the projector onto it and H = C - 1 whatever the features."""
    if d >= n - 1:
        return (f"hscore is degenerate for D={d} >= N-1={n - 1} (rank-deficient covariance): it equals "
                f"C-1={c - 1} for any features; use reg_hscore (the regularised H-score) or more samples")
    return None


@register_metric("hscore", torch=True, reference="Bao et al., H-score, ICIP 2019",
                 shape_warning=hscore_shape_warning)
def hscore(features: Any, labels: Any, *, logits: Any = None, backend: str = "numpy",
           device: Any = None) -> float:
    """H-score tr(cov(f)^+ cov(E[f|y])) (higher is better).

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        backend: "numpy" or "torch".
        device: Torch device for ``backend="torch"``.
    """
    xp = get_backend(backend, device)
    x_np, y, c = prepare(features, labels)
    msg = hscore_shape_warning(x_np.shape[0], x_np.shape[1], c)
    if msg:
        log.warning(msg)
    x = xp.asarray(x_np)
    return _trace_product(xp, xp.pinv(_cov(xp, x), 1e-15), _cov_class_means(xp, x, y, c))


@register_metric("reg_hscore", torch=True, reference="Ibrahim et al., regularised H-score, 2022")
def reg_hscore(features: Any, labels: Any, *, logits: Any = None, backend: str = "numpy",
               device: Any = None) -> float:
    """Shrinkage-regularised H-score with the Ledoit-Wolf covariance (higher is better)."""
    xp = get_backend(backend, device)
    x_np, y, c = prepare(features, labels)
    x = xp.asarray(x_np)
    cov_f, a = ledoit_wolf(xp, x)
    return (1.0 - a) * _trace_product(xp, xp.pinv(cov_f, 1e-15), _cov_class_means(xp, x, y, c))
