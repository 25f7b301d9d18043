"""LEEP, NCE and N-LEEP: metrics built on an empirical conditional P(y | z) over "source labels" z.

- LEEP (Nguyen et al., ICML 2020): z = the source model's classes, P(z | x) = softmax(logits);
  score = mean_i log sum_z P(y_i | z) P(z | x_i).
- NCE (Tran et al., ICCV 2019): z = argmax of the logits (hard source label); score = -H(Y | Z)
  of the empirical joint distribution.
- N-LEEP (Li et al., CVPR 2021): z = components of a Gaussian mixture (5 C components) fitted to
  the features after PCA keeping 80% of the variance; score = mean_i P(y_i | x_i) (no log, as in
  the authors' code). The authors' mixture is unseeded; here it is fitted with a fixed seed on
  the rows in a canonical order, so the score does not depend on the order of the samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medbench.errors import InputError
from transferability._backend import get_backend
from transferability._validate import as_logits, canonical_order, prepare, require_spread
from transferability.metrics._linalg import pca, softmax
from transferability.metrics.base import register_metric


def _eep(theta: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """Expected empirical prediction P(y | x_i) = sum_z P(y | z) theta_i(z), shape (N, C)."""
    n = theta.shape[0]
    onehot = (y[:, None] == np.arange(c)[None, :]).astype(np.float64)
    joint = onehot.T @ theta / n  # P(y, z), (C, Z)
    pz = joint.sum(axis=0, keepdims=True)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    return theta @ cond.T


@register_metric("leep", needs_logits=True, reference="Nguyen et al., LEEP, ICML 2020")
def leep(features: Any, labels: Any, *, logits: Any = None) -> float:
    """LEEP: mean log expected empirical prediction of the true label (higher is better).

    Args:
        features: (N, D) features (only their row count is used).
        labels: (N,) integer labels in [0, C).
        logits: (N, Z) source-model logits on the target data (required).
    """
    x, y, c = prepare(features, labels)
    theta = softmax(get_backend("numpy"), as_logits(logits, x.shape[0], "leep"))
    eep = _eep(theta, y, c)
    return float(np.mean(np.log(eep[np.arange(len(y)), y])))


@register_metric("nce", needs_logits=True, reference="Tran et al., NCE, ICCV 2019")
def nce(features: Any, labels: Any, *, logits: Any = None) -> float:
    """Negative conditional entropy -H(Y | Z) with Z the argmax source label (higher is better)."""
    x, y, c = prepare(features, labels)
    z = np.argmax(as_logits(logits, x.shape[0], "nce"), axis=1)
    n_z = int(z.max()) + 1
    joint = np.zeros((c, n_z))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    pz = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    ratio = np.divide(joint, np.broadcast_to(pz, joint.shape), out=np.ones_like(joint), where=nz)
    return float(np.sum(joint[nz] * np.log(ratio[nz])))


@register_metric("nleep", reference="Li et al., N-LEEP, CVPR 2021")
def nleep(features: Any, labels: Any, *, logits: Any = None, component_ratio: int = 5,
          variance: float = 0.8, seed: int = 0) -> float:
    """N-LEEP: mean P(y_i | x_i) through a seeded Gaussian mixture on PCA(80% variance) features.

    Args:
        features: (N, D) source features.
        labels: (N,) integer labels in [0, C).
        logits: Unused.
        component_ratio: Mixture components per class (5).
        variance: Fraction of variance the PCA keeps (0.8).
        seed: Seed of the mixture's initialisation (the reference leaves it unseeded).
    """
    from sklearn.mixture import GaussianMixture

    x, y, c = prepare(features, labels)
    require_spread(x, "nleep")
    k = component_ratio * c
    if x.shape[0] < k:
        raise InputError(f"nleep fits {k} mixture components ({component_ratio} per class) and needs "
                         f"at least that many samples, got N={x.shape[0]}; add samples or lower component_ratio")
    order = canonical_order(x)  # fit on a canonical row order: results do not depend on input order
    x, y = x[order], y[order]
    xp, _ = pca(get_backend("numpy"), x, float(variance))  # = sklearn PCA(n_components=variance)
    gmm = GaussianMixture(n_components=k, random_state=seed).fit(xp)
    theta = gmm.predict_proba(xp)
    eep = _eep(theta, y, c)
    return float(np.mean(eep[np.arange(len(y)), y]))
