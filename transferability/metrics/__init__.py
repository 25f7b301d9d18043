"""Transferability metrics, one module each; importing this package registers them all."""

from __future__ import annotations

from transferability.metrics import gbc, hscore, knn, leep, logme, ncti, parc, sfda, transrate  # noqa: F401
from transferability.metrics.base import METRICS, MetricSpec, register_metric

__all__ = ["METRICS", "MetricSpec", "register_metric"]
