"""A whole supervised experiment from a table of images: join labels, split by patient, fine-tune a
source, predict the test split, evaluate. Used by ``medbench train`` and ``medbench demo``.

The run folder is a :func:`medbench.runs.open_run` folder of workflow "train": its settings
(:func:`train_settings`: the engine settings, the data settings and a digest of the input table)
are recorded once; a re-run with the same settings resumes (the engine continues from its
checkpoint), one with any other setting, an edited table included, is refused listing every change.
Two units are marked with the settings hash: ``fit`` (the engine finished) and ``evaluation``
(metrics.json and report.html written); a re-run of a finished run is answered by
:func:`finished_train` without importing torch. This module imports torch only when training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medbench.data.splits import train_val_test
from medbench.errors import InputError
from medbench.runs import Run, open_run
from medbench.train.config import TrainConfig
from medbench.utils.files import atomic_path, hash_id, write_json_atomic

if TYPE_CHECKING:
    from medbench.train.engine import FitResult

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


#: What ``run_experiment`` writes into its folder besides the run layer's own files (removed by
#: ``restart``, with the ``subgroup_*.csv`` tables found there).
RUN_OUTPUTS = ["checkpoints", "splits.csv", "history.csv", "summary.json", "predictions.parquet", "predictions.csv",
               "report.html", "metrics_per_source.csv", "pairwise_tests.csv"]
#: The unit written last: metrics.json (and report.html for a binary task) of the finished fit.
EVALUATION = "evaluation"


def table_digest(table: pd.DataFrame) -> str:
    """A 16-hex digest of a table's columns and values (row order included): an edited table differs."""
    h = hashlib.sha256("\x1f".join(map(str, table.columns)).encode())
    try:
        values = pd.util.hash_pandas_object(table, index=False).to_numpy()
    except TypeError:  # unhashable cells (lists, dicts): hash their text
        values = pd.util.hash_pandas_object(table.astype(str), index=False).to_numpy()
    h.update(values.tobytes())
    return h.hexdigest()[:16]


def _file_facts(path: str | Path | None) -> Any:
    """``[path, size]`` of a local file (so replaced weights are a changed setting), else the text."""
    if path is None:
        return None
    p = Path(path)
    return [str(p), p.stat().st_size] if p.is_file() else str(path)


def train_settings(
    table: pd.DataFrame, *, label: str = "label", source: str = "random", arch: str | None = None,
    size: int = 224, cfg: TrainConfig | None = None, split_column: str | None = None, val_frac: float = 0.15,
    test_frac: float = 0.2, drop_rate: float = 0.0, weights: str | None = None, train_transform: Any = None,
    window: Any = None, pad: bool = False,
) -> dict[str, Any]:
    """The settings that determine a :func:`run_experiment` result (arguments as there)."""
    cfg = cfg or TrainConfig()
    return {"train": cfg.settings(), "data": {
        "label": label, "source": source, "arch": arch, "size": size, "split_column": split_column,
        "val_frac": val_frac, "test_frac": test_frac, "drop_rate": drop_rate, "weights": _file_facts(weights),
        "n_rows": len(table), "table": table_digest(table),
        "train_transform": repr(train_transform) if train_transform is not None else None,
        "window": list(window) if isinstance(window, tuple) else (window or "auto"), "pad": bool(pad)}}


def finished_train(out_dir: str | Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """``{"metrics", "summary", "report"}`` of a run in ``out_dir`` finished with ``settings``, else None.

    Reads only the run folder (no torch): the ``evaluation`` unit must carry these settings' hash
    and its files must still be there.
    """
    out = Path(out_dir)
    run = Run(out=out, workflow="train", settings=settings, resumed=True)
    if not run.unit_done(EVALUATION, settings, outputs=["metrics.json", "summary.json"]):
        return None
    try:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    report = out / "report.html"
    if "per_source" in metrics and not report.is_file():  # a binary task's report went missing: rebuild it
        return None
    return {"metrics": metrics, "summary": summary, "report": report if report.is_file() else None}


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
        out_dir: The run folder (resumed when it holds a run with the same settings).
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
    from medbench.train.engine import fit

    cfg = cfg or TrainConfig()
    window = parse_window(window)
    dist.init_from_env(cfg.device)  # under torchrun: every rank builds the same splits, rank 0 writes
    out = Path(out_dir)
    settings = train_settings(table, label=label, source=source, arch=arch, size=size, cfg=cfg,
                              split_column=split_column, val_frac=val_frac, test_frac=test_frac,
                              drop_rate=drop_rate, weights=weights, train_transform=train_transform,
                              window=window, pad=pad)
    df = prepare_table(table, label)
    present = sorted(int(v) for v in df[label].unique())
    if len(present) < 2:  # checked before any training, not when the AUC is computed at the end
        raise InputError(f"label column {label!r} holds only class {present or '(none)'}: AUC is undefined and "
                         "training would learn nothing; pass a table with at least two classes")
    outputs = RUN_OUTPUTS + sorted(p.name for p in out.glob("subgroup_*.csv"))
    # refuses, before any work, a folder computed otherwise (rank 0 only: it alone writes)
    run_ctx: Any = (open_run(out, "train", settings, outputs=outputs, restart=restart) if dist.is_main()
                    else contextlib.nullcontext(None))
    with run_ctx as run:
        dist.barrier()
        df["split"] = assign_splits(df, split_column=split_column, val_frac=val_frac, test_frac=test_frac,
                                    seed=cfg.seed).to_numpy()
        counts = df["split"].value_counts().to_dict()
        if not counts.get("train") or not counts.get("test"):
            raise InputError(f"split sizes {counts}: train and test must not be empty (more images, or other "
                             "fractions)")
        if run is not None:
            _save_splits(df, out)
        keep = [c for c in META_KEEP if c in df.columns]
        cache = len(df) * size * size * 4 < CACHE_LIMIT_BYTES  # decode each file once, not every epoch
        from medbench.data.augment import as_transform

        aug = as_transform(train_transform)
        ds = {s: ImageDataset(df[df["split"] == s], label_column=label, size=size, channels=1, cache=cache,
                              transform=aug if s == "train" else None, window=window, pad=pad)
              for s in SPLITS}
        n_classes = max(2, int(df[label].max()) + 1)
        torch.manual_seed(cfg.seed)  # reproducible random initialisation of the new head/backbone
        model = create_source(source, arch=arch, num_classes=n_classes, in_chans=1, drop_rate=drop_rate,
                              weights=weights)
        info = {"source": source, "arch": arch or model.card.arch, "size": size, "label": label,
                "n_classes": n_classes, "splits": {k: int(v) for k, v in counts.items()}}
        logger.info("training %s (%s) on %s", source, info["arch"], info["splits"])
        fitted_before = run is not None and run.unit_done("fit", settings)
        res = fit(model, ds["train"], ds["val"] if counts.get("val") else None, cfg, out,
                  test_ds=ds["test"], keep_meta=keep, run_info=info, on_epoch=on_epoch, run=run)
        pred = res.predictions.assign(source=source)
        metrics: dict[str, Any] = {}
        report: Path | None = None
        if run is not None:
            done = finished_train(out, settings) if fitted_before else None
            if done is not None:  # a finished run re-run: its predictions are unchanged, reuse the report
                logger.info("%s: finished run; reusing metrics.json and report.html", out)
                metrics, report = done["metrics"], done["report"]
            else:
                metrics, report = evaluate_run(pred, out, title=title or f"medbench train: {source}",
                                               history=res.history, config=settings,
                                               examples=_examples(ds["test"], pred))
                run.mark_unit(EVALUATION, settings, report=report.name if report is not None else None)
        dist.barrier()
    return ExperimentResult(out, res, metrics, report)


def _save_splits(df: pd.DataFrame, out: Path) -> None:
    """``splits.csv`` (once: the settings, the table digest among them, fix the split)."""
    path = out / "splits.csv"
    if path.exists():
        return
    with atomic_path(path) as tmp:
        df[["uid", "patient_hash", "split"]].to_csv(tmp, index=False)


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
