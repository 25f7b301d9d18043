"""Plain-language reasons to doubt a result, shown in a report's warning box (``HtmlReport.warning``).

The thresholds are reporting conventions, not statistical tests: an AUC whose 95% CI reaches 0.5 is
indistinguishable from chance; a CI wider than ``MAX_CI_WIDTH`` or fewer than ``MIN_PER_CLASS``
images in a class means the test set is too small for the comparison readers usually make.
"""

from __future__ import annotations

import math

#: A 95% AUC CI wider than this cannot separate models that differ by a few points.
MAX_CI_WIDTH = 0.2
#: Fewer images than this in either class make the AUC and its bootstrap CI unstable.
MIN_PER_CLASS = 15


def auc_doubts(name: str, auc: float, lo: float, hi: float, *, n_pos: int | None = None,
               n_neg: int | None = None, role: str = "model") -> list[str]:
    """Warnings for one AUC with its 95% CI: at or below chance, CI too wide, too few per class.

    Args:
        name: What the AUC belongs to ("model", a source, "reference classifier").
        auc, lo, hi: The AUC and its 95% CI bounds.
        n_pos, n_neg: Positives and negatives in the evaluated set (when known).
        role: "model", or "reference" for a classifier that is a measuring instrument (then a
            chance-level AUC means it did not learn, and results measured with it mean nothing).
    """
    out: list[str] = []
    if not all(math.isfinite(v) for v in (auc, lo, hi)):
        return [f"{name}: AUC or its CI is undefined (one class only in the evaluated set?)."]
    if lo <= 0.5:
        where = "below" if hi < 0.5 else "at"
        what = (f"{name} did not learn: its AUC {auc:.3f} (95% CI {lo:.3f}-{hi:.3f}) is {where} chance, so "
                "results measured with it are not informative." if role == "reference" else
                f"{name} is {where} chance: AUC {auc:.3f}, 95% CI {lo:.3f}-{hi:.3f} includes or lies below 0.5.")
        out.append(what)
    if hi - lo > MAX_CI_WIDTH:
        out.append(f"{name}: the 95% CI is {hi - lo:.2f} wide (> {MAX_CI_WIDTH}); the test set is too small to "
                   "tell models apart by a few AUC points.")
    if n_pos is not None and n_neg is not None and min(n_pos, n_neg) < MIN_PER_CLASS:
        out.append(f"{name}: only {n_pos} positive and {n_neg} negative test images (< {MIN_PER_CLASS} per class); "
                   "the AUC and its CI are unstable.")
    return out
