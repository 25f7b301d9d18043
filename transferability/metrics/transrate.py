"""TransRate (Huang et al., ICML 2022): coding-rate reduction of the features by the labels.

R(Z) = 1/2 logdet(I + Z^T Z / (n eps)) on globally centred features Z, and
TransRate = R(Z) - (1/C) sum_c R(Z_c) with Z_c the (globally centred) rows of class c and n
its row count, eps = 1e-4, as in the authors' code. The log-determinant is taken on the smaller
of Z^T Z and Z Z^T (equal by Sylvester's identity).
"""

from __future__ import annotations

from typing import Any

from transferability._backend import get_backend
from transferability._validate import prepare
from transferability.metrics._linalg import center
from transferability.metrics.base import register_metric


def coding_rate(xp: Any, z: Any, eps: float) -> float:
    """1/2 logdet(I + Z^T Z / (n eps))."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    return 0.5 * xp.slogdet(xp.eye(gram.shape[0]) + gram / (n * eps))


@register_metric("transrate", torch=True, reference="Huang et al., TransRate, ICML 2022")
def transrate(features: Any, labels: Any, *, logits: Any = None, eps: float = 1e-4,
              backend: str = "numpy", device: Any = None) -> float:
    """TransRate score (higher is better).

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        eps: Distortion of the coding rate (1e-4).
        backend: "numpy" or "torch".
        device: Torch device for ``backend="torch"``.
    """
    xp = get_backend(backend, device)
    x_np, y, c = prepare(features, labels)
    z = center(xp, xp.asarray(x_np))
    rz = coding_rate(xp, z, eps)
    rzy = sum(coding_rate(xp, z[xp.mask(y == k)], eps) for k in range(c))
    return float(rz - rzy / c)
