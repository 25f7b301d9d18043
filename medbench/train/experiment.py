"""A whole supervised experiment from a table of images: join labels, split by patient, fine-tune a
source, predict the test split, evaluate. Used by ``medbench train`` and ``medbench demo``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medbench.data.splits import train_val_test
from medbench.errors import InputError
from medbench.runs import check_settings, restart_run
from medbench.train.config import TrainConfig
from medbench.train.engine import FitResult, fit
from medbench.utils.files import atomic_path, hash_id, write_json_atomic

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
META_KEEP = ("patient_hash", "sex", "age", "vendor")
CACHE_LIMIT_BYTES = 2 * 1024**3


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a manifest/label table (.parquet or .csv; a folder means its manifest.parquet or labels.csv).

    Relative ``path`` entries are taken relative to the table's folder.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("manifest.parquet", "labels.csv"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise InputError(f"{path} holds neither manifest.parquet nor labels.csv: pass the table file")
    if not p.is_file():
        raise InputError(f"table {path} does not exist: pass RUN_DIR/manifest.parquet or labels.csv")
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    elif p.suffix in (".csv", ".tsv"):
        df = pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",")
    else:
        raise InputError(f"table {p} must be .parquet or .csv")
    if "path" in df.columns:
        base = p.parent
        df["path"] = [str(q) if Path(str(q)).is_absolute() else str((base / str(q)).resolve()) for q in df["path"]]
    return df


def join_labels(table: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Inner-join a label table onto a manifest on ``path``, else ``sop_uid``, else ``uid``.

    Raises:
        InputError: no shared key column, or no row matches.
    """
    for key in ("path", "sop_uid", "uid"):
        if key in table.columns and key in labels.columns:
            left = table.assign(_k=table[key].astype(str))
            right = labels.assign(_k=labels[key].astype(str)).drop(columns=[key])
            if key == "path":
                left["_k"] = [str(Path(q).resolve()) for q in left["_k"]]
                right["_k"] = [str(Path(q).resolve()) for q in right["_k"]]
            joined = left.merge(right, on="_k", how="inner", suffixes=("", "_labels")).drop(columns="_k")
            if len(joined):
                dropped = len(table) - len(joined)
                if dropped:
                    logger.warning("%d manifest rows have no label (joined on %s) and are left out", dropped, key)
                return joined
    raise InputError(
        "cannot join the label table onto the manifest: they share no matching path, sop_uid or uid "
        f"values (manifest columns {list(table.columns)[:8]}..., labels columns {list(labels.columns)})"
    )


def prepare_table(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """Check the label column and add ``uid``, ``patient_hash`` and ``vendor`` where missing."""
    if "path" not in table.columns:
        raise InputError("the table has no `path` column: pass a manifest from `medbench ingest` or labels.csv")
    if label not in table.columns:
        raise InputError(f"label column {label!r} is not in the table (columns: {list(table.columns)}); "
                         "pass --label COLUMN or join a label table with --labels CSV")
    df = table.copy()
    if df[label].isna().any():
        n = int(df[label].isna().sum())
        logger.warning("%d rows have no %r label and are left out", n, label)
        df = df[df[label].notna()]
    values = pd.to_numeric(df[label], errors="coerce")
    if values.isna().any() or (values % 1 != 0).any() or (values < 0).any():
        raise InputError(f"label column {label!r} must hold class ids 0, 1, ... (found {df[label].unique()[:5]})")
    df[label] = values.astype("int64")
    if "uid" not in df.columns:
        df["uid"] = df["sop_uid"].astype(str) if "sop_uid" in df.columns else df["path"].astype(str)
    if "patient_hash" not in df.columns:
        if "patient_id" in df.columns:
            df["patient_hash"] = [hash_id(v) for v in df["patient_id"]]
        else:
            logger.warning("no patient_id/patient_hash column: splitting by image, not by patient")
            df["patient_hash"] = [hash_id(v) for v in df["uid"]]
    if "vendor" not in df.columns and "manufacturer" in df.columns:
        df["vendor"] = df["manufacturer"]
    return df.reset_index(drop=True)


def assign_splits(
    df: pd.DataFrame, *, split_column: str | None = None, val_frac: float = 0.15,
    test_frac: float = 0.2, seed: int = 0,
) -> pd.Series:
    """"train"/"val"/"test" per row: from ``split_column``, else patient-grouped from medbench.data.splits."""
    if split_column:
        if split_column not in df.columns:
            raise InputError(f"split column {split_column!r} is not in the table (columns: {list(df.columns)})")
        s = df[split_column].astype(str).str.lower().replace({"valid": "val", "validation": "val"})
        bad = sorted(set(s) - set(SPLITS))
        if bad:
            raise InputError(f"split column {split_column!r} has values {bad}: use train/val/test")
        return s
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise InputError(f"--val-frac {val_frac} and --test-frac {test_frac} must be in (0, 1) and sum below 1")
    return pd.Series(
        np.asarray(train_val_test(df, group="patient_hash", val=val_frac, test=test_frac, seed=seed)),
        index=df.index, name="split",
    )


@dataclass
class ExperimentResult:
    """Outcome of :func:`run_experiment`."""

    out_dir: Path
    fit: FitResult
    metrics: dict[str, Any]
    report: Path | None


#: What ``run_experiment`` writes into its folder (removed by ``restart``).
RUN_OUTPUTS = ["finished.json", "checkpoints", "config.yaml", "splits.csv", "history.csv", "summary.json", "train.log",
               "predictions.parquet", "predictions.csv", "metrics.json", "report.html", "figures"]


def run_experiment(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    label: str = "label",
    source: str = "random",
    arch: str | None = None,
    size: int = 224,
    cfg: TrainConfig | None = None,
    split_column: str | None = None,
    val_frac: float = 0.15,
    test_frac: float = 0.2,
    drop_rate: float = 0.0,
    weights: str | None = None,
    title: str | None = None,
    restart: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    train_transform: Any = None,
    window: Any = None,
    pad: bool = False,
) -> ExperimentResult:
    """Split ``table``, fine-tune ``source`` on it, predict the test split and write metrics.json.

    Args:
        table: Rows with ``path`` and the ``label`` column (see :func:`prepare_table`).
        out_dir: The run folder (resumed when it holds a run).
        label: Label column (class ids).
        source: A name in ``medbench.sources`` ("random", "imagenet", "efficientnet-lite0-imagenet", ...).
        arch: Architecture for sources that take one.
        size: Images are resized to ``size`` x ``size``.
        cfg: Engine settings (default :class:`TrainConfig`).
        split_column: Use this column's train/val/test instead of a patient-grouped split.
        val_frac: Validation share of patients.
        test_frac: Test share of patients.
        drop_rate: Dropout before the head.
        weights: Local weights file for sources that need one.
        title: Report title.
        on_epoch: Called with each epoch's history row (experiment trackers).
        train_transform: Augmentation of the training split only: a ``(C, H, W)`` tensor callable
            or an Albumentations transform (see :mod:`medbench.data.augment`).
        window: Grey-level window of :func:`medbench.io.images.read_image`: None = each DICOM's
            VOI window (rasters by bit depth), "minmax", "bits", ``(center, width)`` or "C,W".
        pad: Resize keeping the aspect ratio (black padding) instead of stretching.
        restart: Discard a previous run in ``out_dir`` (its own outputs) instead of refusing when
            its settings differ.

    Raises:
        InputError: ``out_dir`` holds a run with other settings (every change is listed) and
            ``restart`` is False.
    """
    import torch

    from medbench.data.dataset import ImageDataset
    from medbench.io.images import parse_window
    from medbench.sources import create_source
    from medbench.train import dist

    cfg = cfg or TrainConfig()
    window = parse_window(window)
    dist.init_from_env(cfg.device)  # under torchrun: every rank builds the same splits, rank 0 writes
    out = Path(out_dir)
    settings = {"train": cfg.settings(), "data": {
        "label": label, "source": source, "arch": arch, "size": size, "split_column": split_column,
        "val_frac": val_frac, "test_frac": test_frac, "drop_rate": drop_rate,
        "weights": str(weights) if weights is not None else None, "n_rows": len(table),
        "train_transform": repr(train_transform) if train_transform is not None else None,
        "window": list(window) if isinstance(window, tuple) else (window or "auto"), "pad": bool(pad)}}
    df = prepare_table(table, label)
    present = sorted(int(v) for v in df[label].unique())
    if len(present) < 2:  # checked before any training, not when the AUC is computed at the end
        raise InputError(f"label column {label!r} holds only class {present or '(none)'}: AUC is undefined and "
                         "training would learn nothing; pass a table with at least two classes")
    if dist.is_main():
        if restart:
            restart_run(out, RUN_OUTPUTS)
        check_settings(out, settings)  # refuses, before any work, a folder computed otherwise
    dist.barrier()
    df["split"] = assign_splits(df, split_column=split_column, val_frac=val_frac, test_frac=test_frac,
                                seed=cfg.seed).to_numpy()
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        _save_splits(df, out)
    dist.barrier()
    counts = df["split"].value_counts().to_dict()
    if not counts.get("train") or not counts.get("test"):
        raise InputError(f"split sizes {counts}: train and test must not be empty (more images, or other fractions)")
    keep = [c for c in META_KEEP if c in df.columns]
    cache = len(df) * size * size * 4 < CACHE_LIMIT_BYTES  # decode each file once, not every epoch
    from medbench.data.augment import as_transform

    aug = as_transform(train_transform)
    ds = {s: ImageDataset(df[df["split"] == s], label_column=label, size=size, channels=1, cache=cache,
                          transform=aug if s == "train" else None, window=window, pad=pad)
          for s in SPLITS}
    n_classes = max(2, int(df[label].max()) + 1)
    torch.manual_seed(cfg.seed)  # reproducible random initialisation of the new head/backbone
    model = create_source(source, arch=arch, num_classes=n_classes, in_chans=1, drop_rate=drop_rate, weights=weights)
    info = {"source": source, "arch": arch or model.card.arch, "size": size, "label": label,
            "n_classes": n_classes, "splits": {k: int(v) for k, v in counts.items()}}
    logger.info("training %s (%s) on %s", source, info["arch"], info["splits"])
    before = _stamp(out / "predictions.parquet")
    res = fit(model, ds["train"], ds["val"] if counts.get("val") else None, cfg, out,
              test_ds=ds["test"], keep_meta=keep, run_info=info, on_epoch=on_epoch)
    pred = res.predictions.assign(source=source)
    metrics: dict[str, Any] = {}
    report: Path | None = None
    if dist.is_main():
        finished = _finished_evaluation(out, before)
        if finished is not None:  # a finished run re-run: its predictions are unchanged, reuse the report
            logger.info("%s: finished run; reusing metrics.json and report.html", out)
            metrics, report = finished
        else:
            metrics, report = evaluate_run(pred, out, title=title or f"medbench train: {source}",
                                           history=res.history, config=settings,
                                           examples=_examples(ds["test"], pred))
    dist.barrier()
    return ExperimentResult(out, res, metrics, report)


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


def _finished_evaluation(out: Path, predictions_before: int | None) -> tuple[dict[str, Any], Path | None] | None:
    """metrics.json and report of an earlier evaluation, when ``fit`` left the predictions untouched."""
    import json

    pred, metrics = out / "predictions.parquet", out / "metrics.json"
    if predictions_before is None or _stamp(pred) != predictions_before or not metrics.is_file():
        return None
    if metrics.stat().st_mtime_ns < predictions_before:
        return None
    report = out / "report.html"
    try:
        data = json.loads(metrics.read_text())
    except json.JSONDecodeError:
        return None
    if "per_source" in data and not report.is_file():  # a binary task's report went missing: rebuild it
        return None
    return data, (report if report.is_file() else None)


def _save_splits(df: pd.DataFrame, out: Path) -> None:
    path = out / "splits.csv"
    cols = ["uid", "patient_hash", "split"]
    if path.exists():
        old = pd.read_csv(path, dtype=str)
        if old["uid"].tolist() != df["uid"].astype(str).tolist() or old["split"].tolist() != df["split"].tolist():
            raise InputError(f"{out} holds a run on other data or splits; use a new --out folder")
        return
    with atomic_path(path) as tmp:
        df[cols].to_csv(tmp, index=False)


def _examples(ds: Any, pred: pd.DataFrame, *, per_class: int = 4) -> list[tuple[np.ndarray, str]]:
    """Up to ``per_class`` test images per class, spread over the predicted-probability range."""
    meta = ds.meta
    if "prob" not in pred.columns or "uid" not in pred.columns or "uid" not in meta.columns or len(ds) == 0:
        return []
    where = {str(u): i for i, u in enumerate(meta["uid"])}
    test = pred[(pred["split"] == "test") & pred["uid"].astype(str).isin(where)].sort_values("prob")
    out = []
    for lab, part in test.groupby("label", sort=True):
        pick = np.unique(np.linspace(0, len(part) - 1, min(per_class, len(part))).round().astype(int))
        for r in part.iloc[pick].itertuples():
            img = ds.load(where[str(r.uid)]).numpy()
            out.append((img[0] if img.ndim == 3 else img, f"label {int(lab)}, prob {float(r.prob):.3f}"))
    return out


def evaluate_run(pred: pd.DataFrame, out: Path, *, title: str, history: pd.DataFrame | None = None,
                 config: dict[str, Any] | None = None,
                 examples: list[tuple[np.ndarray, str]] | None = None) -> tuple[dict[str, Any], Path | None]:
    """metrics.json (+ report.html for binary tasks, with training curves, examples and config) from a
    predictions table's test rows."""
    import json

    test = pred[pred["split"] == "test"]
    if "prob" in pred.columns:
        from medbench.eval.evaluate import write_evaluation

        report = write_evaluation(pred, out, title=title, split="test", history=history, config=config,
                                  examples=examples)
        return json.loads((out / "metrics.json").read_text()), report
    from medbench.eval.metrics import auc

    probs = test[[c for c in test.columns if c.startswith("prob_")]].to_numpy()
    metrics = {"split": "test", "n": len(test), "accuracy": float((test["pred"] == test["label"]).mean()),
               "auc_macro_ovr": auc(test["label"].to_numpy(), probs)}
    write_json_atomic(out / "metrics.json", metrics)
    return metrics, None
