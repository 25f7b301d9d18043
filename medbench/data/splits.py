"""Patient-grouped splits: k folds and repeated train/val/test shuffles, saved as CSV.

No group (patient) ever lands in two parts. Groups are shuffled with a generator seeded from
``seed`` and, where a ``stratify`` column is given, dealt out per stratum (a group's stratum is its
most frequent label) so that every part keeps the label mix. Greedy assignment by image count keeps
part sizes balanced even when patients have several images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medbench.errors import InputError
from medbench.utils.files import atomic_path
from medbench.utils.rng import numpy_rng

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


def group_kfold(
    df: pd.DataFrame, *, group: str = "patient_id", k: int = 5, seed: int = 0, stratify: str | None = "label"
) -> pd.Series:
    """Assign every row to one of ``k`` folds, keeping each group in one fold.

    Args:
        df: Table with a ``group`` column (and ``stratify`` column unless None).
        group: Column identifying the patient.
        k: Number of folds (2 <= k <= number of groups).
        seed: Seed of the group shuffle.
        stratify: Column whose mix each fold keeps (None: no stratification).

    Returns:
        ``pd.Series`` of int fold ids in ``[0, k)``, indexed like ``df``, named ``"fold"``.
    """
    g = _groups(df, group, stratify)
    k = int(k)
    if k < 2 or k > len(g):
        raise InputError(f"k must lie in [2, number of groups = {len(g)}] (got {k})")
    rng = numpy_rng(seed, "group_kfold", k)
    total = np.zeros(k)
    fold_of: dict[str, int] = {}
    for part in _shuffled_strata(g, rng):
        in_stratum = np.zeros(k)
        for key, size in zip(part.index, part["size"]):
            # fewest images of this stratum, then fewest overall, then a seeded tie-break
            order = np.lexsort((rng.random(k), total, in_stratum))
            f = int(order[0])
            fold_of[key] = f
            in_stratum[f] += size
            total[f] += size
    folds = df[group].astype(str).map(fold_of).astype("int64")
    folds.name = "fold"
    return folds


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


def repeated_splits(
    df: pd.DataFrame,
    n_repeats: int,
    *,
    group: str = "patient_id",
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    stratify: str | None = "label",
) -> list[pd.Series]:
    """``n_repeats`` independent grouped train/val/test shuffles (repeat ``r`` uses seed ``(seed, r)``)."""
    if int(n_repeats) < 1:
        raise InputError(f"n_repeats must be >= 1 (got {n_repeats})")
    out = []
    for r in range(int(n_repeats)):
        s = train_val_test(df, group=group, val=val, test=test, seed=int(numpy_rng(seed, "repeat", r).integers(2**62)), stratify=stratify)
        s.name = f"split_{r}"
        out.append(s)
    return out


def kfold_parts(folds: pd.Series, fold: int, *, val_fold: int | None = None) -> pd.Series:
    """Turn fold ids into "train"/"val"/"test" for one round: ``fold`` is test, ``val_fold``
    (default: the next fold) is val, the rest train."""
    k = int(folds.max()) + 1
    vf = (int(fold) + 1) % k if val_fold is None else int(val_fold)
    out = pd.Series(np.where(folds == fold, "test", np.where(folds == vf, "val", "train")), index=folds.index, name="split")
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
