"""Patient-grouped splits, the one module every workflow uses; saved as CSV.

No group (patient) ever lands in two parts.

- :func:`train_val_test` (``medbench train``): one train/val/test split. Groups are shuffled with a
  generator seeded from ``seed`` and, where a ``stratify`` column is given, dealt out per stratum
  (a group's stratum is its most frequent label) so every part keeps the label mix; greedy
  assignment by image count hits any fraction even when patients have several images.
  scikit-learn has no stratified *grouped* shuffle split for arbitrary fractions, so this stays
  medbench's own (and keeps ``medbench train``'s splits as they were).
- The audit's splits (:func:`make_splits`, schemes :data:`SPLIT_SCHEMES`):
  :func:`patient_fixed_test`, Source Matters' protocol on scikit-learn ``GroupShuffleSplit``;
  :func:`stratified_group_kfold` on scikit-learn ``StratifiedGroupKFold``; and
  :func:`patient_kfold`, medbench's earlier patient k-fold (a seeded permutation of the
  patients dealt round-robin), kept bit-identical so that earlier audits reproduce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medbench.errors import InputError
from medbench.utils.files import atomic_path
from medbench.utils.rng import derive_seed, numpy_rng

PARTS = ("train", "val", "test")


def _groups(df: pd.DataFrame, group: str, stratify: str | None) -> pd.DataFrame:
    """One row per group: its size and stratum (most frequent label, ties to the smallest)."""
    if not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise InputError("df must be a non-empty DataFrame")
    if group not in df.columns:
        raise InputError(f"group column {group!r} is not in the table (columns: {', '.join(map(str, df.columns))})")
    if df[group].isna().any():
        raise InputError(f"group column {group!r} has {int(df[group].isna().sum())} missing values: fill them (e.g. one id per image)")
    keys = df[group].astype(str)
    g = pd.DataFrame({"size": keys.value_counts(sort=False)})
    if stratify is not None:
        if stratify not in df.columns:
            raise InputError(f"stratify column {stratify!r} is not in the table: pass stratify=None or the label column")
        lab = df[stratify]
        if lab.isna().any():
            raise InputError(f"stratify column {stratify!r} has missing values: drop those rows or pass stratify=None")
        mode = (
            pd.DataFrame({"g": keys.to_numpy(), "y": lab.astype(str).to_numpy()})
            .groupby(["g", "y"]).size().reset_index(name="n")
            .sort_values(["g", "n", "y"], ascending=[True, False, True])
            .drop_duplicates("g").set_index("g")["y"]
        )
        g["stratum"] = mode.reindex(g.index)
    else:
        g["stratum"] = ""
    return g.sort_index()


def _shuffled_strata(g: pd.DataFrame, rng: np.random.Generator) -> list[pd.DataFrame]:
    """Groups of each stratum in a seeded random order, larger groups first (stable)."""
    out = []
    for stratum in sorted(g["stratum"].unique()):
        part = g[g["stratum"] == stratum]
        part = part.iloc[rng.permutation(len(part))]
        out.append(part.sort_values("size", ascending=False, kind="stable"))
    return out


def train_val_test(
    df: pd.DataFrame,
    *,
    group: str = "patient_id",
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    stratify: str | None = "label",
) -> pd.Series:
    """Split rows into "train"/"val"/"test" by group, about ``val``/``test`` of the rows each.

    Returns:
        ``pd.Series`` of ``"train"``, ``"val"`` or ``"test"``, indexed like ``df``, named ``"split"``.
    """
    val, test = float(val), float(test)
    if val < 0 or test < 0 or val + test >= 1:
        raise InputError(f"val and test must be >= 0 with val + test < 1 (got val={val}, test={test})")
    g = _groups(df, group, stratify)
    rng = numpy_rng(seed, "train_val_test")
    target = np.array([1.0 - val - test, val, test])
    part_of: dict[str, str] = {}
    for part in _shuffled_strata(g, rng):
        n = float(part["size"].sum())
        filled = np.zeros(3)
        for key, size in zip(part.index, part["size"]):
            # the part furthest below its target share of this stratum gets the group
            deficit = target * n - filled
            deficit[target == 0] = -np.inf
            j = int(np.argmax(deficit))
            part_of[key] = PARTS[j]
            filled[j] += size
    out = df[group].astype(str).map(part_of)
    out.name = "split"
    return out


def save_splits(
    df: pd.DataFrame,
    splits: pd.Series | Sequence[pd.Series] | Mapping[str, pd.Series],
    path: str | Path,
    *,
    id_columns: Sequence[str] = ("uid", "patient_id"),
) -> Path:
    """Write ``splits`` (one column each) with ``df``'s id columns to a CSV file, atomically.

    Args:
        df: The table the splits index.
        splits: A Series, a list of Series (columns named by their ``.name`` or ``split_<i>``) or a
            name -> Series mapping.
        path: Output CSV path.
        id_columns: Columns of ``df`` copied alongside (those present).
    """
    if isinstance(splits, pd.Series):
        cols = {str(splits.name or "split"): splits}
    elif isinstance(splits, Mapping):
        cols = {str(k): v for k, v in splits.items()}
    else:
        cols = {}
        for i, s in enumerate(splits):
            name = str(s.name) if s.name is not None and str(s.name) not in cols else f"split_{i}"
            cols[name] = s
    out = df[[c for c in id_columns if c in df.columns]].copy()
    for name, s in cols.items():
        if len(s) != len(df) or not s.index.equals(df.index):
            raise InputError(f"split {name!r} is not indexed like the table: compute it from the same DataFrame")
        out[name] = s
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return Path(path)


def load_splits(path: str | Path) -> pd.DataFrame:
    """Read a CSV written by :func:`save_splits`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"splits file {str(p)!r} does not exist: write it with save_splits first")
    return pd.read_csv(p, dtype={"uid": str, "patient_id": str})


def check_disjoint(groups: pd.Series, parts: pd.Series) -> None:
    """Raise InputError when a group appears in more than one part (a leakage check)."""
    n = pd.DataFrame({"g": groups.astype(str).to_numpy(), "p": parts.astype(str).to_numpy()}).groupby("g")["p"].nunique()
    bad = n[n > 1]
    if len(bad):
        raise InputError(f"{len(bad)} patients appear in more than one split part (e.g. {bad.index[0]!r}): split by patient")


# --- the audit's split schemes (row positions per set) -------------------------------------------


def patient_kfold(meta: pd.DataFrame, *, k: int = 5, val_fraction: float = 0.15, seed: int = 0,
                  patient_column: str = "patient_id") -> list[dict[str, np.ndarray]]:
    """``k`` patient-grouped splits: split ``f`` tests on patient fold ``f``; ``val_fraction`` of the
    remaining patients validate, the rest train. Returns row positions per set."""
    if k < 2:
        raise InputError(f"splits must be >= 2 for patient folds; got {k}")
    pid = meta[patient_column].astype(str).to_numpy()
    patients = np.array(sorted(set(pid)))
    if len(patients) < k:
        raise InputError(f"{len(patients)} patients cannot make {k} folds: lower splits or add data")
    perm = patients[numpy_rng(seed, "audit-folds").permutation(len(patients))]
    fold = dict(zip(perm, np.arange(len(perm)) % k))
    fold_of_row = np.array([fold[p] for p in pid])
    out = []
    for f in range(k):
        rest = np.array(sorted(set(pid[fold_of_row != f])))
        rest = rest[numpy_rng(seed, "audit-val", f).permutation(len(rest))]
        val_pat = set(rest[: max(1, int(round(val_fraction * len(rest))))])
        is_val = np.array([p in val_pat for p in pid]) & (fold_of_row != f)
        out.append({"train": np.flatnonzero((fold_of_row != f) & ~is_val), "val": np.flatnonzero(is_val),
                    "test": np.flatnonzero(fold_of_row == f)})
    return out


#: Split schemes of the audit: the authors' fixed test set + GroupShuffleSplit train/val
#: ("fixed-test", default), patient k-fold cross-validation ("kfold", medbench's earlier folds; the
#: test set changes per split), or scikit-learn's StratifiedGroupKFold ("stratified-kfold": k-fold
#: whose test folds keep the label mix).
SPLIT_SCHEMES = ("fixed-test", "kfold", "stratified-kfold")


def patient_fixed_test(meta: pd.DataFrame, *, k: int = 5, val_fraction: float = 0.15,
                       test_fraction: float = 0.25, seed: int = 0,
                       patient_column: str = "patient_id") -> list[dict[str, np.ndarray]]:
    """Source Matters' splits: one fixed patient-grouped test set, then ``k`` scikit-learn
    ``GroupShuffleSplit`` train/val splits of the rest (``val_fraction`` of the patients, 0.15 in
    the authors' ``gender.py``). ``test_fraction`` of the patients test (about 0.25 in the
    authors' released chest14 files: 68 of 270 patients). Returns row positions per set."""
    from sklearn.model_selection import GroupShuffleSplit

    if k < 1:
        raise InputError(f"splits must be >= 1; got {k}")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(f) < 1.0:
            raise InputError(f"{name} must lie in (0, 1); got {f}")
    pid = meta[patient_column].astype(str).to_numpy()
    if len(set(pid)) < 3:
        raise InputError(f"{len(set(pid))} patients cannot make train/val/test sets: add data")
    rows = np.arange(len(meta))
    outer = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    rest, test = next(outer.split(rows, groups=pid))
    inner = GroupShuffleSplit(n_splits=k, test_size=val_fraction, random_state=seed)
    out = []
    for tr, va in inner.split(rest, groups=pid[rest]):
        out.append({"train": np.sort(rest[tr]), "val": np.sort(rest[va]), "test": np.sort(test)})
    return out


def stratified_group_kfold(meta: pd.DataFrame, *, k: int = 5, val_fraction: float = 0.15, seed: int = 0,
                           patient_column: str = "patient_id", label_column: str = "label"
                           ) -> list[dict[str, np.ndarray]]:
    """``k`` patient-grouped splits on scikit-learn ``StratifiedGroupKFold(shuffle=True)``: split
    ``f`` tests on fold ``f`` (each fold keeps the label mix as far as whole patients allow);
    ``GroupShuffleSplit`` puts ``val_fraction`` of the remaining patients in val. Returns row
    positions per set."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    if k < 2:
        raise InputError(f"splits must be >= 2 for patient folds; got {k}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise InputError(f"val_fraction must lie in (0, 1); got {val_fraction}")
    for col in (patient_column, label_column):
        if col not in meta.columns:
            raise InputError(f"stratified folds need a {col!r} column (columns: {list(meta.columns)})")
    pid = meta[patient_column].astype(str).to_numpy()
    if len(set(pid)) < k + 1:
        raise InputError(f"{len(set(pid))} patients cannot make {k} folds plus a validation set: lower splits or add data")
    y = meta[label_column].astype(str).to_numpy()
    rows = np.arange(len(meta))
    outer = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = []
    for f, (rest, test) in enumerate(outer.split(rows, y, groups=pid)):
        inner = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=derive_seed(seed, "val", f) % 2**32)
        tr, va = next(inner.split(rest, groups=pid[rest]))
        out.append({"train": np.sort(rest[tr]), "val": np.sort(rest[va]), "test": np.sort(test)})
    return out


def make_splits(meta: pd.DataFrame, *, scheme: str = "fixed-test", k: int = 5, val_fraction: float = 0.15,
                test_fraction: float = 0.25, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Splits by ``scheme`` (:data:`SPLIT_SCHEMES`): :func:`patient_fixed_test`,
    :func:`patient_kfold` or :func:`stratified_group_kfold`. Returns row positions per set."""
    if scheme == "stratified-kfold":
        return stratified_group_kfold(meta, k=max(2, k), val_fraction=val_fraction, seed=seed)
    if scheme == "fixed-test":
        return patient_fixed_test(meta, k=k, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if scheme == "kfold":
        return patient_kfold(meta, k=max(2, k), val_fraction=val_fraction, seed=seed)
    from medbench.registry import did_you_mean

    raise InputError(f"split scheme {scheme!r}: {did_you_mean(str(scheme), SPLIT_SCHEMES)}")
