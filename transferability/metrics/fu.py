"""FU (gradient-based adaptability) and the paper's combined LPxFU score as registry entries.

FU reads the source model and the target images (``kind="gradient"``, see
:mod:`transferability.gradient`); LPxFU = min-max(LP) x min-max(FU) across the candidate
sources (``kind="combined"``), Juodelyte et al. 2024.
"""

from __future__ import annotations

from typing import Any

from transferability.metrics.base import register_combined, register_metric

#: Version tag of cached FU values; cached values of another recipe are recomputed.
FU_RECIPE = "pml-triplet-all-m0.05-6batches"
REFERENCE = "Juodelyte et al., On dataset transferability in medical image classification, 2024"


@register_metric("fu", kind="gradient", recipe=FU_RECIPE, reference=REFERENCE)
def fu(model: Any, images: Any, labels: Any, *, device: str = "cpu", **kwargs: Any) -> float:
    """FU of ``model`` on ``images``/``labels`` (:func:`transferability.gradient.fu`)."""
    from transferability.gradient import fu as fu_score  # torch only when FU is asked for

    return fu_score(model, images, labels, device=device, **kwargs)


def lp_x_fu(lp: dict[str, float], fu_scores: dict[str, float]) -> dict[str, float]:
    """min-max(LP) x min-max(FU) across the sources (:func:`transferability.gradient.combined_score`)."""
    from transferability.gradient import combined_score

    return combined_score(lp, fu_scores)


register_combined("lp_x_fu", ("lp", "fu"), lp_x_fu, reference=REFERENCE)
