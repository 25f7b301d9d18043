"""Linear-algebra helpers shared by several metrics (backend-agnostic, float64)."""

from __future__ import annotations

from typing import Any

import numpy as np


def center(xp: Any, x: Any) -> Any:
    """Subtract the column means."""
    return x - xp.mean(x, axis=0, keepdims=True)


def pca_project(xp: Any, x: Any, k: int) -> Any:
    """Project centred ``x`` on its top-``k`` principal axes (eigenvectors of the covariance).

    Components are ordered by decreasing variance and signed as scikit-learn's PCA does (the
    largest-magnitude loading of each component is positive), so scores match ``PCA(k)``.
    """
    xc = center(xp, x)
    k = min(k, x.shape[0] - 1, x.shape[1])  # centred data has rank <= N - 1
    if x.shape[1] <= x.shape[0]:
        _, v = xp.eigh(xc.T @ xc)
        v = v[:, -k:]
    else:  # N < D: eigenvectors of the Gram matrix, mapped back to loadings
        w, u = xp.eigh(xc @ xc.T)
        v = (xc.T @ u[:, -k:]) / xp.sqrt(xp.maximum(w[-k:], 1e-300))
    v = v[:, xp.index(np.arange(k - 1, -1, -1))]  # decreasing variance
    rows = xp.index(np.argmax(np.abs(xp.to_numpy(v)), axis=0))
    signs = xp.asarray(np.sign(xp.to_numpy(v[rows, xp.index(np.arange(k))])))
    return xc @ (v * signs)


def ledoit_wolf(xp: Any, x: Any) -> tuple[Any, float]:
    """Ledoit-Wolf shrunk covariance of ``x`` (not assumed centred) and its shrinkage.

    The estimator of Ledoit & Wolf (2004) in the form scikit-learn uses: the biased empirical
    covariance shrunk towards (trace / D) I by the estimated optimal intensity.
    """
    n, p = x.shape
    xc = center(xp, x)
    x2 = xc**2
    emp_trace = xp.sum(x2, axis=0) / n
    mu = float(xp.sum(emp_trace)) / p
    beta_ = float(xp.sum(xp.sum(x2, axis=1) ** 2))  # = sum of all entries of x2^T x2
    gram = xc.T @ xc
    delta_ = float(xp.sum(gram**2)) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * float(xp.sum(emp_trace)) + p * mu**2) / p
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    cov = (1.0 - shrinkage) * gram / n + shrinkage * mu * xp.eye(p)
    return cov, shrinkage
