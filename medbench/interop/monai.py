"""MONAI decathlon-style datalists from a medbench table or run folder.

The JSON has one section per split: ``training``, ``validation`` and ``test`` (MONAI's
``load_decathlon_datalist(path, data_list_key=...)`` reads each), items
``{"image": path, "label": class_id}`` plus the patient hash so a user can check grouping.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from medbench.errors import InputError

#: medbench split -> MONAI datalist section.
SECTIONS = {"train": "training", "val": "validation", "test": "test"}


def _splits(source: Path, table: pd.DataFrame | None, label: str) -> pd.DataFrame:
    """Rows with path, label, split: from a run folder's splits.csv or a table's split column."""
    from medbench.train.experiment import prepare_table, read_table

    if source.is_dir() and (source / "splits.csv").is_file():
        if table is None:
            raise InputError(f"{source} is a run folder: pass the table it was trained on with --manifest "
                             "(splits.csv holds uids, not file paths)")
        df = prepare_table(table, label)
        splits = pd.read_csv(source / "splits.csv", dtype=str)
        merged = df.assign(uid=df["uid"].astype(str)).merge(splits[["uid", "split"]], on="uid", how="inner")
        if len(merged) != len(splits):
            raise InputError(f"{len(splits) - len(merged)} uids of {source / 'splits.csv'} are not in the "
                             "--manifest table: pass the table the run was trained on")
        return merged
    df = read_table(source) if table is None else table
    df = prepare_table(df, label) if label in df.columns else df.assign(**{label: pd.NA})
    if "split" not in df.columns:
        df = df.assign(split="train")
    df["split"] = df["split"].astype(str).str.lower().replace({"valid": "val", "validation": "val",
                                                               "training": "train"})
    bad = sorted(set(df["split"]) - set(SECTIONS))
    if bad:
        raise InputError(f"split values {bad}: use train/val/test")
    return df


def datalist(source: str | os.PathLike[str], *, table: pd.DataFrame | None = None,
             label: str = "label") -> dict[str, list[dict[str, Any]]]:
    """The datalist dict of a run folder (with ``table``) or of a table (its ``split`` column, else all training).

    Args:
        source: A train run folder (splits.csv) or a manifest/labels table (or a folder holding one).
        table: The table the run was trained on (needed for a run folder).
        label: Label column; omitted from the items when the table has none.
    """
    df = _splits(Path(source), table, label)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SECTIONS.values()}
    for row in df.to_dict("records"):
        item: dict[str, Any] = {"image": str(Path(str(row["path"])).resolve())}
        if label in row and not pd.isna(row[label]):
            item["label"] = int(row[label])
        if row.get("patient_hash"):
            item["patient_hash"] = str(row["patient_hash"])
        out[SECTIONS[row["split"]]].append(item)
    return {k: v for k, v in out.items() if v or k == "training"}


def write_datalist(source: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   table: pd.DataFrame | None = None, label: str = "label") -> Path:
    """Write :func:`datalist` as JSON to ``out`` and return the path."""
    from medbench.utils.files import atomic_path

    data = datalist(source, table=table, label=label)
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2))
    return dest
