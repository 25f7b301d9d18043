"""Notebook API: medbench's results as pandas tables, no file parsing needed.

Example:
    >>> from medbench import api
    >>> api.load_manifest("runs/ingest")                 # doctest: +SKIP
    >>> api.audit_summary("runs/audit")                  # doctest: +SKIP
    >>> api.transfer_scores("runs/transfer", wide=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from medbench.errors import InputError


def _run(path: str | os.PathLike[str], wanted: str, command: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if (p / wanted).is_file():
        return p / wanted
    raise InputError(f"{p}: no {wanted}; pass the folder of a finished `medbench {command}` run")


def _prevalence(df: pd.DataFrame) -> pd.DataFrame:
    """An audit table with the confounder strength named ``prevalence`` (tables written before the
    rename call it ``p``, which read like a p-value)."""
    if "p" in df.columns and "prevalence" not in df.columns:
        return df.rename(columns={"p": "prevalence"})
    return df


def load_manifest(run: str | os.PathLike[str], *, quarantine: bool = False) -> pd.DataFrame:
    """The manifest (or with ``quarantine=True`` the quarantine table) of a ``medbench ingest`` run."""
    return pd.read_parquet(_run(run, "quarantine.parquet" if quarantine else "manifest.parquet", "ingest"))


def audit_results(run: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per audit unit (source x confounder x prevalence x split) of a ``medbench audit`` run
    (``prevalence``: the confounder strength p; older runs' ``p`` column is renamed)."""
    return _prevalence(pd.read_csv(_run(run, "results.csv", "audit")))


def audit_summary(run: str | os.PathLike[str]) -> pd.DataFrame:
    """Per (source, confounder, prevalence): IID/OOD/clean AUC and gap, as ``medbench audit`` prints it."""
    return _prevalence(pd.read_csv(_run(run, "summary.csv", "audit")))


def audit_comparisons(run: str | os.PathLike[str]) -> pd.DataFrame:
    """The source comparisons of a ``medbench audit`` run (``p_perm``, ``p_paired``: p-values;
    ``prevalence``: the confounder strength)."""
    return _prevalence(pd.read_csv(_run(run, "comparisons.csv", "audit")))


def transfer_scores(run: str | os.PathLike[str], *, wide: bool = False) -> pd.DataFrame:
    """Transferability scores of a ``medbench transfer`` run: long (source, metric, score, ...)
    or ``wide=True`` (one row per source, one column per metric, plus ``auc`` when fine-tuned)."""
    return pd.read_csv(_run(run, "table.csv" if wide else "scores.csv", "transfer"))


def train_metrics(run: str | os.PathLike[str]) -> dict[str, Any]:
    """metrics.json of a ``medbench train`` run."""
    return json.loads(_run(run, "metrics.json", "train").read_text())


def train_history(run: str | os.PathLike[str]) -> pd.DataFrame:
    """history.csv of a ``medbench train`` run (one row per epoch)."""
    return pd.read_csv(_run(run, "history.csv", "train"))


def predictions(run: str | os.PathLike[str]) -> pd.DataFrame:
    """predictions.parquet of a ``medbench train`` run."""
    return pd.read_parquet(_run(run, "predictions.parquet", "train"))
