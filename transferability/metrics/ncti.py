"""NCTI: Neural Collapse Transferability Index (Wang et al., ICCV 2023).

Following the authors' code: PCA to 64 dims (scikit-learn's PCA computed from the covariance
eigendecomposition, see ``_linalg.pca``); an LDA with shrinkage exp(-sum of the top-32 PCA
variances) (plain SVD LDA when that underflows below 1e-10); then three terms
- ``seli``: nuclear norm of the centred LDA features (class separation),
- ``ncc``: mean LDA probability of the true class (nearest-centre classifiability),
- ``vc``: log of the summed per-class nuclear norms of the LDA probabilities (the volume /
  within-class variability term).
The paper min-max normalises each term across the candidate models before combining them
(:func:`ncti_combine`); the terms are on very different scales (seli is in the hundreds, ncc in
[0, 1]), so only the combined score ranks models. The sign of ``vc`` follows the DovileDo code
(``transferability_scores.py``: ``seli_norm + ncc_norm + vc_norm``), which *adds* the scaled vc
term although its log prints it as "S_vc: -"; ``vc_sign=-1`` gives the subtracted variant.
The single-model :func:`ncti` is the raw seli + ncc + vc, meaningful only for comparing models
through :func:`ncti_combine` (``medbench transfer`` combines across its sources).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medbench.errors import InputError
from transferability._backend import get_backend
from transferability._validate import prepare, require_spread
from transferability.metrics._linalg import pca
from transferability.metrics.base import register_metric


def ncti_components(features: Any, labels: Any, *, pca_dims: int = 64) -> tuple[float, float, float]:
    """Return NCTI's (seli, ncc, vc) terms for one model's features."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y, c = prepare(features, labels, min_per_class=2)
    require_spread(x, "ncti")
    xp, variances = pca(get_backend("numpy"), x, pca_dims)
    temp = max(math.exp(-float(variances[:32].sum())), 1e-10)
    if temp == 1e-10:
        clf = LinearDiscriminantAnalysis(solver="svd")
    else:
        clf = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(temp))
    try:
        low = clf.fit_transform(xp, y)
    except np.linalg.LinAlgError as exc:
        raise InputError(f"ncti: the LDA on the PCA features is singular ({exc}); the features are "
                         "(nearly) degenerate: check them or use more samples") from exc
    low = low - low.mean(axis=0, keepdims=True)
    seli = float(np.linalg.norm(low, ord="nuc"))
    pred = clf.predict_proba(xp)
    ncc = float(np.mean(pred[np.arange(len(y)), y]))
    class_nuc = sum(float(np.linalg.norm(pred[y == k], ord="nuc")) for k in range(c))
    return seli, ncc, math.log(class_nuc)


def ncti_combine(components: dict[str, tuple[float, float, float]], *, vc_sign: float = 1.0,
                 ) -> dict[str, float]:
    """Combine per-model (seli, ncc, vc) as the authors do: min-max each term across the models,
    then seli + ncc + vc_sign * vc (``vc_sign`` +1 as in their code). A term constant across the
    models contributes 0 (the authors' code would give NaN there)."""
    names = list(components)
    arr = np.array([components[m] for m in names], dtype=np.float64)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = np.where(hi > lo, (arr - lo) / span, 0.0)
    return {m: float(norm[i, 0] + norm[i, 1] + vc_sign * norm[i, 2]) for i, m in enumerate(names)}


@register_metric("ncti", reference="Wang et al., NCTI, ICCV 2023", part=ncti_components, combine=ncti_combine)
def ncti(features: Any, labels: Any, *, logits: Any = None, pca_dims: int = 64) -> float:
    """Single-model raw NCTI seli + ncc + vc; rank models with :func:`ncti_combine` instead."""
    seli, ncc, vc = ncti_components(features, labels, pca_dims=pca_dims)
    return seli + ncc + vc
