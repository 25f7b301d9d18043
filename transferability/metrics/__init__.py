"""Transferability metrics, one module each; importing this package registers them all."""

from __future__ import annotations

from transferability.metrics import (  # noqa: F401
    fu,
    gbc,
    hscore,
    knn,
    leep,
    logme,
    ncti,
    parc,
    sfda,
    transrate,
)
from transferability.metrics.base import (
    METRICS,
    MetricSpec,
    TransferMetric,
    register_combined,
    register_metric,
)

__all__ = ["METRICS", "MetricSpec", "TransferMetric", "register_combined", "register_metric"]
