"""Input checks and array conversion shared by every transferability metric.

Every metric takes ``features`` (N, D), integer ``labels`` in ``[0, C)`` and optionally source
``logits`` (N, Z), as numpy arrays or torch tensors. These helpers copy them to float64 (so a
metric can never mutate its caller's arrays), check shapes and values, and raise
:class:`medbench.errors.InputError` naming the argument and the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medbench.errors import InputError

BACKENDS = ("numpy", "torch")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy().copy()
    try:
        return np.array(x, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from exc


def as_features(features: Any, name: str = "features") -> np.ndarray:
    """Return a float64 copy of a 2-D feature matrix, rejecting NaN/inf and wrong ranks."""
    x = _to_numpy(features, name)
    if x.ndim != 2:
        raise InputError(f"{name} must be 2-D (N samples, D dims), got shape {x.shape}; "
                         "flatten or pool the features first")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {x.shape}); pass at least one sample and one dim")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or inf values; drop or impute those samples first")
    return x


def as_labels(labels: Any, n: int, name: str = "labels") -> tuple[np.ndarray, int]:
    """Return ``(labels int64 copy, C)``; labels must be integers covering every class of [0, C)."""
    if isinstance(labels, torch.Tensor):
        raw = labels.detach().cpu().numpy()
    else:
        raw = np.asarray(labels)
    if raw.ndim != 1:
        raise InputError(f"{name} must be 1-D (N,), got shape {raw.shape}; pass class indices, not one-hot")
    if raw.shape[0] != n:
        raise InputError(f"{name} has {raw.shape[0]} entries but features have {n} rows; "
                         "pass one label per feature row")
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise InputError(f"{name} must be integer class indices in [0, C); got non-integer values")
    elif raw.dtype.kind not in "iub":
        raise InputError(f"{name} must be integer class indices in [0, C), got dtype {raw.dtype}")
    y = raw.astype(np.int64).copy()
    if y.min() < 0:
        raise InputError(f"{name} must be in [0, C); found {int(y.min())}: map classes to 0..C-1")
    c = int(y.max()) + 1
    counts = np.bincount(y, minlength=c)
    if c < 2:
        raise InputError(f"{name} contain a single class; transferability needs at least 2 classes")
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0).tolist()
        raise InputError(f"{name} must cover every class of [0, {c}); classes {missing} are absent: "
                         "re-index labels to 0..C-1 (e.g. np.unique(labels, return_inverse=True))")
    if n < c:
        raise InputError(f"need at least as many samples as classes (N={n} < C={c}); add samples")
    return y, c


def as_logits(logits: Any, n: int, metric: str, name: str = "logits") -> np.ndarray:
    """Return a float64 copy of source logits (N, Z); ``None`` raises naming the metric."""
    if logits is None:
        raise InputError(f"{metric} needs the source model's logits: pass logits=(N, Z) array "
                         "(create the source with num_classes=None to keep its head)")
    z = as_features(logits, name)
    if z.shape[0] != n:
        raise InputError(f"{name} has {z.shape[0]} rows but features have {n}; pass one row per sample")
    return z


def check_backend(backend: str) -> str:
    """Validate a backend name."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def prepare(features: Any, labels: Any, *, min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate ``features`` and ``labels`` together; returns ``(X, y, C)``."""
    x = as_features(features)
    y, c = as_labels(labels, x.shape[0])
    if min_per_class > 1:
        counts = np.bincount(y, minlength=c)
        if counts.min() < min_per_class:
            raise InputError(f"labels: every class needs at least {min_per_class} samples for this "
                             f"metric, class {int(counts.argmin())} has {int(counts.min())}; add samples")
    return x, y, c


def require_spread(x: np.ndarray, metric: str) -> None:
    """Raise when every feature is constant: ``metric`` would divide a zero scatter by itself."""
    if not np.any(np.ptp(x, axis=0) > 0):
        raise InputError(f"{metric}: every feature is constant across the samples, so the score is "
                         "undefined; check the feature extraction (a dead or frozen layer?)")


def canonical_order(x: np.ndarray) -> np.ndarray:
    """A permutation that sorts rows by a fixed random projection (ties by the first column).

    Metrics with order-dependent steps (mixture initialisation, CV folds) fit on rows in this
    order, so their result does not depend on the order the caller passed the samples in.
    """
    v = np.random.default_rng(20240601).standard_normal(x.shape[1])
    return np.lexsort((x[:, 0], x @ v))
