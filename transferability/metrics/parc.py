"""PARC: Pairwise Annotation Representation Comparison (Bolya et al., NeurIPS 2021).

Features are reduced to 32 dims by PCA and standardised per dim; the representation
dissimilarity matrix is 1 - Pearson correlation between samples, the label one is
1 - correlation of one-hot label rows; PARC is 100 x Spearman correlation of their upper
triangles (ties averaged, as scipy.stats.spearmanr). The label dissimilarity is built from its
exact closed form (0 within a class, 1 + 1/(C-1) across) rather than from floating-point
correlations, whose rounding noise would break the ties in the authors' version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from transferability._backend import get_backend
from transferability._validate import prepare
from transferability.metrics._linalg import center, pca_project
from transferability.metrics.base import register_metric


def _row_corr_dist(xp: Any, x: Any) -> Any:
    z = x - xp.mean(x, axis=1, keepdims=True)
    z = z / xp.sqrt(xp.sum(z * z, axis=1, keepdims=True))
    return 1.0 - z @ z.T


def _rank_avg_torch(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata 'average')."""
    order = torch.argsort(v, stable=True)
    sv = v[order]
    _, counts = torch.unique_consecutive(sv, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(v)
    ranks[order] = torch.repeat_interleave(avg, counts)
    return ranks


def _pearson_torch(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / torch.sqrt((a @ a) * (b @ b)))


@register_metric("parc", torch=True, reference="Bolya et al., PARC, NeurIPS 2021")
def parc(features: Any, labels: Any, *, logits: Any = None, pca_dims: int = 32,
         backend: str = "numpy", device: Any = None) -> float:
    """PARC score in [-100, 100] (higher is better); memory grows as N^2.

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        pca_dims: PCA dimensions (32).
        backend: "numpy" or "torch".
        device: Torch device for ``backend="torch"``.
    """
    xp = get_backend(backend, device)
    x_np, y, c = prepare(features, labels)
    x = pca_project(xp, xp.asarray(x_np), pca_dims)
    x = center(xp, x)
    x = x / xp.maximum(xp.sqrt(xp.var(x, axis=0)), 1e-300)  # StandardScaler (biased std)
    n = x.shape[0]
    rdm_x = _row_corr_dist(xp, x)
    # 1 - corr of one-hot rows is exactly 0 (same class) or 1 + 1/(C-1); built exactly so that
    # rounding noise cannot split the tie groups the Spearman ranks depend on.
    rdm_y = xp.asarray((y[:, None] != y[None, :]) * (1.0 + 1.0 / (c - 1)))
    if xp.name == "torch":
        iu = torch.triu_indices(n, n, 1, device=rdm_x.device)
        a, b = rdm_x[iu[0], iu[1]], rdm_y[iu[0], iu[1]]
        return 100.0 * _pearson_torch(_rank_avg_torch(a), _rank_avg_torch(b))
    from scipy.stats import spearmanr

    iu = np.triu_indices(n, 1)
    return 100.0 * float(spearmanr(rdm_x[iu], rdm_y[iu])[0])
