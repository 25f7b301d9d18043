"""SFDA: Self-challenging Fisher Discriminant Analysis (Shao et al., ECCV 2022).

1. Regularised FDA: within-class scatter S_w = sum_c prior_c cov_c (biased covariances), total
   scatter S_t; shrinkage lambda = max(exp(-5 lambda_max(S_w)), 1e-10) with lambda_max from the
   authors' 3-step power iteration; both scatters are shrunk towards (trace / D) I.
   The classifier is linear in the Fisher space: scores = X (M V V^T)^T - diag(M V V^T M^T)/2 +
   log prior, with V the generalised eigenvectors of (S_b, S_w^shrunk), S_b = S_t^shrunk -
   S_w^shrunk. Since V^T S_w V = I and V is square, V V^T = (S_w^shrunk)^-1, which is what is
   computed here (a linear solve, not a generalised eigenproblem).
2. ConfMix: the probabilities are softened by a second softmax, then each sample is mixed with
   the mean of the other classes' means: x <- p(y|x) x + (1 - p(y|x)) mu_{not y}.
3. A second FDA with the same shrinkage on the mixed features; score = mean p(y_i | x_i).

Fix: the authors' code overwrites the caller's feature array during ConfMix; here it works on a
copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medbench.errors import InputError
from transferability._backend import get_backend
from transferability._validate import prepare, require_spread
from transferability.metrics._linalg import class_means, softmax
from transferability.metrics.base import register_metric


def _power_iteration(xp: Any, a: Any, steps: int = 3) -> float:
    """The reference's approximate largest eigenvalue of a symmetric matrix."""
    x = xp.sum(a, axis=1)
    y = x
    for _ in range(steps):
        t = a @ x
        y = t / xp.norm(t)
        t = a @ y
        x = t / xp.norm(t)
    return float(x @ (a @ y))


def _shrunk(xp: Any, cov: Any, shrinkage: float) -> Any:
    d = cov.shape[0]
    mu = float(xp.trace(cov)) / d
    return (1.0 - shrinkage) * cov + shrinkage * mu * xp.eye(d)


def _fda_proba(xp: Any, x: Any, y: np.ndarray, c: int,
               shrinkage: float | None) -> tuple[Any, float, Any]:
    """Fit the regularised FDA; return (p(y | x) for the fitted samples, shrinkage, class means)."""
    n = x.shape[0]
    counts = np.bincount(y, minlength=c)
    priors = counts / n
    m = class_means(xp, x, y, c)
    xc = x - m[xp.index(y)]
    sw = (xc.T @ xc) / n  # = sum_c prior_c cov_c with biased class covariances
    if shrinkage is None and not float(xp.trace(sw)) > 0:
        raise InputError("sfda: the within-class scatter is zero (constant features, or every class "
                         "a single sample / identical samples), so the discriminant is undefined; "
                         "pass features that vary within classes")
    if shrinkage is None:
        shrinkage = max(float(np.exp(-5.0 * _power_iteration(xp, sw))), 1e-10)
    # S_b = S_t^shrunk - S_w^shrunk only enters through V, and V V^T = (S_w^shrunk)^-1.
    sw_s = _shrunk(xp, sw, shrinkage)
    coef = xp.solve(sw_s, m.T).T  # M S_w^-1, (C, D)
    intercept = -0.5 * xp.sum(m * coef, axis=1) + xp.asarray(np.log(priors))
    return softmax(xp, x @ coef.T + intercept), shrinkage, m


@register_metric("sfda", torch=True, reference="Shao et al., SFDA, ECCV 2022")
def sfda(features: Any, labels: Any, *, logits: Any = None, backend: str = "numpy",
         device: Any = None) -> float:
    """SFDA score: mean p(y_i | x_i) of the regularised FDA after ConfMix (higher is better).

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        backend: "numpy" or "torch".
        device: Torch device for ``backend="torch"``.
    """
    xp = get_backend(backend, device)
    x_np, y, c = prepare(features, labels)
    require_spread(x_np, "sfda")
    x = xp.asarray(x_np)
    prob, shrinkage, means = _fda_proba(xp, x, y, c, None)
    prob = softmax(xp, prob)  # the authors' "softening" of the probabilities
    outer = (xp.sum(means, axis=0, keepdims=True) - means) / (c - 1)  # mean of the other classes' means
    yi = xp.index(y)
    p = prob[xp.index(np.arange(len(y))), yi][:, None]  # p(y_i | x_i) after softening
    mixed = p * x + (1.0 - p) * outer[yi]  # ConfMix into a new array: the inputs stay untouched
    prob2, _, _ = _fda_proba(xp, mixed, y, c, shrinkage)
    p_true = xp.to_numpy(prob2)[np.arange(len(y)), y]
    return float(np.mean(p_true))
