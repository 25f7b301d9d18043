"""The blockwise NCA behind LP: objective against the formula, fit against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

from medbench.errors import InputError
from transferability.metrics import nca
from transferability.metrics.knn import lp
from transferability.metrics.nca import BlockwiseObjective, fit_nca


def nca_objective_autograd(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    """NCA from its definition (Goldberger et al. 2004): f(A) = sum_i sum_{j != i, y_j = y_i} p_ij,
    p_ij = exp(-|A x_i - A x_j|^2) / sum_{l != i} exp(-|A x_i - A x_l|^2); gradient by autograd."""
    a = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    z = torch.tensor(x) @ a.T
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    d2 = d2 + torch.diag(torch.full((len(y),), torch.inf, dtype=torch.float64))
    p = torch.softmax(-d2, dim=1)  # exp(-d2) normalised per row, without underflow
    same = torch.tensor(y[:, None] == y[None, :])
    f = (p * same).sum()
    f.backward()
    return float(f.detach()), a.grad.numpy()


def rounding(x: np.ndarray, t: np.ndarray) -> float:
    """Rounding scale of a gradient entry: a sum of N x N terms W_ij (z_i - z_j)(x_i - x_j), |W| <= 1,
    which cancel to far less when the softmax saturates."""
    return 1e-14 * len(x) ** 2 * np.abs(x @ t.T).max() * np.abs(x).max()


@pytest.mark.parametrize("scale", [1.0, 12.0])  # 12: many pairs beyond e^-500, so they count as 0
@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("block_elements", [1 << 20, 40])
def test_objective_and_gradient_match_the_formula(block_elements: int, path: str, scale: float,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nca, "SPARSE_FRACTION", -1.0 if path == "dense" else 2.0)
    rng = np.random.default_rng(3)
    y = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 1, 2, 0, 0, 3])  # class 3: one sample
    x = rng.standard_normal((len(y), 7)) + 0.7 * rng.standard_normal((4, 7))[y]
    t = scale * 0.6 * rng.standard_normal((3, 7))
    obj = BlockwiseObjective(x, y, block_elements=block_elements)
    if block_elements == 40:
        assert len(obj.blocks) > 4  # several blocks per class, a class boundary inside none
    f, g = nca_objective_autograd(x, y, t)
    loss, grad = obj(t.ravel())
    assert obj.full_passes == 1
    for jump in (0.01, 0.5):  # later evaluations start from the last one's nearest samples
        t2 = t + jump * scale * rng.standard_normal(t.shape)
        f2, g2 = nca_objective_autograd(x, y, t2)
        loss2, grad2 = obj(t2.ravel())
        assert loss2 == pytest.approx(-f2, rel=1e-12)
        np.testing.assert_allclose(grad2.reshape(t.shape), -g2, rtol=1e-10, atol=rounding(x, t2))
    assert obj.full_passes == (3 if path == "dense" else 1)
    if scale > 1:  # the case is what it claims: some pairs are dropped, some kept
        z = x @ t.T
        d2 = ((z[:, None] - z[None]) ** 2).sum(-1) + np.diag(np.full(len(y), np.inf))
        beyond = d2 - d2.min(1, keepdims=True) > nca.LOGIT_RANGE
        assert 0.2 < beyond.mean() < 0.9
    assert loss == pytest.approx(-f, rel=1e-12)  # the optimiser minimises minus the objective
    np.testing.assert_allclose(grad.reshape(t.shape), -g, rtol=1e-10, atol=rounding(x, t))


def authors_lp(x: np.ndarray, y: np.ndarray, n_components: int) -> tuple[float, np.ndarray, int]:
    """The authors' LP_Score recipe, through scikit-learn."""
    nca = NeighborhoodComponentsAnalysis(n_components=n_components, random_state=42).fit(x, y)
    z = nca.transform(x)
    prob = KNeighborsClassifier(n_neighbors=5).fit(z, y).predict_proba(z)
    return float(np.sum(prob[np.arange(len(y)), y]) / len(y)), nca.components_, nca.n_iter_


def test_fit_matches_scikit_learn_where_lbfgs_converges() -> None:
    """Before L-BFGS's iteration cap the path is stable, so both fits land on the same transform."""
    rng = np.random.default_rng(0)
    y = np.arange(240) % 4
    x = rng.standard_normal((240, 12)) + 1.2 * rng.standard_normal((4, 12))[y]
    ref_lp, ref_components, n_iter = authors_lp(x, y, 6)  # 6 > C - 1: PCA start
    assert n_iter < 50  # converged, not stopped by maxiter
    np.testing.assert_allclose(fit_nca(x, y, 6), ref_components, rtol=0,
                               atol=1e-5 * np.abs(ref_components).max())
    assert lp(x, y, n_components=6) == ref_lp
    assert lp(x, y, n_components=6, solver="sklearn") == ref_lp


@pytest.mark.parametrize("n, d, c, dims", [(90, 10, 4, 2),    # dims <= C - 1: LDA start
                                           (90, 10, 3, 6),    # PCA start
                                           (90, 10, 3, 10)])  # dims = D: identity start
def test_every_start_is_scikit_learns(n: int, d: int, c: int, dims: int) -> None:
    rng = np.random.default_rng(1)
    y = np.arange(n) % c
    x = rng.standard_normal((n, d)) + rng.standard_normal((c, d))[y]
    ref = NeighborhoodComponentsAnalysis(n_components=dims, random_state=42, max_iter=1).fit(x, y)
    np.testing.assert_allclose(fit_nca(x, y, dims, max_iter=1), ref.components_, rtol=1e-9,
                               atol=1e-12)


def test_unknown_solver_is_refused() -> None:
    x = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(InputError, match="unknown solver 'fast'"):
        lp(x, np.arange(20) % 2, solver="fast")


@pytest.mark.parametrize("n, d, k", [(600, 80, 10), (300, 700, 20), (800, 600, 50), (900, 80, 70), (400, 300, 20)])
def test_randomized_pca_start_is_scikit_learns(n: int, d: int, k: int) -> None:
    """The torch range finder against scikit-learn's PCA, and the solver choice against its own."""
    from sklearn.decomposition import PCA

    from transferability.metrics.nca import _pca_solver, randomized_pca_components

    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, 30)) @ rng.standard_normal((30, d)) + 0.3 * rng.standard_normal((n, d))
    pca = PCA(k, random_state=np.random.RandomState(42)).fit(x)
    assert _pca_solver(n, d, k) == pca._fit_svd_solver
    if pca._fit_svd_solver == "randomized":
        np.testing.assert_allclose(randomized_pca_components(x, k, 42), pca.components_, rtol=0, atol=1e-10)
