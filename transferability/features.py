"""Feature-based transferability metrics: the registry, the metric functions and a factory.

Every metric is a pure function ``metric(features, labels, *, logits=None, **kw) -> float`` on
numpy arrays or tensors (float64 inside, deterministic, inputs never mutated). Higher is better
for all of them. The heavy ones (logme, hscore, reg_hscore, sfda, transrate, gbc, parc) take
``backend="numpy"|"torch"`` and ``device``.

Example:
    >>> from transferability.features import compute_metrics
    >>> scores = compute_metrics(X, y, metrics=["logme", "sfda"], backend="torch", device="cuda")
"""

from __future__ import annotations

import logging
import math
from typing import Any

from medbench.errors import InputError
from transferability.metrics import METRICS, MetricSpec, register_metric
from transferability.metrics.gbc import gbc
from transferability.metrics.hscore import hscore, reg_hscore
from transferability.metrics.knn import knn, lp
from transferability.metrics.leep import leep, nce, nleep
from transferability.metrics.logme import logme, logme_details, logme_evidence
from transferability.metrics.ncti import ncti, ncti_combine, ncti_components
from transferability.metrics.parc import parc
from transferability.metrics.sfda import sfda
from transferability.metrics.transrate import transrate

log = logging.getLogger(__name__)

__all__ = [
    "METRICS", "MetricSpec", "register_metric", "compute_metric", "compute_metrics", "list_metrics",
    "logme", "logme_details", "logme_evidence", "leep", "nleep", "nce", "sfda", "parc", "ncti",
    "ncti_components", "ncti_combine", "lp", "knn", "hscore", "reg_hscore", "transrate", "gbc",
]


def list_metrics(*, with_logits: bool = True, kinds: tuple[str, ...] = ("features",)) -> list[str]:
    """Registered metric names of ``kinds`` (default: the feature metrics; those needing source
    logits only when ``with_logits``). ``kinds=("features", "gradient", "combined")`` lists all."""
    return [n for n, s in METRICS.items() if s.kind in kinds and (with_logits or not s.needs_logits)]


def compute_metric(name: str, features: Any, labels: Any, *, logits: Any = None,
                   backend: str = "numpy", device: Any = None, **kwargs: Any) -> float:
    """Compute one registered metric; ``backend``/``device`` go to metrics that support torch.

    Raises:
        InputError: the metric came out NaN or infinite (degenerate input), never returned silently.
    """
    spec = METRICS.get(name)
    if spec.kind != "features":
        raise InputError(f"{name} is a {spec.kind} metric: it needs {', '.join(sorted(spec.needs))}, not "
                         "features alone; score it with `medbench transfer` (transferability.pipeline.run_transfer)")
    if spec.torch:
        kwargs.update(backend=backend, device=device)
    value = float(spec.fn(features, labels, logits=logits, **kwargs))
    if not math.isfinite(value):
        raise InputError(f"{name} is {value} for these features and labels (degenerate input: constant "
                         "or duplicated features, tiny classes?); check the features")
    return value


def compute_metrics(features: Any, labels: Any, *, metrics: list[str] | None = None,
                    logits: Any = None, backend: str = "numpy", device: Any = None) -> dict[str, float]:
    """Compute several metrics (default: all); those needing logits are skipped without them.

    Raises:
        InputError: a metric that needs logits is named explicitly but none were given.
    """
    names = list(metrics) if metrics is not None else list_metrics()
    out: dict[str, float] = {}
    for name in names:
        spec = METRICS.get(name)
        if spec.needs_logits and logits is None:
            if metrics is not None:
                raise InputError(f"metric {name!r} needs source logits: pass logits=(N, Z)")
            log.info("skipping %s: no source logits", name)
            continue
        out[name] = compute_metric(name, features, labels, logits=logits, backend=backend, device=device)
    return out
