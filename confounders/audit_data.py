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
    per split a dict set name -> row positions (``splits``), and optionally the authors' split
    files of sampled confounders (``sampled_splits``)."""

    images: torch.Tensor
    meta: pd.DataFrame
    splits: list[dict[str, np.ndarray]] = field(default_factory=list)
    name: str = "data"
    #: Authors' split files of sampled confounders: confounder name -> p -> per split the row
    #: positions of "train", "val" and "test" (the o.o.d. test set), e.g. Source Matters'
    #: ``gender/F_<100p>/`` folders (see :func:`find_sex_split_csvs`).
    sampled_splits: dict[str, dict[float, list[dict[str, np.ndarray]]]] = field(default_factory=dict)

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
    (matched on ``Image Index`` = file name); values already present are kept, missing ones filled."""
    table = next((f / DATA_ENTRY for f in folders if (f / DATA_ENTRY).is_file()), None)
    if table is None:
        return meta
    entry = pd.read_csv(table)
    if "Image Index" not in entry.columns:
        raise InputError(f"{table} has no 'Image Index' column: is it NIH's Data_Entry_2017.csv?")
    entry = entry.drop_duplicates("Image Index").set_index("Image Index")
    names = meta["path"].map(lambda p: Path(p).name)
    for col, new in _ENTRY_COLUMNS.items():
        if col in entry.columns:
            found = names.map(entry[col])
            meta[new] = meta[new].fillna(found) if new in meta.columns else found.to_numpy()
    logger.info("joined %s (%d of %d images found)", table, int(names.isin(entry.index).sum()), len(meta))
    return meta


#: The authors' sex-experiment folder inside their split folder (``data/chest14/gender/``).
SEX_DIR = "gender"
_SEX_FOLDER = re.compile(r"^F_(\d+)$")


def find_sex_split_csvs(folder: str | Path) -> dict[float, list[dict[str, Path]]]:
    """The authors' sex-experiment split files (Source Matters ``gender.py``): ``F_<100p>/``
    subfolders holding ``train_fold<K>.csv``/``val_fold<K>.csv``, beside one ``test.csv`` (male
    positives + female negatives, the o.o.d. test set shared by every p). Returns p -> splits."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"sex split folder {root} does not exist")
    if not (root / "test.csv").is_file():
        raise InputError(f"sex split folder {root} has no test.csv: expected the authors' gender/ layout "
                         "(test.csv beside F_0/, F_50/, ... with train_foldK.csv, val_foldK.csv)")
    out = {}
    for sub in sorted(root.iterdir()):
        m = _SEX_FOLDER.match(sub.name)
        if m and sub.is_dir():
            out[int(m.group(1)) / 100.0] = find_split_csvs(sub)
    if not out:
        raise InputError(f"sex split folder {root} has no F_<percent>/ subfolder (e.g. F_50/train_fold1.csv)")
    return dict(sorted(out.items()))


def _positive_class(classes: set[str], positive: object) -> tuple[object, bool]:
    """``(positive, negate)``: the class that is label 1, or with ``negate`` the class that is label 0.
    Default: "YES" for the authors' YES/NO files; every class but "No Finding" for their sex files
    (``Atelectasis``/``No Finding``); else 1."""
    if positive is not None:
        return positive, False
    if classes <= {"YES", "NO"}:
        return "YES", False
    if "No Finding" in classes:
        return "No Finding", True
    return 1, False


def _read_split_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, index_col=0)
    missing = [c for c in ("path", "pid", "class") if c not in df.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing}: expected the layout ',path,pid,class'")
    return df


def load_nih_splits(csv_dir: str | Path, image_root: str | Path | None = None, *, size: int = 128,
                    positive: object = None, max_splits: int | None = None, window: Window = None,
                    sex_csv_dir: str | Path | None = None) -> AuditData:
    """NIH ChestX-ray14 with the paper's split CSVs (``,path,pid,class``: unnamed index, image path,
    patient id, class; a ``Patient Gender`` column becomes ``sex``). ``class`` equal to
    ``positive`` is label 1 (default: "YES" when the classes are YES/NO as in the authors' files,
    "not No Finding" for their sex files, else 1); relative paths join ``image_root``.
    ``window``: :func:`medbench.io.images.read_image` (default: 8-bit PNGs divided by 255).

    The authors' sex-experiment files (``sex_csv_dir``, default ``<csv_dir>/gender`` when it
    exists; see :func:`find_sex_split_csvs`) go into ``sampled_splits["sex"]``: the ``sex``
    confounder then trains on their files instead of sampling its own sets."""
    csvs = find_split_csvs(csv_dir)[: max_splits or None]
    if sex_csv_dir is None and (Path(csv_dir) / SEX_DIR / "test.csv").is_file():
        sex_csv_dir = Path(csv_dir) / SEX_DIR
    sex_csvs = {} if sex_csv_dir is None else find_sex_split_csvs(sex_csv_dir)
    frames = []
    for i, sets in enumerate(csvs):
        for s, path in sets.items():
            frames.append(_read_split_csv(path).assign(_group="main", _p=np.nan, _split=i, _set=s))
    for p, sex_splits in sex_csvs.items():
        for i, sets in enumerate(sex_splits[: max_splits or None]):
            for s, path in sets.items():
                frames.append(_read_split_csv(path).assign(_group="sex", _p=p, _split=i, _set=s))
    allrows = pd.concat(frames, ignore_index=True)
    root = Path(image_root) if image_root else Path(csv_dir)
    allrows["path"] = [str(p if Path(p).is_absolute() else root / p) for p in allrows["path"].astype(str)]
    allrows["class"] = allrows["class"].astype(str)
    for _, g in allrows.groupby("_group"):
        pos, negate = _positive_class(set(g["class"]), positive)
        hit = g["class"] == str(pos)
        allrows.loc[g.index, "_label"] = (~hit if negate else hit).astype(int)
    uniq = allrows.drop_duplicates("path").reset_index(drop=True)
    clash = allrows.groupby("path")["_label"].nunique()
    if (clash > 1).any():
        raise InputError(f"{int((clash > 1).sum())} image(s) have different labels in different split files, "
                         f"e.g. {clash[clash > 1].index[0]}: pass --positive to name the positive class")
    meta = pd.DataFrame({"uid": [Path(p).name for p in uniq["path"]], "patient_id": uniq["pid"].astype(str),
                         "label": uniq["_label"].astype(int), "path": uniq["path"]})
    if "Patient Gender" in allrows.columns:
        sex = allrows.dropna(subset=["Patient Gender"]).drop_duplicates("path").set_index("path")["Patient Gender"]
        if len(sex):
            meta["sex"] = meta["path"].map(sex).to_numpy()
    meta = _join_data_entry(meta, [Path(csv_dir), root, root.parent])
    missing = [p for p in meta["path"] if not Path(p).is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) of the split CSVs are missing, e.g. {missing[0]}: "
                         "pass --image-root, the folder holding the NIH PNGs")
    if meta["uid"].duplicated().any():
        meta["uid"] = uniq["path"]
    pos_of = {p: i for i, p in enumerate(uniq["path"])}

    def rows_of(sub: pd.DataFrame) -> dict[str, np.ndarray]:
        return {s: np.array(sorted(pos_of[p] for p in sub.loc[sub._set == s, "path"]), dtype=np.int64)
                for s in SETS}

    main = allrows[allrows._group == "main"]
    splits = [rows_of(main[main._split == i]) for i in range(len(csvs))]
    sampled: dict[str, dict[float, list[dict[str, np.ndarray]]]] = {}
    if sex_csvs:
        sex = allrows[allrows._group == "sex"]
        sampled["sex"] = {p: [rows_of(g[g._split == i]) for i in sorted(set(g._split))]
                          for p, g in sex.groupby("_p")}
        logger.info("sex: the authors' split files of %s (p = %s)", sex_csv_dir,
                    ", ".join(f"{p:g}" for p in sampled["sex"]))
    images = _load_paths(meta["path"].tolist(), size, parse_window(window))
    return AuditData(images, meta, splits, "nih", sampled_splits=sampled)


def authors_sampled_sets(data: AuditData, name: str, p: float, split: int) -> dict[str, np.ndarray] | None:
    """Row positions ``train``, ``val``, ``ood`` of the authors' split files for sampled confounder
    ``name`` at ``p`` and ``split`` (None when the data has no such files). The authors' sex
    experiment has one test set, the o.o.d. one: ``test``/``clean`` come back empty."""
    by_p = data.sampled_splits.get(name)
    if not by_p:
        return None
    key = next((q for q in by_p if abs(q - float(p)) < 1e-9), None)
    if key is None:
        raise InputError(f"the authors' {name} split files hold p = {', '.join(f'{q:g}' for q in by_p)}, "
                         f"not {float(p):g}: run those p values (--ps)")
    if split >= len(by_p[key]):
        raise InputError(f"the authors' {name} split files at p = {key:g} hold {len(by_p[key])} split(s), "
                         f"not split {split + 1}: lower --splits")
    sets = by_p[key][split]
    empty = np.zeros(0, dtype=np.int64)
    return {"train": sets["train"], "val": sets["val"], "test": empty, "ood": sets["test"], "clean": empty}
