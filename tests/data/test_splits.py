"""Patient-grouped splits: disjoint groups, balance, stratification, determinism, CSV round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench.data.splits import (
    check_disjoint,
    group_kfold,
    kfold_parts,
    load_splits,
    repeated_splits,
    save_splits,
    train_val_test,
)
from medbench.data.synthetic_cxr import cxr_records, records_frame
from medbench.errors import InputError


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return records_frame(cxr_records(300, seed=0))


def _parts_per_patient(df: pd.DataFrame, parts: pd.Series) -> pd.Series:
    return pd.DataFrame({"p": df["patient_id"], "s": parts}).groupby("p")["s"].nunique()


def test_group_kfold(table: pd.DataFrame) -> None:
    folds = group_kfold(table, k=5, seed=0)
    assert folds.index.equals(table.index) and set(folds) == set(range(5))
    assert (_parts_per_patient(table, folds) == 1).all()
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= 3  # patients hold at most 3 images
    pos = table.groupby(folds)["label"].mean()
    assert (pos - table["label"].mean()).abs().max() < 0.06
    np.testing.assert_array_equal(folds, group_kfold(table, k=5, seed=0))
    assert (folds != group_kfold(table, k=5, seed=1)).any()
    # independent check of disjointness: sets of patients per fold do not intersect
    sets = [set(table["patient_id"][folds == f]) for f in range(5)]
    assert all(not (sets[i] & sets[j]) for i in range(5) for j in range(i + 1, 5))
    rnd = kfold_parts(folds, 2)
    assert set(rnd[folds == 2]) == {"test"} and set(rnd[folds == 3]) == {"val"}
    assert set(rnd[~folds.isin([2, 3])]) == {"train"}


def test_train_val_test(table: pd.DataFrame) -> None:
    s = train_val_test(table, val=0.15, test=0.2, seed=0)
    assert set(s) == {"train", "val", "test"}
    assert (_parts_per_patient(table, s) == 1).all()
    frac = s.value_counts(normalize=True)
    assert frac["test"] == pytest.approx(0.2, abs=0.03) and frac["val"] == pytest.approx(0.15, abs=0.03)
    pos = table.groupby(s)["label"].mean()
    assert (pos - table["label"].mean()).abs().max() < 0.08
    assert s.equals(train_val_test(table, val=0.15, test=0.2, seed=0))
    assert not s.equals(train_val_test(table, val=0.15, test=0.2, seed=1))
    no_val = train_val_test(table, val=0.0, test=0.3, seed=0, stratify=None)
    assert set(no_val) == {"train", "test"}


def test_repeated_splits_and_csv(table: pd.DataFrame, tmp_path: Path) -> None:
    reps = repeated_splits(table, 3, seed=7)
    assert len(reps) == 3 and [r.name for r in reps] == ["split_0", "split_1", "split_2"]
    assert not reps[0].equals(reps[1])
    for r in reps:
        check_disjoint(table["patient_id"], r)
    again = repeated_splits(table, 3, seed=7)
    assert all(a.equals(b) for a, b in zip(reps, again))
    path = save_splits(table, [*reps, group_kfold(table, k=4)], tmp_path / "splits.csv")
    back = load_splits(path)
    assert list(back.columns) == ["uid", "patient_id", "split_0", "split_1", "split_2", "fold"]
    assert back["uid"].tolist() == table["uid"].tolist()
    assert back["split_1"].tolist() == reps[1].tolist()


def test_leak_detection_and_bad_input(table: pd.DataFrame) -> None:
    leaky = pd.Series(np.where(np.arange(len(table)) % 2 == 0, "train", "test"))
    with pytest.raises(InputError, match="more than one"):
        check_disjoint(table["patient_id"], leaky)
    with pytest.raises(InputError, match="'subject'"):
        group_kfold(table, group="subject")
    with pytest.raises(InputError, match="k must"):
        group_kfold(table.iloc[:4], k=5)
    with pytest.raises(InputError, match="val and test"):
        train_val_test(table, val=0.5, test=0.5)
    missing = table.copy()
    missing.loc[3, "patient_id"] = None
    with pytest.raises(InputError, match="missing"):
        train_val_test(missing)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=6, max_size=40),
    k=st.integers(2, 5),
    seed=st.integers(0, 10_000),
)
def test_property_groups_never_split(sizes: list[int], k: int, seed: int) -> None:
    groups = np.repeat([f"p{i}" for i in range(len(sizes))], sizes)
    labels = np.repeat([(i * 7 + seed) % 3 == 0 for i in range(len(sizes))], sizes).astype(int)
    df = pd.DataFrame({"patient_id": groups, "label": labels})
    if k <= len(sizes):
        folds = group_kfold(df, k=k, seed=seed)
        assert (_parts_per_patient(df, folds) == 1).all()
        assert folds.nunique() == k
    s = train_val_test(df, seed=seed)
    assert (_parts_per_patient(df, s) == 1).all()
