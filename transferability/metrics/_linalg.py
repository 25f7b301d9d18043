"""Linear-algebra helpers shared by several metrics (backend-agnostic, float64)."""

from __future__ import annotations

from typing import Any

import numpy as np


def center(xp: Any, x: Any) -> Any:
    """Subtract the column means."""
    return x - xp.mean(x, axis=0, keepdims=True)


def class_means(xp: Any, x: Any, y: np.ndarray, c: int) -> Any:
    """(C, D) means of the rows of ``x`` per class of ``y`` (every class of [0, C) present)."""
    onehot = (y[:, None] == np.arange(c)[None, :]).astype(np.float64)
    return (xp.asarray(onehot).T @ x) / xp.asarray(onehot.sum(axis=0)[:, None])


def softmax(xp: Any, s: Any) -> Any:
    """Row-wise softmax of (N, K) scores (max-shifted)."""
    s = s - xp.amax(s, axis=1, keepdims=True)
    e = xp.exp(s)
    return e / xp.sum(e, axis=1, keepdims=True)


def pca(xp: Any, x: Any, k: int | float) -> tuple[Any, np.ndarray]:
    """PCA scores of ``x`` and the explained variances of all components (decreasing).

    ``k`` is a number of components, or a fraction in (0, 1): the fewest components whose
    explained-variance ratio reaches it (as scikit-learn's ``PCA(n_components=0.8)``). Uses the
    eigendecomposition of the D x D covariance (or the N x N Gram matrix when N < D), much
    cheaper than a full SVD. Components are signed as scikit-learn's PCA does (largest-magnitude
    loading positive), so the scores match ``PCA(k, svd_solver="full")``.
    """
    xc = center(xp, x)
    n, d = x.shape
    if d <= n:
        w, v = xp.eigh(xc.T @ xc)
    else:  # N < D: eigenvectors of the Gram matrix, mapped back to loadings below
        w, v = xp.eigh(xc @ xc.T)
    var = np.clip(xp.to_numpy(w)[::-1], 0.0, None) / (n - 1)
    rank = min(n - 1, d)  # centred data has rank <= N - 1
    if isinstance(k, float) and 0 < k < 1:
        ratio = np.cumsum(var[:rank]) / var.sum()
        k = int(np.searchsorted(ratio, k, side="right") + 1)
    k = int(min(k, rank))
    top = xp.index(np.arange(v.shape[1] - 1, v.shape[1] - 1 - k, -1))  # decreasing variance
    v = v[:, top]
    if d > n:
        v = (xc.T @ v) / xp.sqrt(xp.asarray(np.maximum(var[:k] * (n - 1), 1e-300)))
    rows = xp.index(np.argmax(np.abs(xp.to_numpy(v)), axis=0))
    signs = xp.asarray(np.sign(xp.to_numpy(v[rows, xp.index(np.arange(k))])))
    return xc @ (v * signs), var[:rank]


def pca_project(xp: Any, x: Any, k: int) -> Any:
    """Scores of ``x`` on its top-``k`` principal axes (see :func:`pca`)."""
    return pca(xp, x, k)[0]


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
