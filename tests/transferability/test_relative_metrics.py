"""The report marks as relative exactly the metrics whose spec combines across sources."""

from __future__ import annotations

from transferability.metrics import METRICS, MetricSpec
from transferability.pipeline import relative_metrics


def test_relative_metrics_come_from_the_specs() -> None:
    assert set(relative_metrics()) == {"lp_x_fu", "ncti"}
    spec = MetricSpec("tmp_rel", None, kind="combined", parts=("lp",), combine=lambda lp: lp)
    with METRICS.temporary("tmp_rel", spec):
        assert "tmp_rel" in relative_metrics()
    assert "tmp_rel" not in relative_metrics()
