"""The transferability-metric registry: one entry per metric, with what it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medbench.registry import Registry

MetricFn = Callable[..., float]
ShapeCheck = Callable[[int, int, int], "str | None"]


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
        shape_warning: ``check(N, D, C) -> message | None``: a message when the metric is
            degenerate for data of that shape (its value then says nothing about the features).
    """

    name: str
    fn: MetricFn
    needs_logits: bool = False
    torch: bool = False
    higher_is_better: bool = True
    reference: str = ""
    shape_warning: ShapeCheck | None = None

    def warning_for(self, n: int, d: int, c: int) -> str | None:
        """The degeneracy warning for (N, D, C) data, or None."""
        return self.shape_warning(n, d, c) if self.shape_warning is not None else None

    def __call__(self, features, labels, *, logits=None, **kw) -> float:  # noqa: ANN001
        return self.fn(features, labels, logits=logits, **kw)


METRICS: Registry[MetricSpec] = Registry("transferability metric")


def register_metric(name: str, *, needs_logits: bool = False, torch: bool = False,
                    reference: str = "", shape_warning: ShapeCheck | None = None,
                    ) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering a metric function under ``name``."""

    def deco(fn: MetricFn) -> MetricFn:
        METRICS.add(name, MetricSpec(name, fn, needs_logits=needs_logits, torch=torch,
                                     reference=reference, shape_warning=shape_warning))
        return fn

    return deco
