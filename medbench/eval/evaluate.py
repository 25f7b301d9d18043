"""Turn a predictions table into metrics, subgroup tables and a report.

A predictions table has one row per image: ``uid``, ``split``, ``label``, ``prob`` (positive-class
probability), optionally ``source`` (several models in one table), ``patient_id`` /
``patient_hash`` (for patient-level bootstrap) and metadata columns (``sex``, ``vendor``, ``age``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medbench.errors import InputError
from medbench.eval import figures
from medbench.eval.doubts import auc_doubts
from medbench.eval.metrics import (
    age_band,
    bootstrap_auc_ci,
    ece,
    format_p,
    paired_bootstrap_test,
    reliability_curve,
    subgroup_auc,
)
from medbench.eval.report import HtmlReport
from medbench.utils.files import atomic_path, write_json_atomic

SUBGROUP_COLUMNS = ("sex", "vendor", "age_band")


def _group_column(df: pd.DataFrame) -> str | None:
    for col in ("patient_hash", "patient_id"):
        if col in df.columns and df[col].notna().all():
            return col
    return None


def evaluate_predictions(
    pred: pd.DataFrame,
    *,
    split: str | None = "test",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics per source (AUC + patient bootstrap CI, ECE), subgroup tables and pairwise tests.

    Returns:
        ``{"per_source": DataFrame, "subgroups": {column: DataFrame}, "pairwise": DataFrame,
        "reliability": {source: DataFrame}}``.
    """
    return _evaluate_frame(_select(pred, split), n_boot=n_boot, seed=seed)


def _select(pred: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """The rows of ``split`` with a ``source`` (default "model") and, from ``age``, an ``age_band``."""
    for col in ("label", "prob"):
        if col not in pred.columns:
            raise InputError(f"predictions table lacks column {col!r}; it has {list(pred.columns)}")
    df = pred.copy()
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
    if df.empty:
        raise InputError(f"no predictions for split {split!r}")
    if "source" not in df.columns:
        df["source"] = "model"
    if "age" in df.columns and "age_band" not in df.columns:
        df["age_band"] = age_band(df["age"])
    return df


def _evaluate_frame(df: pd.DataFrame, *, n_boot: int, seed: int) -> dict[str, Any]:
    gcol = _group_column(df)
    rows, rel, subgroups = [], {}, {}
    for source, part in df.groupby("source", sort=False):
        y, p = part["label"].to_numpy().astype(int), part["prob"].to_numpy()
        ci = bootstrap_auc_ci(y, p, groups=None if gcol is None else part[gcol].to_numpy(),
                              n_boot=n_boot, seed=seed)
        rows.append({"source": source, "n": len(part), "n_pos": int(y.sum()), "auc": ci.auc,
                     "lo": ci.lo, "hi": ci.hi, "ece": ece(y, p), "ci_resampled_by": ci.resampled_by})
        rel[source] = reliability_curve(y, p)
    for col in SUBGROUP_COLUMNS:
        if col in df.columns:
            tabs = [subgroup_auc(part, col, groups=gcol, n_boot=min(n_boot, 300), seed=seed).assign(source=s)
                    for s, part in df.groupby("source", sort=False)]
            subgroups[col] = pd.concat(tabs, ignore_index=True)
    pairs = []
    sources = list(df["source"].unique())
    if len(sources) > 1:
        wide = df.pivot_table(index="uid", columns="source", values="prob")
        first = df.drop_duplicates("uid").set_index("uid").loc[wide.index]
        for a, b in itertools.combinations(sources, 2):
            ok = wide[[a, b]].notna().all(axis=1).to_numpy()
            res = paired_bootstrap_test(first["label"].to_numpy()[ok].astype(int), wide[a].to_numpy()[ok],
                                        wide[b].to_numpy()[ok], n_boot=n_boot, seed=seed,
                                        groups=None if gcol is None else first[gcol].to_numpy()[ok])
            pairs.append({"a": a, "b": b, **res})
    return {"per_source": pd.DataFrame(rows), "subgroups": subgroups, "pairwise": pd.DataFrame(pairs),
            "reliability": rel}


def write_evaluation(pred: pd.DataFrame, out_dir: str | Path, *, title: str = "medbench report",
                     split: str | None = "test", n_boot: int = 1000, seed: int = 0,
                     notes: list[str] | None = None, history: pd.DataFrame | None = None,
                     config: Mapping[str, Any] | str | None = None,
                     examples: Sequence[tuple[np.ndarray, str]] | None = None) -> Path:
    """Evaluate ``pred`` and write ``metrics.json``, CSV tables and ``report.html`` into ``out_dir``.

    Args:
        history: Per-epoch rows (``history.csv``) drawn as training curves.
        config: The run's settings (a mapping, or YAML text such as a run's config.yaml), shown as YAML.
        examples: ``(image, caption)`` pairs shown as a grid (e.g. test images with their probability).
    """
    out = Path(out_dir)
    df = _select(pred, split)
    res = _evaluate_frame(df, n_boot=n_boot, seed=seed)
    per, pairwise = res["per_source"], res["pairwise"]
    metrics = {"split": split, "per_source": per.to_dict(orient="records"),
               "pairwise": pairwise.to_dict(orient="records"),
               "subgroups": {k: v.to_dict(orient="records") for k, v in res["subgroups"].items()}}
    write_json_atomic(out / "metrics.json", _clean(metrics))
    for name, table in [("metrics_per_source", per), ("pairwise_tests", pairwise),
                        *[(f"subgroup_{k}", v) for k, v in res["subgroups"].items()]]:
        with atomic_path(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
    rep = HtmlReport(title, subtitle=f"{len(df)} {split or 'all'} predictions, {len(per)} source(s)")
    rep.heading("Summary")
    best = per.sort_values("auc", ascending=False).iloc[0]
    rep.text(f"Best source: {best['source']} with AUC {best['auc']:.3f} "
             f"(95% CI {best['lo']:.3f}-{best['hi']:.3f}, bootstrap by {best['ci_resampled_by']}).")
    doubts = [w for r in per.itertuples() for w in auc_doubts(
        str(r.source) if len(per) > 1 else "The model", r.auc, r.lo, r.hi, n_pos=r.n_pos, n_neg=r.n - r.n_pos)]
    rep.warning(doubts)
    for note in notes or []:
        rep.text(note, css_class="note")
    rep.table(per, caption="AUC with percentile bootstrap CI; ECE with 10 bins")
    if len(per) > 1:
        rep.figure(figures.auc_bar_figure(per), caption="AUC per source")
    if not pairwise.empty:
        shown = pairwise.assign(p_value=[format_p(p, m) for p, m in zip(pairwise["p_value"], pairwise["p_min"])])
        rep.heading("Paired comparison").table(
            shown, caption=f"Paired bootstrap of AUC(a) - AUC(b), {n_boot} resamples; p = 2(k+1)/(B+1), "
            "so it never reads 0: '< p_min' means no resample crossed zero")
    curves = {s: (p["label"].to_numpy().astype(int), p["prob"].to_numpy()) for s, p in df.groupby("source", sort=False)}
    rep.heading("ROC curves").figure(figures.roc_figure(curves))
    rep.heading("Calibration").figure(figures.reliability_figure(res["reliability"]),
                                      caption="Top: observed positive rate per probability bin (n = images in "
                                      "the bin); bottom: images per bin. Few images make a bin's rate noisy.")
    for col, table in res["subgroups"].items():
        rep.heading(f"Subgroups by {col}").table(table)
    if history is not None and len(history):
        rep.heading("Training curves").figure(
            figures.training_curves_figure(history), caption="Per epoch (1 = first, as in the progress bar); "
            "the checkpoint used for the test predictions is the best by validation loss.")
    if examples:
        imgs, caps = zip(*examples)
        rep.heading("Example test images").figure(figures.examples_figure(list(imgs), list(caps)),
                                                   caption="label and predicted probability of the positive class")
    rep.config(config)
    rep.save(out / "report.html")
    return out / "report.html"


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
