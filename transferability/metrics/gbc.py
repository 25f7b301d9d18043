"""GBC: Gaussian Bhattacharyya Coefficient (Pandy et al., CVPR 2022).

Features are reduced to 64 dims by PCA (as in the paper's experiments), each class is modelled
as a Gaussian with its mean and (spherical: mean of the per-dim variances, or diagonal)
variance, variances floored at 1e-4 as in the authors' code; the score is
-sum over ordered class pairs c1 != c2 of exp(-D_B(c1, c2)) with the Bhattacharyya distance
D_B = 1/8 sum (mu1-mu2)^2 / s + 1/2 (sum log s - 1/2 sum log s1 - 1/2 sum log s2), s = (s1+s2)/2.

Fix: for spherical Gaussians the authors' code sums the log-variance term over a scalar, i.e.
drops the factor D of the log-determinant of s I; here the sums run over all D dims, which is
the Bhattacharyya distance of the two Gaussians N(mu1, s1 I) and N(mu2, s2 I).
"""

from __future__ import annotations

import math
from typing import Any

from medbench.errors import InputError
from transferability._backend import get_backend
from transferability._validate import prepare
from transferability.metrics._linalg import pca_project
from transferability.metrics.base import register_metric


@register_metric("gbc", torch=True, reference="Pandy et al., GBC, CVPR 2022")
def gbc(features: Any, labels: Any, *, logits: Any = None, gaussian_type: str = "spherical",
        pca_dims: int | None = 64, backend: str = "numpy", device: Any = None) -> float:
    """GBC score (higher, i.e. closer to 0, is better).

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        gaussian_type: "spherical" (default) or "diagonal".
        pca_dims: PCA dimensions before fitting the Gaussians (None: keep all).
        backend: "numpy" or "torch".
        device: Torch device for ``backend="torch"``.
    """
    if gaussian_type not in ("spherical", "diagonal"):
        raise InputError(f"gaussian_type must be 'spherical' or 'diagonal', got {gaussian_type!r}")
    xp = get_backend(backend, device)
    x_np, y, c = prepare(features, labels)
    x = xp.asarray(x_np)
    if pca_dims is not None:
        x = pca_project(xp, x, pca_dims)
    stats = []
    for k in range(c):
        xk = x[xp.mask(y == k)]
        var = xp.maximum(xp.var(xk, axis=0), 1e-4)
        if gaussian_type == "spherical":
            var = xp.mean(var) + 0.0 * var  # one variance for every dim
        stats.append((xp.mean(xk, axis=0), var))
    total = 0.0
    for i in range(c):
        for j in range(c):
            if i == j:
                continue
            (m1, s1), (m2, s2) = stats[i], stats[j]
            s = (s1 + s2) / 2
            first = float(xp.sum((m1 - m2) ** 2 / s)) / 8
            second = float(xp.sum(xp.log(s)) - 0.5 * xp.sum(xp.log(s1)) - 0.5 * xp.sum(xp.log(s2)))
            total += math.exp(-(first + 0.5 * second))
    return -total
