"""Data loaders of the robustness audit: embedded synthetic CXR, an ingested DICOM folder, NIH
ChestX-ray14 with the paper's split CSVs. Each returns an :class:`AuditData` held in memory at the
audit's working resolution."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medbench.data.splits import (  # noqa: F401 - the audit's split API, re-exported
    SPLIT_SCHEMES,
    make_splits,
    patient_fixed_test,
    patient_kfold,
    stratified_group_kfold,
)
from medbench.errors import InputError
from medbench.io.images import Window, parse_window

logger = logging.getLogger(__name__)

SETS = ("train", "val", "test")


@dataclass
class AuditData:
    """Images ``(N, 1, S, S)`` in [0, 1], metadata ``[uid, patient_id, label, ...]`` (label 0/1),
    and per split a dict set name -> row positions (``splits``)."""

    images: torch.Tensor
    meta: pd.DataFrame
    splits: list[dict[str, np.ndarray]] = field(default_factory=list)
    name: str = "data"

    def __post_init__(self) -> None:
        need = [c for c in ("uid", "patient_id", "label") if c not in self.meta.columns]
        if need:
            raise InputError(f"audit metadata lacks column(s) {need}: add them to the label table")
        if len(self.meta) != self.images.shape[0]:
            raise InputError(f"{len(self.meta)} metadata rows for {self.images.shape[0]} images")
        if not set(np.unique(self.meta["label"])) <= {0, 1}:
            raise InputError("audit labels must be binary 0/1: map the finding to 1 and No Finding to 0")
        self.meta = self.meta.reset_index(drop=True)


def _resize(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    t = torch.as_tensor(images, dtype=torch.float32)
    if t.ndim == 3:
        t = t[:, None]
    if t.shape[-1] != size or t.shape[-2] != size:
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
    return t.clamp_(0, 1).contiguous()


def load_synthetic(*, n: int = 400, size: int = 64, seed: int = 0, splits: int = 5,
                   val_fraction: float = 0.15, scheme: str = "fixed-test",
                   test_fraction: float = 0.25) -> AuditData:
    """The embedded synthetic chest radiographs (``medbench.data.synthetic.make_cxr``) in memory."""
    from medbench.data.synthetic import make_cxr

    images, meta = make_cxr(int(n), size=int(size), seed=int(seed))
    meta = meta.copy()
    meta["label"] = meta["label"].astype(int)
    return AuditData(_resize(images, int(size)), meta,
                     make_splits(meta, scheme=scheme, k=splits, val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed), "synthetic")


def _load_paths(paths: list[str], size: int, window: Window = None) -> torch.Tensor:
    """Images read with :func:`medbench.io.images.read_image` (grey; ``window``: the DICOM's VOI by
    default, "minmax", "bits" or (center, width)) and resized to ``size``."""
    from tqdm.auto import tqdm

    from medbench.io.images import read_image

    out = torch.empty(len(paths), 1, size, size)
    for i, p in enumerate(tqdm(paths, desc="load images", unit="img", disable=len(paths) < 200)):
        img = read_image(p, window=window)
        out[i] = _resize(img[None], size)[0]
    return out


def load_dicom_folder(manifest: str | Path, labels: str | Path, *, size: int = 128, positive: object = 1,
                      label_column: str = "label", splits: int = 5, seed: int = 0,
                      val_fraction: float = 0.15, scheme: str = "fixed-test",
                      test_fraction: float = 0.25, window: Window = None) -> AuditData:
    """An ingested DICOM folder: ``manifest`` (``medbench ingest`` output, .parquet/.csv) joined with
    a label table (.csv with ``path`` or ``sop_uid``/``uid`` and ``label_column``). ``window``:
    :func:`medbench.io.images.read_image` (default: each file's VOI window)."""
    man = _read_table(manifest)
    lab = _read_table(labels)
    if label_column not in lab.columns:
        raise InputError(f"label table {labels} has no {label_column!r} column (has {list(lab.columns)})")
    if "status" in man.columns:
        man = man[man["status"].astype(str).isin(["ok", "OK", "ok_with_warnings"]) | man["status"].isna()]
    key = "path" if "path" in lab.columns and "path" in man.columns else None
    if key is None:
        for a, b in (("sop_uid", "sop_uid"), ("uid", "sop_uid")):
            if a in lab.columns and b in man.columns:
                lab = lab.rename(columns={a: b}) if a != b else lab
                key = b
                break
    if key is None:
        raise InputError("label table needs a 'path' or 'sop_uid'/'uid' column matching the manifest")
    if key == "path":
        man = man.assign(path=man["path"].map(lambda p: str(Path(p).resolve())))
        lab = lab.assign(path=lab["path"].map(lambda p: str(Path(p).resolve())))
    df = man.merge(lab, on=key, how="inner", suffixes=("", "_lab"))
    if df.empty:
        raise InputError(f"no manifest row matches the label table on {key!r}: check the paths")
    df["label"] = (df[label_column].astype(str) == str(positive)).astype(int)
    if "uid" not in df.columns:
        df["uid"] = df["sop_uid"] if "sop_uid" in df.columns else df["path"]
    if "patient_id" not in df.columns:
        df["patient_id"] = df["patient_hash"] if "patient_hash" in df.columns else df["uid"]
    df = df.reset_index(drop=True)
    images = _load_paths(df["path"].astype(str).tolist(), size, parse_window(window))
    return AuditData(images, df, make_splits(df, scheme=scheme, k=splits, val_fraction=val_fraction,
                                             test_fraction=test_fraction, seed=seed), "dicom")


def _read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"table {p} does not exist")
    return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)


_SPLIT_PATTERNS = (
    re.compile(r"^(?:split|fold)_?(\d+)$"),  # split_0/train.csv
    re.compile(r"^(train|val|valid|validation|test)_?(\d+)\.csv$"),  # train_0.csv
)


_AUTHORS_FOLD = re.compile(r"^(train|val)_fold(\d+)\.csv$")


def find_split_csvs(csv_dir: str | Path) -> list[dict[str, Path]]:
    """Locate per-split CSVs: the authors' released layout ``train_fold<K>.csv``,
    ``val_fold<K>.csv`` + one ``test.csv`` shared by every fold (DovileDo/source-matters
    ``data/chest14/``; for ``gender/F_<p>/`` the ``test.csv`` one folder up), else
    ``split_<i>/{train,val,test}.csv`` or ``{train,val,test}_<i>.csv``."""
    root = Path(csv_dir)
    if not root.is_dir():
        raise InputError(f"split folder {root} does not exist")
    found: dict[int, dict[str, Path]] = {}
    # the authors' sex folders (gender/F_50/train_fold1.csv) share the test.csv one level up
    test_csv = next((d / "test.csv" for d in (root, root.parent) if (d / "test.csv").is_file()), None)
    if test_csv is not None:
        for p in sorted(root.iterdir()):
            m = _AUTHORS_FOLD.match(p.name)
            if m and p.is_file():
                found.setdefault(int(m.group(2)), {"test": test_csv})[m.group(1)] = p
        splits = [found[i] for i in sorted(found) if set(found[i]) == set(SETS)]
        if splits:
            return splits
        found = {}
    for p in sorted(root.iterdir()):
        m = _SPLIT_PATTERNS[0].match(p.name)
        if m and p.is_dir():
            for s in SETS:
                cands = [p / f"{s}.csv"] + ([p / "valid.csv", p / "validation.csv"] if s == "val" else [])
                for c in cands:
                    if c.is_file():
                        found.setdefault(int(m.group(1)), {})[s] = c
                        break
        m = _SPLIT_PATTERNS[1].match(p.name)
        if m and p.is_file():
            s = "val" if m.group(1).startswith("val") else m.group(1)
            found.setdefault(int(m.group(2)), {})[s] = p
    splits = [found[i] for i in sorted(found) if set(found[i]) == set(SETS)]
    if not splits:
        raise InputError(f"no complete split in {root}: expected split_<i>/train.csv,val.csv,test.csv "
                         "or train_<i>.csv, val_<i>.csv, test_<i>.csv")
    return splits


#: NIH ChestX-ray14's metadata table and the columns the audit takes from it.
DATA_ENTRY = "Data_Entry_2017.csv"
_ENTRY_COLUMNS = {"Patient Gender": "sex", "Patient Age": "age", "View Position": "view"}


def _join_data_entry(meta: pd.DataFrame, folders: list[Path]) -> pd.DataFrame:
    """Add ``sex``/``age``/``view`` from the first ``Data_Entry_2017.csv`` found in ``folders``
    (matched on ``Image Index`` = file name); columns already present are kept."""
    table = next((f / DATA_ENTRY for f in folders if (f / DATA_ENTRY).is_file()), None)
    if table is None:
        return meta
    entry = pd.read_csv(table)
    if "Image Index" not in entry.columns:
        raise InputError(f"{table} has no 'Image Index' column: is it NIH's Data_Entry_2017.csv?")
    entry = entry.drop_duplicates("Image Index").set_index("Image Index")
    names = meta["path"].map(lambda p: Path(p).name)
    for col, new in _ENTRY_COLUMNS.items():
        if col in entry.columns and new not in meta.columns:
            meta[new] = names.map(entry[col]).to_numpy()
    logger.info("joined %s (%d of %d images found)", table, int(names.isin(entry.index).sum()), len(meta))
    return meta


def load_nih_splits(csv_dir: str | Path, image_root: str | Path | None = None, *, size: int = 128,
                    positive: object = None, max_splits: int | None = None, window: Window = None) -> AuditData:
    """NIH ChestX-ray14 with the paper's split CSVs (``,path,pid,class``: unnamed index, image path,
    patient id, class; a ``Patient Gender`` column becomes ``sex``). ``class`` equal to
    ``positive`` is label 1 (default: "YES" when the classes are YES/NO as in the authors' files,
    else 1); relative paths join ``image_root``. ``window``: :func:`medbench.io.images.read_image`
    (default: 8-bit PNGs divided by 255)."""
    csvs = find_split_csvs(csv_dir)[: max_splits or None]
    frames = []
    for i, sets in enumerate(csvs):
        for s, path in sets.items():
            df = pd.read_csv(path, index_col=0)
            missing = [c for c in ("path", "pid", "class") if c not in df.columns]
            if missing:
                raise InputError(f"{path} lacks column(s) {missing}: expected the layout ',path,pid,class'")
            frames.append(df.assign(_split=i, _set=s))
    allrows = pd.concat(frames, ignore_index=True)
    root = Path(image_root) if image_root else Path(csv_dir)
    allrows["path"] = [str(p if Path(p).is_absolute() else root / p) for p in allrows["path"].astype(str)]
    uniq = allrows.drop_duplicates("path").reset_index(drop=True)
    if positive is None:
        positive = "YES" if set(uniq["class"].astype(str)) <= {"YES", "NO"} else 1
    meta = pd.DataFrame({"uid": [Path(p).name for p in uniq["path"]], "patient_id": uniq["pid"].astype(str),
                         "label": (uniq["class"].astype(str) == str(positive)).astype(int), "path": uniq["path"]})
    if "Patient Gender" in uniq.columns:
        meta["sex"] = uniq["Patient Gender"].astype(str).to_numpy()
    meta = _join_data_entry(meta, [Path(csv_dir), root, root.parent])
    missing = [p for p in meta["path"] if not Path(p).is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) of the split CSVs are missing, e.g. {missing[0]}: "
                         "pass --image-root, the folder holding the NIH PNGs")
    if meta["uid"].duplicated().any():
        meta["uid"] = uniq["path"]
    pos = {p: i for i, p in enumerate(uniq["path"])}
    splits = []
    for i in range(len(csvs)):
        rows = allrows[allrows._split == i]
        splits.append({s: np.array(sorted(pos[p] for p in rows.loc[rows._set == s, "path"])) for s in SETS})
    images = _load_paths(meta["path"].tolist(), size, parse_window(window))
    return AuditData(images, meta, splits, "nih")
