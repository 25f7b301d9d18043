"""PNG/JPEG/TIFF images with label tables (generic CSV and NIH ChestX-ray14 Data_Entry_2017.csv).

Both table readers return the manifest's column names: ``path`` (absolute), ``uid``,
``patient_id`` (as given, a string), ``patient_hash`` (:func:`medbench.utils.files.hash_id`; use it
in anything written to reports), ``sex`` (M/F/O/""), ``age`` (years), ``view`` and one integer
column per label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medbench.errors import InputError
from medbench.io.manifest import normalise_sex, parse_age
from medbench.utils.files import hash_id

logger = logging.getLogger(__name__)

#: The 14 ChestX-ray14 findings plus "No Finding", as spelled in Data_Entry_2017.csv.
NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
    "No Finding",
)
_NIH_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG/JPEG/TIFF image as float32 in [0, 1] (divided by the bit depth's maximum).

    Returns:
        ``(H, W)`` for grey images, ``(H, W, 3)`` for colour (alpha dropped).

    Raises:
        InputError: Missing or unreadable file.
    """
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
    try:
        with Image.open(p) as img:
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            arr = np.asarray(img)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on broken files
        raise InputError(f"{p}: image cannot be read ({exc}); is it a valid PNG/JPEG/TIFF?") from None
    if mode in ("RGBA", "LA"):
        arr = arr[..., :-1]
        if mode == "LA":
            arr = arr[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu":
        maximum = 65535.0 if arr.dtype.itemsize == 2 or mode.startswith("I;16") else float(np.iinfo(arr.dtype).max)
        if arr.dtype.itemsize > 2:  # 32-bit integer images carry no fixed range: min-max
            from medbench.io.lut import to_unit

            return to_unit(arr)
        return (arr.astype(np.float32) / np.float32(maximum)).astype(np.float32)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _index_images(image_dir: Path) -> dict[str, str]:
    """File name -> absolute path for every image under ``image_dir`` (first one wins)."""
    index: dict[str, str] = {}
    for dirpath, _, filenames in os.walk(image_dir):
        for name in sorted(filenames):
            if Path(name).suffix.lower() in _IMAGE_SUFFIXES:
                index.setdefault(name, os.path.abspath(os.path.join(dirpath, name)))
    return index


def _resolve(names: pd.Series, base: Path, image_dir: Path | None) -> pd.Series:
    index = _index_images(image_dir) if image_dir is not None else {}
    root = image_dir if image_dir is not None else base

    def one(name: str) -> str:
        candidate = Path(name)
        if not candidate.is_absolute():
            candidate = root / candidate
        if candidate.is_file():
            return str(candidate.resolve())
        found = index.get(Path(name).name)
        return found if found is not None else str(candidate.absolute())

    return names.astype(str).map(one)


def _handle_missing(df: pd.DataFrame, csv_path: Path, on_missing: str) -> pd.DataFrame:
    if on_missing not in ("raise", "drop", "keep"):
        raise InputError(f"on_missing must be 'raise', 'drop' or 'keep', got {on_missing!r}")
    exists = df["path"].map(os.path.isfile)
    n_missing = int((~exists).sum())
    if n_missing == 0 or on_missing == "keep":
        return df
    if on_missing == "raise":
        first = df.loc[~exists, "path"].iloc[0]
        raise InputError(
            f"{csv_path}: {n_missing} of {len(df)} images not found (first: {first}); pass image_dir= the "
            "folder holding them, or on_missing='drop' to skip them"
        )
    logger.warning("%s: dropping %d rows whose images are missing", csv_path, n_missing)
    return df[exists].reset_index(drop=True)


def _read_csv(csv_path: str | os.PathLike[str]) -> tuple[Path, pd.DataFrame]:
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"{path}: label CSV not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot be read as CSV ({exc})") from None
    if df.empty:
        raise InputError(f"{path}: label CSV has no rows")
    return path, df


def read_image_table(
    csv_path: str | os.PathLike[str],
    *,
    image_dir: str | os.PathLike[str] | None = None,
    path_column: str = "path",
    label_columns: Sequence[str] | None = None,
    patient_column: str = "patient_id",
    sex_column: str = "sex",
    age_column: str = "age",
    view_column: str = "view",
    on_missing: str = "raise",
) -> pd.DataFrame:
    """Read a label CSV for an image folder into the manifest's column names.

    Args:
        csv_path: CSV with one row per image.
        image_dir: Folder the paths are relative to (default: the CSV's folder); file names not
            found there directly are looked up anywhere below it.
        path_column: Column holding the image path or file name.
        label_columns: Integer label columns (default: ``label`` if present, else every other
            column whose values are all 0/1).
        patient_column, sex_column, age_column, view_column: Source columns (absent ones give blanks).
        on_missing: ``"raise"``, ``"drop"`` or ``"keep"`` rows whose image file does not exist.

    Returns:
        DataFrame with ``path, uid, patient_id, patient_hash, sex, age, view``, the label columns,
        then the CSV's other columns unchanged.
    """
    path, df = _read_csv(csv_path)
    if path_column not in df.columns:
        raise InputError(f"{path}: no {path_column!r} column (columns: {', '.join(df.columns)}); pass path_column=")
    base = path.parent
    out = pd.DataFrame({"path": _resolve(df[path_column], base, Path(image_dir) if image_dir else None)})
    out["uid"] = df["uid"].astype(str) if "uid" in df.columns else df[path_column].map(lambda s: Path(s).stem)
    pid = df[patient_column].astype(str) if patient_column in df.columns else pd.Series([""] * len(df))
    out["patient_id"] = pid.values
    out["patient_hash"] = [hash_id(v) if v else "" for v in pid]
    out["sex"] = (df[sex_column] if sex_column in df.columns else pd.Series([""] * len(df))).map(normalise_sex).values
    out["age"] = (df[age_column] if age_column in df.columns else pd.Series([""] * len(df))).map(parse_age).astype(float).values
    out["view"] = (df[view_column].astype(str).str.strip() if view_column in df.columns else pd.Series([""] * len(df))).values
    used = {path_column, "uid", patient_column, sex_column, age_column, view_column}
    if label_columns is None:
        if "label" in df.columns:
            label_columns = ["label"]
        else:
            label_columns = [c for c in df.columns if c not in used and len(df) and df[c].isin(["0", "1"]).all()]
    for col in label_columns:
        if col not in df.columns:
            raise InputError(f"{path}: label column {col!r} not found (columns: {', '.join(df.columns)})")
        try:
            out[col] = pd.to_numeric(df[col]).astype("int64").values
        except (ValueError, TypeError):
            raise InputError(f"{path}: label column {col!r} must hold integers") from None
    for col in df.columns:
        if col not in used and col not in label_columns and col not in out.columns:
            out[col] = df[col].values
    return _handle_missing(out, path, on_missing)


def read_nih_table(
    csv_path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    *,
    on_missing: str = "raise",
) -> pd.DataFrame:
    """Read NIH ChestX-ray14 ``Data_Entry_2017.csv`` into the manifest's column names.

    Args:
        csv_path: The CSV (columns Image Index, Finding Labels, Follow-up #, Patient ID,
            Patient Age, Patient Gender, View Position, ...).
        image_dir: Folder holding the PNGs, searched recursively (the download splits them over
            ``images_001/images`` ...); default: the CSV's folder.
        on_missing: ``"raise"``, ``"drop"`` or ``"keep"`` rows whose image is not found.

    Returns:
        DataFrame with ``path, uid, patient_id, patient_hash, sex, age, view, follow_up, labels``
        and one 0/1 column per finding (:data:`NIH_FINDINGS`, plus any other finding present).
    """
    path, df = _read_csv(csv_path)
    missing = [c for c in _NIH_REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a ChestX-ray14 table, missing column(s) {', '.join(missing)}")
    root = Path(image_dir) if image_dir else path.parent
    out = pd.DataFrame({"path": _resolve(df["Image Index"], root, root)})
    out["uid"] = df["Image Index"].astype(str).values
    pid = df["Patient ID"].astype(str).str.strip()
    out["patient_id"] = pid.values
    out["patient_hash"] = [hash_id(v) if v else "" for v in pid]
    out["sex"] = df.get("Patient Gender", pd.Series([""] * len(df))).map(normalise_sex).values
    out["age"] = df.get("Patient Age", pd.Series([""] * len(df))).map(parse_age).astype(float).values
    out["view"] = df.get("View Position", pd.Series([""] * len(df))).astype(str).str.strip().values
    follow = pd.to_numeric(df.get("Follow-up #", pd.Series([""] * len(df))), errors="coerce")
    out["follow_up"] = follow.astype("Int64").values
    labels = df["Finding Labels"].astype(str).str.strip()
    out["labels"] = labels.values
    sets = [{t.strip() for t in s.split("|") if t.strip()} for s in labels]
    extra = sorted({t for s in sets for t in s} - set(NIH_FINDINGS))
    if extra:
        logger.info("%s: findings outside the 14 NIH classes: %s", path, ", ".join(extra))
    for finding in (*NIH_FINDINGS, *extra):
        out[finding] = np.array([int(finding in s) for s in sets], dtype=np.int64)
    return _handle_missing(out, path, on_missing)
