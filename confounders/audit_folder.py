"""The audit's run folder on :func:`medbench.runs.open_run`: which settings are checked, which add
units, and what ``config.yaml`` records.

Settings fall in three groups:

* **Run settings** (:func:`run_settings`: data, seed, preset, training recipe, dropout, bootstrap
  resamples, augmentation, artifact scale) change every unit. A re-run with any of them changed is
  refused, listing every change, unless ``--restart`` discards the folder's audit outputs.
* **Unit settings** (sources, confounders, ps, splits) only name units: each unit is recorded in
  ``units/<unit>.json`` with the hash of :func:`unit_settings`, so a re-run with another p or source
  computes just the new units and reuses the others. ``results.csv``, ``summary.csv``,
  ``comparisons.csv``, ``warnings.csv``, ``metrics.json`` and ``report.html`` always describe exactly
  the units of the current config (:data:`SUMMARY_OUTPUTS` are removed before a config with other
  units is recorded, so no mix is ever left behind by a killed run).
* **Statistics and runtime settings** (``n_perm``, ``alpha``, ``keep_checkpoints``, the device) do
  not touch any unit; the tables are rebuilt with them on every run.

``config.yaml`` holds the run settings under ``settings`` and the rest under ``resolved`` (with the
list of units the tables describe).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from confounders.audit_stats import with_prevalence
from confounders.specs import is_sampled
from medbench.errors import InputError
from medbench.runs import METRICS_FILE, Run, open_run
from medbench.utils.files import atomic_path, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    from confounders.audit import AuditConfig, Unit
    from confounders.audit_data import AuditData

logger = logging.getLogger(__name__)

#: Files rebuilt from the units at the end of every run (they describe the current config's units).
SUMMARY_OUTPUTS = ("results.csv", "summary.csv", "comparisons.csv", "warnings.csv", "paper_comparison.csv",
                   "report.html", METRICS_FILE)
#: Everything the audit writes besides ``units/``, config and log (removed by ``--restart``).
AUDIT_OUTPUTS = ("runs", *SUMMARY_OUTPUTS)


def data_fingerprint(data: AuditData) -> dict[str, Any]:
    """Identity of pre-loaded data (``run_audit(data=...)``): name, image shape, hash of the table and splits."""
    h = hashlib.sha256()
    meta = data.meta[["uid", "patient_id", "label"]].astype(str)
    h.update(pd.util.hash_pandas_object(meta, index=False).to_numpy().tobytes())
    for split in data.splits:
        for key in sorted(split):
            h.update(key.encode())
            h.update(bytes(memoryview(split[key].astype("int64"))))
    return {"given": data.name, "shape": [int(s) for s in data.images.shape], "hash": h.hexdigest()[:16]}


def run_settings(cfg: AuditConfig, data: AuditData | None = None) -> dict[str, Any]:
    """The settings that change every unit (checked by ``open_run``: a change is refused)."""
    from medbench.train.config import TrainConfig

    train = TrainConfig.from_dict(cfg.train_dict()).settings()  # without device/progress (runtime only)
    train.pop("seed", None)  # units train with seed + split
    return {"data": dict(cfg.data) if data is None else data_fingerprint(data), "seed": cfg.seed,
            "preset": cfg.preset, "train": train, "drop_rate": cfg.drop_rate, "n_boot": cfg.n_boot,
            "augment": cfg.augment, "artifact_scale": cfg.artifact_scale}


def unit_settings(cfg: AuditConfig, unit: Unit) -> dict[str, Any]:
    """What decides one unit besides the run settings: its source and confounder specs, p, split and,
    where the partition depends on it, the number of patient folds (k-fold scheme, sampled confounders)."""
    kfold = cfg.data.get("scheme", "fixed-test") == "kfold" and cfg.data.get("kind", "synthetic") != "nih"
    folds = max(5, int(cfg.splits)) if kfold or is_sampled(unit.confounder) else None
    return {"source": unit.source, "confounder": unit.confounder, "p": unit.p, "split": unit.split,
            "folds": folds}


def resolved_config(cfg: AuditConfig, n_splits: int, unit_names: list[str]) -> dict[str, Any]:
    """``config.yaml``'s ``resolved`` part: the unit-naming, statistics and runtime settings, the
    splits actually run and the units the tables describe."""
    return {"sources": cfg.sources, "confounders": cfg.confounders, "ps": cfg.ps, "splits": cfg.splits,
            "splits_run": n_splits, "n_perm": cfg.n_perm, "alpha": cfg.alpha,
            "keep_checkpoints": cfg.keep_checkpoints, "device": cfg.train_dict().get("device"),
            "units": unit_names}


def record_config(run: Any, resolved: dict[str, Any]) -> None:
    """Write ``config.yaml`` for ``resolved`` (the summary files go first when it changed)."""
    run.record_resolved(resolved, SUMMARY_OUTPUTS)


@contextlib.contextmanager
def open_audit_run(out: Path, settings: dict[str, Any], *, restart: bool = False) -> Iterator[Run]:
    """``open_run`` on rank 0 (it alone writes); every rank gets a :class:`Run` to read units from,
    and a refusal on rank 0 is raised on every rank (no rank waits at a barrier for ever)."""
    from medbench.train import dist

    with contextlib.ExitStack() as stack:
        run: Run | None = None
        error: InputError | None = None
        if dist.is_main():
            try:
                run = stack.enter_context(open_run(out, "audit", settings, outputs=AUDIT_OUTPUTS, restart=restart))
            except InputError as exc:
                error = exc
        message = dist.all_gather_object(None if error is None else str(error))[0]
        if error is not None:
            raise error
        if message is not None:
            raise InputError(message)
        dist.barrier()
        yield run if run is not None else Run(out=out, workflow="audit", settings=settings, resumed=True)


def unit_dir(out_dir: str | Path, unit: Any) -> Path:
    """The unit's folder ``<out>/units/<unit uid>/``."""
    return Path(out_dir) / "units" / unit.uid


#: A unit's files in its folder; ``units/<unit>.json`` (written after them) marks it finished.
UNIT_FILES = ("sets.parquet", "predictions.parquet", "row.json")


def write_unit(folder: Path, output: Any) -> None:
    """Write ``sets.parquet``, ``predictions.parquet`` and ``row.json``, each atomically."""
    for name, df in (("sets", output.sets), ("predictions", output.predictions)):
        with atomic_path(folder / f"{name}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    write_json_atomic(folder / "row.json", output.row)


def collect_rows(out_dir: Path, unit_names: list[str]) -> pd.DataFrame:
    """The rows (``units/<unit>/row.json``) of the named units, sorted by source, confounder,
    prevalence, split (rows written before the rename carry ``p``)."""
    rows = [json.loads((Path(out_dir) / "units" / name / "row.json").read_text()) for name in unit_names]
    if not rows:
        return pd.DataFrame(columns=["unit", "source", "confounder", "prevalence", "split"])
    df = with_prevalence(pd.DataFrame(rows).drop(columns=["settings_hash"], errors="ignore"))
    return df.sort_values(["source", "confounder", "prevalence", "split"]).reset_index(drop=True)
