"""The blockwise NCA behind LP follows scikit-learn's NeighborhoodComponentsAnalysis (the authors'
call) to rounding: same start, same objective, same L-BFGS-B path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferability.metrics.nca import fit_nca, nca_loss_grad


def _data(n: int = 240, d: int = 30, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = rng.standard_normal((n, d)) + 0.8 * rng.standard_normal((c, d))[y]
    return x, y


def _loss_grad_dense(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The NCA objective and gradient from the formula (Goldberger et al. 2004), dense, in numpy."""
    lt = t.reshape(-1, x.shape[1])
    z = x @ lt.T
    diff = z[:, None, :] - z[None, :, :]
    logits = -(diff**2).sum(-1)
    np.fill_diagonal(logits, -np.inf)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    same = y[:, None] == y[None, :]
    pi = (p * same).sum(1)
    # d p_i / d L = 2 L sum_k p_ik (pi - [k in class i]) x_ik x_ik^T  (x_ik = x_i - x_k)
    coef = p * (pi[:, None] - same)  # (i, k)
    xd = x[:, None, :] - x[None, :, :]
    grad = 2 * lt @ np.einsum("ik,ika,ikb->ab", coef, xd, xd)
    return float(pi.sum()), grad.ravel()


def test_blockwise_loss_and_gradient_match_the_formula() -> None:
    x, y = _data(60, 8, 3)
    t = np.random.default_rng(1).standard_normal((3, 8)).ravel() * 0.3
    loss, grad = nca_loss_grad(t, torch.from_numpy(x), torch.from_numpy(y), block=16)  # several blocks
    ref_loss, ref_grad = _loss_grad_dense(t, x, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-9 * np.abs(ref_grad).max())


@pytest.mark.parametrize("n_components", [2, 10])  # 2 <= C-1: LDA start; 10: PCA start
def test_fit_nca_follows_sklearn(n_components: int) -> None:
    from sklearn.neighbors import NeighborhoodComponentsAnalysis

    x, y = _data()
    ref = NeighborhoodComponentsAnalysis(n_components=n_components, random_state=42).fit(x, y)
    ours = fit_nca(x, y, n_components, seed=42)
    assert ours.shape == ref.components_.shape
    np.testing.assert_allclose(ours,
                               ref.components_, rtol=1e-6, atol=1e-6 * np.abs(ref.components_).max())


def test_lp_equals_the_sklearn_recipe() -> None:
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    from transferability.metrics.knn import lp

    x, y = _data(300, 40, 5, seed=3)
    z = NeighborhoodComponentsAnalysis(n_components=20, random_state=42).fit_transform(x, y)
    proba = KNeighborsClassifier(n_neighbors=5).fit(z, y).predict_proba(z)
    assert lp(x, y, n_components=20) == pytest.approx(float(proba[np.arange(len(y)), y].mean()), abs=1e-12)
