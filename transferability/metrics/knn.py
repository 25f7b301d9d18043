"""Neighbourhood-based feature quality: LP (NCA + kNN, Juodelyte et al. 2024) and kNN accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from transferability._validate import prepare
from transferability.metrics.base import register_metric


@register_metric("lp", reference="Juodelyte et al., On dataset transferability, 2024")
def lp(features: Any, labels: Any, *, logits: Any = None, n_components: int = 50,
       k: int = 5, seed: int = 0) -> float:
    """Feature quality LP: NCA to ``n_components`` dims, ``k``-NN, mean probability of the true
    class on the fitted samples (each sample counts among its own neighbours).

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        n_components: NCA output dims (50; capped at D).
        k: Neighbours (5; capped at N).
        seed: NCA initialisation seed.
    """
    from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

    x, y, _ = prepare(features, labels)
    nca = NeighborhoodComponentsAnalysis(n_components=min(n_components, x.shape[1]), random_state=seed)
    z = nca.fit_transform(x, y)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(y))).fit(z, y)
    proba = knn.predict_proba(z)
    return float(np.mean(proba[np.arange(len(y)), y]))


@register_metric("knn", reference="k-nearest-neighbour accuracy (cross-validated)")
def knn(features: Any, labels: Any, *, logits: Any = None, k: int = 5, folds: int = 5,
        seed: int = 0) -> float:
    """Stratified ``folds``-fold cross-validated ``k``-NN accuracy (Euclidean)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x, y, _ = prepare(features, labels, min_per_class=2)
    n_folds = int(min(folds, np.bincount(y).min()))
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    correct = 0
    for tr, te in skf.split(x, y):
        clf = KNeighborsClassifier(n_neighbors=min(k, len(tr))).fit(x[tr], y[tr])
        correct += int(np.sum(clf.predict(x[te]) == y[te]))
    return correct / len(y)
