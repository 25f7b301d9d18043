"""LogME (You et al., ICML 2021; fixed-point form of "Ranking and Tuning Pre-trained Models", 2021).

For each class c, a Bayesian linear regression y_c = F w + noise with prior w ~ N(0, I/alpha) and
noise N(0, 1/beta) is fitted to the one-vs-all target y_c = [labels == c] by maximising the
evidence p(y_c | F, alpha, beta) with the authors' fixed-point iteration: start at
alpha = beta = 1, at most ``max_iter`` (11) updates, stop when alpha/beta changes by at most
``tol`` (1e-3) relative. The score is the per-sample log evidence, averaged over classes.

Deviations from the authors' code, both documented fixes:
- The log-determinant sums over all D eigenvalues of alpha I + beta F^T F (the D - k zero
  eigenvalues of F^T F included, each contributing log alpha); the original ``thuml/LogME``
  code drops them when D > N.
- The evidence is evaluated at the final (alpha, beta) with the posterior mean for those values
  (so it is exactly the log marginal likelihood there); the authors reuse the mean of the previous
  step, which differs by O(tol^2).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from transferability._backend import get_backend
from transferability._validate import as_features, prepare
from transferability.metrics.base import register_metric

log = logging.getLogger(__name__)

_EPS = 1e-5  # the reference's guard in the alpha/beta updates
_RANK_TOL = 1e-10  # singular values below this are treated as zero (as in the reference)


def _spectrum(xp: Any, x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (sigma = squared singular values (k,), U^T targets (k, T)) of the feature matrix."""
    n, d = x.shape
    xt, yt = xp.asarray(x), xp.asarray(targets)
    evals, vecs = xp.eigh(xt.T @ xt if n > d else xt @ xt.T)
    s = xp.sqrt(xp.maximum(evals, 0.0))
    keep = s > _RANK_TOL
    if n > d:  # right singular vectors V: U^T targets = V^T F^T targets / s
        proj = (vecs[:, keep].T @ (xt.T @ yt)) / s[keep, None]
    else:  # left singular vectors U directly
        proj = vecs[:, keep].T @ yt
    return xp.to_numpy(s[keep] ** 2), xp.to_numpy(proj)


def _evidence_terms(sigma: np.ndarray, x2: np.ndarray, res_x2: float, t: float) -> tuple[float, float, float]:
    """gamma, |m|^2 and |y - F m|^2 for the posterior mean at alpha/beta = t."""
    gamma = float(np.sum(sigma / (sigma + t)))
    m2 = float(np.sum(sigma * x2 / (t + sigma) ** 2))
    res2 = float(np.sum(x2 / (1.0 + sigma / t) ** 2) + res_x2)
    return gamma, m2, res2


def _fixed_point(sigma: np.ndarray, x: np.ndarray, yy: float, n: int, d: int, *,
                 max_iter: int, tol: float) -> tuple[float, float, float, int]:
    """Run the evidence fixed point for one target; returns (evidence / N, alpha, beta, steps)."""
    x2 = x**2
    res_x2 = max(yy - float(np.sum(x2)), 0.0)
    alpha, beta = 1.0, 1.0
    steps = 0
    for steps in range(1, max_iter + 1):  # noqa: B007
        t = alpha / beta
        gamma, m2, res2 = _evidence_terms(sigma, x2, res_x2, t)
        alpha = gamma / (m2 + _EPS)
        beta = (n - gamma) / (res2 + _EPS)
        if abs(alpha / beta - t) / t <= tol:
            break
    _, m2, res2 = _evidence_terms(sigma, x2, res_x2, alpha / beta)
    logdet = float(np.sum(np.log(alpha + beta * sigma))) + (d - sigma.size) * math.log(alpha)
    evidence = (d / 2.0 * math.log(alpha) + n / 2.0 * math.log(beta) - 0.5 * logdet
                - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * math.log(2 * math.pi))
    return evidence / n, alpha, beta, steps


def logme_details(features: Any, labels: Any, *, backend: str = "numpy", device: Any = None,
                  max_iter: int = 11, tol: float = 1e-3) -> dict[str, np.ndarray | float]:
    """LogME with its per-class evidence, alpha, beta and number of fixed-point steps.

    Returns:
        dict with ``score`` (mean per-sample evidence), ``evidence``, ``alpha``, ``beta`` and
        ``steps`` (arrays over classes).
    """
    xp = get_backend(backend, device)
    x, y, c = prepare(features, labels)
    n, d = x.shape
    onehot = (y[:, None] == np.arange(c)[None, :]).astype(np.float64)
    sigma, proj = _spectrum(xp, x, onehot)
    out = np.array([_fixed_point(sigma, proj[:, k], float(onehot[:, k].sum()), n, d,
                                 max_iter=max_iter, tol=tol) for k in range(c)])
    return {"score": float(out[:, 0].mean()), "evidence": out[:, 0], "alpha": out[:, 1],
            "beta": out[:, 2], "steps": out[:, 3].astype(int)}


def logme_evidence(features: Any, target: Any, *, max_iter: int = 11, tol: float = 1e-3) -> tuple[float, float, float]:
    """Maximised per-sample log evidence of a real-valued target; returns (evidence/N, alpha, beta)."""
    x = as_features(features)
    t = as_features(np.asarray(target, dtype=np.float64).reshape(-1, 1), "target")
    sigma, proj = _spectrum(get_backend("numpy"), x, t)
    ev, a, b, _ = _fixed_point(sigma, proj[:, 0], float(np.sum(t**2)), x.shape[0], x.shape[1],
                               max_iter=max_iter, tol=tol)
    return ev, a, b


@register_metric("logme", torch=True, reference="You et al., LogME, ICML 2021")
def logme(features: Any, labels: Any, *, logits: Any = None, backend: str = "numpy",
          device: Any = None, max_iter: int = 11, tol: float = 1e-3) -> float:
    """LogME score: mean over classes of the per-sample maximised log evidence (higher is better).

    Args:
        features: (N, D) source features of the target data.
        labels: (N,) integer labels in [0, C).
        logits: Unused (accepted for a uniform metric signature).
        backend: "numpy" or "torch" (the eigendecomposition runs on ``device``).
        device: Torch device for ``backend="torch"``.
        max_iter: Fixed-point steps at most (11 in the reference).
        tol: Relative tolerance on alpha/beta (1e-3 in the reference).
    """
    return float(logme_details(features, labels, backend=backend, device=device,
                               max_iter=max_iter, tol=tol)["score"])
