"""The transferability-metric registry: one entry per metric, with what it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medbench.registry import Registry

MetricFn = Callable[..., float]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: Registry name.
        fn: ``fn(features, labels, *, logits=None, **kw) -> float``.
        needs_logits: True when the metric uses the source model's logits (LEEP, NCE).
        torch: True when ``fn`` accepts ``backend="torch"`` and ``device``.
        higher_is_better: Direction of the score.
        reference: The paper the metric follows.
    """

    name: str
    fn: MetricFn
    needs_logits: bool = False
    torch: bool = False
    higher_is_better: bool = True
    reference: str = ""

    def __call__(self, features, labels, *, logits=None, **kw) -> float:  # noqa: ANN001
        return self.fn(features, labels, logits=logits, **kw)


METRICS: Registry[MetricSpec] = Registry("transferability metric")


def register_metric(name: str, *, needs_logits: bool = False, torch: bool = False,
                    reference: str = "") -> Callable[[MetricFn], MetricFn]:
    """Decorator registering a metric function under ``name``."""

    def deco(fn: MetricFn) -> MetricFn:
        METRICS.add(name, MetricSpec(name, fn, needs_logits=needs_logits, torch=torch,
                                     reference=reference))
        return fn

    return deco
