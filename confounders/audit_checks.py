"""Checks that say when an audit's numbers mean nothing (written into results and the report).

- A source whose clean AUC at the lowest p (where no shortcut is available) has a bootstrap CI
  that includes chance did not learn the task: its shortcut numbers are not interpretable. Without
  a clean test set (the authors' sex files) the o.o.d. AUC at p = 0 stands in: at p = 0 training
  holds no shortcut. Without CIs (``n_boot=0``) the mean AUC is compared with 0.5.
- A test set too small for its CI: a mean 95% CI wider than :data:`MAX_CI_WIDTH` cannot resolve
  the AUC differences the audit looks for.
- An artifact preset that is illegible at the working size (see :func:`legibility_warnings`).
The p-value floor check lives with the comparisons (:mod:`confounders.audit_stats`).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

#: Mean 95% CI width of an AUC above which the test set is reported as too small.
MAX_CI_WIDTH = 0.2
#: Smallest tag glyph (em height, working pixels) that still reads as a letter.
MIN_TAG_PX = 12
#: Ideal low-pass cutoffs at or above this fraction of the working size's Nyquist keep every
#: axis-aligned frequency the image holds (above sqrt(2): every frequency).
LOWPASS_NOOP = 1.0


def _task_auc(low: pd.DataFrame, p: float) -> tuple[str, str] | None:
    """``(column, label)`` of the AUC that measures the task at the lowest prevalence ``p``."""
    if "auc_clean" in low and low["auc_clean"].notna().any():
        return "auc_clean", "clean AUC"
    if p == 0 and "auc_ood" in low and low["auc_ood"].notna().any():
        return "auc_ood", "o.o.d. AUC (no shortcut in training at p = 0, no clean test set)"
    return None


def chance_warnings(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Sources (per confounder) whose clean AUC at the lowest prevalence is not above chance."""
    from confounders.audit_stats import PREVALENCE, with_prevalence

    out = []
    results = with_prevalence(results)
    if results.empty or PREVALENCE not in results:
        return out
    for (src, conf), g in results.groupby(["source", "confounder"], sort=False):
        p = float(g[PREVALENCE].min())
        low = g[g[PREVALENCE] == p]
        which = _task_auc(low, p)
        if which is None:
            continue
        col, label = which
        mean = float(low[col].mean())
        lo = float(low[f"{col}_lo"].mean()) if f"{col}_lo" in low and low[f"{col}_lo"].notna().any() else None
        if (mean if lo is None else lo) > 0.5:
            continue
        bound = "" if lo is None else f" (mean CI lower bound {lo:.2f} <= 0.5)"
        out.append({"kind": "chance", "source": src, "confounder": conf,
                    "message": f"{src} / {conf}: {label} at p = {p:g} is {mean:.2f}{bound}: {src} did not "
                               "learn the task; its shortcut numbers are not interpretable"})
    return out


def ci_width_warnings(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Sets whose mean 95% CI is wider than :data:`MAX_CI_WIDTH`."""
    out = []
    for name, label in (("iid", "i.i.d."), ("ood", "o.o.d."), ("clean", "clean")):
        lo, hi = f"auc_{name}_lo", f"auc_{name}_hi"
        if results.empty or lo not in results:
            continue
        width = float((results[hi] - results[lo]).mean())
        if width > MAX_CI_WIDTH:
            n = int(results["n_test"].median()) if "n_test" in results else -1
            out.append({"kind": "ci_width", "source": "", "confounder": "",
                        "message": f"the {label} test set ({n} images) gives 95% CIs {width:.2f} wide on "
                                   f"average (> {MAX_CI_WIDTH:g}): AUC differences below about "
                                   f"{width / 2:.2f} cannot be resolved; use a larger test set"})
    return out


def legibility_warnings(confounders: list[Any], size: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Artifacts that become illegible at the working ``size`` (the paper's are defined at 1024 px)."""
    from confounders.frequency import LowPass
    from confounders.specs import build_confounder, is_sampled, spec_label
    from confounders.tags import TextTag

    out = []
    for spec in confounders:
        if is_sampled(spec):
            continue
        conf = build_confounder(spec, seed=seed)
        label = spec_label(spec)
        factor = size / conf.ref_size
        if isinstance(conf, TextTag):
            px = conf.size * factor
            if px < MIN_TAG_PX:
                out.append({"kind": "legibility", "source": "", "confounder": label,
                            "message": f"{label}: the tag's font size {conf.size:g} px at {conf.ref_size} px "
                                       f"is {px:.1f} px at the working size {size} px, below {MIN_TAG_PX} px: "
                                       "a blob, not a letter; raise the working size (the artifact is "
                                       "still injected at native scale)"})
        elif isinstance(conf, LowPass) and conf.kind == "ideal":
            kept = conf.cutoff / factor  # the cutoff in units of the working size's Nyquist
            if kept >= LOWPASS_NOOP:
                out.append({"kind": "legibility", "source": "", "confounder": label,
                            "message": f"{label}: the cutoff ({conf.cutoff:.3f} of Nyquist at "
                                       f"{conf.ref_size} px) is {kept:.2f} of the Nyquist frequency at "
                                       f"{size} px: the filter removes "
                                       + ("nothing" if kept >= 2 ** 0.5 else "only diagonal corner frequencies")
                                       + " of the working image; raise the working size"})
    for w in out:
        logger.warning("%s", w["message"])
    return out
