"""Neighbourhood Components Analysis with scikit-learn's objective and optimiser, computed in blocks.

LP (Juodelyte et al. 2024) fits scikit-learn's ``NeighborhoodComponentsAnalysis`` (Goldberger et
al. 2004): maximise the expected number of correctly classified points under a softmax over
negative squared distances in the projected space, by L-BFGS-B from a PCA (or LDA/identity)
start. scikit-learn materialises several N x N float64 matrices per evaluation (200 MB each at
N = 5000), so the loss is memory-bound: 141 s for N = 5000, D = 2048 on the 2-core CI machine.

:func:`fit_nca` keeps the same objective, the same start (same PCA and random state), the same
optimiser and settings (``scipy.optimize.minimize``, L-BFGS-B, ``tol``, ``maxiter``), all in
float64, and only computes the loss and its gradient in row blocks with torch, so the iterates agree
with scikit-learn's to floating-point rounding. The gradient uses
``Z^T (W + W^T - diag(W^T 1)) X = (Z^T W + (W Z)^T - (Z * (W^T 1))^T) X`` with
``W = P * same - P * p``, so no symmetric N x N matrix is formed.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize

#: Rows per block: 512 x N float64 (20 MB at N = 5000) stays cache-friendly.
BLOCK_ROWS = 512


def nca_init(x: np.ndarray, y: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """scikit-learn's ``init="auto"`` start: LDA when ``n_components <= min(D, C - 1)``, else PCA
    (seeded with ``RandomState(seed)``) when ``n_components < min(D, N)``, else the identity."""
    n, d = x.shape
    c = len(np.unique(y))
    if n_components <= min(d, c - 1):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        return LinearDiscriminantAnalysis(n_components=n_components).fit(x, y).scalings_.T[:n_components]
    if n_components < min(d, n):
        from sklearn.decomposition import PCA

        return PCA(n_components=n_components, random_state=np.random.RandomState(seed)).fit(x).components_
    return np.eye(n_components, d)


def nca_loss_grad(transform: np.ndarray, x: torch.Tensor, y: torch.Tensor,
                  block: int = BLOCK_ROWS) -> tuple[float, np.ndarray]:
    """NCA objective ``sum_i p_i`` and its gradient w.r.t. the (flattened) ``(k, D)`` transform.

    ``p_i = sum_{j in class(i)} p_ij``, ``p_ij = softmax_j(-||z_i - z_j||^2)`` with ``p_ii = 0``.
    """
    n, d = x.shape
    lt = torch.from_numpy(transform.reshape(-1, d))
    z = x @ lt.T  # (N, k)
    zz = (z * z).sum(1)
    k = z.shape[1]
    zt_w = torch.zeros(k, n, dtype=torch.float64)
    wz = torch.empty(n, k, dtype=torch.float64)
    colsum = torch.zeros(n, dtype=torch.float64)
    loss = 0.0
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = torch.arange(start, stop)
        dist = zz[start:stop, None] - 2.0 * (z[start:stop] @ z.T) + zz[None, :]
        dist.clamp_(min=0.0)
        dist[rows - start, rows] = torch.inf
        dist.neg_()
        dist -= dist.max(dim=1, keepdim=True).values
        prob = dist.exp_()
        prob /= prob.sum(dim=1, keepdim=True)
        same = y[start:stop, None] == y[None, :]
        masked = prob * same
        p = masked.sum(dim=1)
        loss += float(p.sum())
        w = masked.sub_(prob.mul_(p[:, None]))  # W rows = P*same - P*p
        zt_w += z[start:stop].T @ w
        wz[start:stop] = w @ z
        colsum += w.sum(dim=0)
    m = zt_w + wz.T - (z * colsum[:, None]).T
    grad = 2.0 * (m @ x)
    return loss, grad.numpy().ravel()


def fit_nca(x: np.ndarray, y: np.ndarray, n_components: int, *, seed: int = 42, max_iter: int = 50,
            tol: float = 1e-5) -> np.ndarray:
    """Fit NCA as scikit-learn does (same start, objective and L-BFGS-B settings).

    Args:
        x: (N, D) float64 features.
        y: (N,) integer labels.
        n_components: Output dims.
        seed: Random state of the PCA start (scikit-learn's ``random_state``).
        max_iter: L-BFGS-B iterations (scikit-learn's default 50).
        tol: ``scipy.optimize.minimize`` tolerance (scikit-learn's default 1e-5).

    Returns:
        The ``(n_components, D)`` transform (scikit-learn's ``components_``).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    x0 = np.ravel(nca_init(x, np.asarray(y), n_components, seed))

    def fun(t: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = nca_loss_grad(t, xt, yt)
        return -loss, -grad

    res = minimize(fun, x0, method="L-BFGS-B", jac=True, tol=tol, options={"maxiter": max_iter})
    return res.x.reshape(-1, x.shape[1])
