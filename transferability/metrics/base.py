"""The transferability-metric registry: one entry per metric, with what it needs.

Three kinds of entry (``MetricSpec.kind``), so that callers look every metric up by name and
read what it needs from its spec, never from its name:

- ``"features"``: ``fn(features, labels, *, logits=None, **kw) -> float`` on one source's
  pooled features (``needs_logits``: also the source head's logits). With ``part`` and
  ``combine`` the score is relative across the candidate sources (NCTI): ``part`` gives each
  source's terms and ``combine({source: terms}) -> {source: score}`` scores them together.
- ``"gradient"``: ``fn(model, images, labels, *, device) -> float`` on the source model itself
  (FU); ``recipe`` tags cached values, which are recomputed when it changes.
- ``"combined"``: a score across the sources from other metrics' per-source values (LPxFU):
  ``combine(*({source: value} for each name in parts)) -> {source: score}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from medbench.registry import Registry

MetricFn = Callable[..., float]
ShapeCheck = Callable[[int, int, int], "str | None"]
KINDS = ("features", "gradient", "combined")


class TransferMetric(Protocol):
    """The contract of a ``METRICS`` entry (:class:`MetricSpec` implements it)."""

    name: str
    kind: str
    needs_logits: bool
    higher_is_better: bool
    reference: str

    @property
    def needs(self) -> frozenset[str]: ...

    def warning_for(self, n: int, d: int, c: int) -> str | None: ...


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: Registry name.
        fn: The score function (signature by ``kind``, see the module docstring); None for
            ``"combined"`` metrics.
        needs_logits: True when the metric uses the source model's logits (LEEP, NCE).
        torch: True when ``fn`` accepts ``backend="torch"`` and ``device``.
        higher_is_better: Direction of the score.
        reference: The paper the metric follows.
        shape_warning: ``check(N, D, C) -> message | None``: a message when the metric is
            degenerate for data of that shape (its value then says nothing about the features).
        kind: ``"features"``, ``"gradient"`` or ``"combined"``.
        part: Features kind, relative across sources: per-source terms ``part(features, labels)``.
        parts: Combined kind: the metrics whose per-source values ``combine`` takes, in order.
        combine: Scores across the sources (see the module docstring).
        recipe: Gradient kind: version tag stored with cached values.
    """

    name: str
    fn: MetricFn | None
    needs_logits: bool = False
    torch: bool = False
    higher_is_better: bool = True
    reference: str = ""
    shape_warning: ShapeCheck | None = None
    kind: str = "features"
    part: Callable[..., Any] | None = None
    parts: tuple[str, ...] = ()
    combine: Callable[..., dict[str, float]] | None = None
    recipe: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "combined" and (not self.parts or self.combine is None):
            raise ValueError(f"combined metric {self.name!r} needs parts and combine")
        if self.kind != "combined" and self.fn is None:
            raise ValueError(f"metric {self.name!r} needs fn")
        if (self.part is None) != (self.combine is None) and self.kind == "features":
            raise ValueError(f"metric {self.name!r}: give part and combine together")

    @property
    def needs(self) -> frozenset[str]:
        """Inputs the metric reads: features, labels, logits, model, images, sources (relative across
        the candidate sources) and, for a combined metric, the metrics it combines."""
        if self.kind == "gradient":
            return frozenset({"model", "images", "labels"})
        if self.kind == "combined":
            return frozenset({"sources", *self.parts})
        extra = ({"logits"} if self.needs_logits else set()) | ({"sources"} if self.combine is not None else set())
        return frozenset({"features", "labels", *extra})

    @property
    def relative(self) -> bool:
        """True when the score ranks the candidate sources of one run only (combined across them)."""
        return self.combine is not None

    def warning_for(self, n: int, d: int, c: int) -> str | None:
        """The degeneracy warning for (N, D, C) data, or None."""
        return self.shape_warning(n, d, c) if self.shape_warning is not None else None

    def __call__(self, *args: Any, **kw: Any) -> float:
        if self.fn is None:
            raise TypeError(f"{self.name} is combined across sources: use its combine")
        return self.fn(*args, **kw)


#: The package whose import registers every built-in metric (one module each).
METRICS: Registry[MetricSpec] = Registry("transferability metric", builtins=("transferability.metrics",),
                                         protocol=TransferMetric)


def register_metric(name: str, *, needs_logits: bool = False, torch: bool = False,
                    reference: str = "", shape_warning: ShapeCheck | None = None, kind: str = "features",
                    part: Callable[..., Any] | None = None, combine: Callable[..., dict[str, float]] | None = None,
                    recipe: str = "") -> Callable[[MetricFn], MetricFn]:
    """Decorator registering a metric function under ``name`` (see :class:`MetricSpec`)."""

    def deco(fn: MetricFn) -> MetricFn:
        METRICS.add(name, MetricSpec(name, fn, needs_logits=needs_logits, torch=torch, reference=reference,
                                     shape_warning=shape_warning, kind=kind, part=part, combine=combine,
                                     recipe=recipe))
        return fn

    return deco


def register_combined(name: str, parts: tuple[str, ...], combine: Callable[..., dict[str, float]], *,
                      reference: str = "") -> MetricSpec:
    """Register a score combined across sources from the per-source values of ``parts``."""
    return METRICS.add(name, MetricSpec(name, None, kind="combined", parts=tuple(parts), combine=combine,
                                        reference=reference))
