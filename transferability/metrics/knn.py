"""Neighbourhood-based feature quality: LP (NCA + kNN, Juodelyte et al. 2024) and kNN accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from medbench.errors import InputError
from transferability._validate import canonical_order, prepare
from transferability.metrics.base import register_metric
from transferability.metrics.nca import fit_nca


@register_metric("lp", reference="Juodelyte et al., On dataset transferability, 2024")
def lp(features: Any, labels: Any, *, logits: Any = None, n_components: int = 50,
       k: int = 5, seed: int = 42, solver: str = "blockwise") -> float:
    """Feature quality LP: NCA to ``n_components`` dims, ``k``-NN, mean probability of the true
    class on the fitted samples (each sample counts among its own neighbours).

    The NCA is the authors' ``NeighborhoodComponentsAnalysis(n_components=50, random_state=42)``.
    Its 50 L-BFGS iterations usually stop before convergence, so its result is sensitive to
    rounding: scikit-learn's own LP moves when only the sample order (hence the rounding) changes,
    SD 0.003 over 16 orders at N=1000 and 0.010 over 6 at N=5000, D=2048
    (``benchmarks/transferability.py --lp-reference R`` measures it). ``"blockwise"`` runs the
    same algorithm with a blocked, sparse-aware objective (:mod:`transferability.metrics.nca`;
    at N=5000, D=2048 on 2 cores 72-101 s -> 4.6-5.6 s, the spread coming from the number of
    L-BFGS evaluations), equal to scikit-learn's to ~1e-13 per evaluation; its LP values fall
    within that spread (mean over the same orders 0.5033 vs 0.5034 at N=1000, 0.5275 vs 0.5285
    at N=5000).
    ``"sklearn"`` calls scikit-learn's estimator, the authors' exact code path.

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        n_components: NCA output dims (50; capped at D).
        k: Neighbours (5; capped at N).
        seed: NCA initialisation seed (42, the authors' ``random_state``).
        solver: ``"blockwise"`` (default) or ``"sklearn"``.
    """
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    if solver not in ("blockwise", "sklearn"):
        raise InputError(f"lp: unknown solver {solver!r}; use 'blockwise' or 'sklearn'")
    x, y, _ = prepare(features, labels)
    dims = min(n_components, x.shape[1])
    if solver == "blockwise":
        z = x @ fit_nca(x, y, dims, seed=seed).T
    else:
        z = NeighborhoodComponentsAnalysis(n_components=dims, random_state=seed).fit_transform(x, y)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(y))).fit(z, y)
    proba = knn.predict_proba(z)
    return float(np.mean(proba[np.arange(len(y)), y]))


@register_metric("knn", reference="k-nearest-neighbour accuracy (cross-validated)")
def knn(features: Any, labels: Any, *, logits: Any = None, k: int = 5, folds: int = 5,
        seed: int = 0) -> float:
    """Stratified ``folds``-fold cross-validated ``k``-NN accuracy (Euclidean).

    Folds come from :func:`stratified_folds` (capped at the smallest class size), so the score
    does not depend on sample order or class numbering.
    """
    x, y, c = prepare(features, labels, min_per_class=2)
    fold = stratified_folds(x, y, c, min(folds, int(np.bincount(y).min())), seed)
    correct = 0
    for f in range(int(fold.max()) + 1):
        tr, te = fold != f, fold == f
        pred = knn_predict(x[tr], y[tr], x[te], k=min(k, int(tr.sum())), n_classes=c)
        correct += int(np.sum(pred == y[te]))
    return correct / len(y)


def knn_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, k: int,
                n_classes: int) -> np.ndarray:
    """Majority vote of the ``k`` nearest neighbours; a tied vote goes to the tied class whose
    member is nearest (not to the smallest class index, so class numbering does not matter)."""
    from sklearn.neighbors import NearestNeighbors

    _, nbr = NearestNeighbors(n_neighbors=k).fit(x_train).kneighbors(x_test)
    nbr_y = y_train[nbr]  # (n_test, k), nearest first
    votes = np.zeros((len(x_test), n_classes), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(x_test)), k), nbr_y.ravel()), 1)
    tied = votes == votes.max(axis=1, keepdims=True)
    pred = np.full(len(x_test), -1, dtype=np.int64)
    for j in range(k):
        cls = nbr_y[:, j]
        take = (pred < 0) & tied[np.arange(len(x_test)), cls]
        pred[take] = cls[take]
    return pred


def stratified_folds(x: np.ndarray, y: np.ndarray, c: int, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index per sample: within each class, rows in canonical order are dealt round-robin
    starting at a seeded offset. Independent of sample order and of how classes are numbered."""
    order = canonical_order(x)
    rank = np.empty(len(y), dtype=np.int64)
    rank[order] = np.arange(len(y))
    fold = np.empty(len(y), dtype=np.int64)
    offset = int(np.random.default_rng(seed).integers(n_folds))
    for k in range(c):
        idx = np.flatnonzero(y == k)
        idx = idx[np.argsort(rank[idx])]
        fold[idx] = (np.arange(len(idx)) + offset) % n_folds
    return fold
