"""Patient-grouped splits: disjoint groups, balance, stratification, determinism, CSV round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medbench.data.splits import (
    check_disjoint,
    load_splits,
    make_splits,
    patient_kfold,
    save_splits,
    stratified_group_kfold,
    train_val_test,
)
from medbench.data.synthetic_cxr import cxr_records, records_frame
from medbench.errors import InputError


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return records_frame(cxr_records(300, seed=0))


def _parts_per_patient(df: pd.DataFrame, parts: pd.Series) -> pd.Series:
    return pd.DataFrame({"p": df["patient_id"], "s": parts}).groupby("p")["s"].nunique()


def test_stratified_group_kfold(table: pd.DataFrame) -> None:
    splits = stratified_group_kfold(table, k=5, val_fraction=0.15, seed=0)
    pid = table["patient_id"].astype(str).to_numpy()
    n_rows = len(table)
    tests = np.concatenate([sp["test"] for sp in splits])
    assert np.array_equal(np.sort(tests), np.arange(n_rows)), "the test folds partition the rows"
    overall = table["label"].mean()
    for sp in splits:
        sets = [set(pid[sp[s]]) for s in ("train", "val", "test")]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        assert len(sp["train"]) + len(sp["val"]) + len(sp["test"]) == n_rows
        # GroupShuffleSplit: ceil(0.15 * groups left) patients validate
        assert len(sets[1]) == math.ceil(0.15 * (len(set(pid)) - len(sets[2])))
        # stratified: a test fold of ~60 images keeps the positive rate (binomial SD ~0.065 for a
        # random fold; stratification must do clearly better)
        assert abs(table["label"].to_numpy()[sp["test"]].mean() - overall) < 0.05
    again = stratified_group_kfold(table, k=5, val_fraction=0.15, seed=0)
    assert all(np.array_equal(a[s], b[s]) for a, b in zip(splits, again) for s in a)
    via_scheme = make_splits(table, scheme="stratified-kfold", k=5, val_fraction=0.15, seed=0)  # the audit's option
    assert all(np.array_equal(a[s], b[s]) for a, b in zip(splits, via_scheme) for s in a)
    other = stratified_group_kfold(table, k=5, val_fraction=0.15, seed=1)
    assert any(not np.array_equal(a["test"], b["test"]) for a, b in zip(splits, other))


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


def test_splits_csv_round_trip(table: pd.DataFrame, tmp_path: Path) -> None:
    reps = [train_val_test(table, seed=r).rename(f"split_{r}") for r in range(3)]
    for r in reps:
        check_disjoint(table["patient_id"], r)
    path = save_splits(table, reps, tmp_path / "splits.csv")
    back = load_splits(path)
    assert list(back.columns) == ["uid", "patient_id", "split_0", "split_1", "split_2"]
    assert back["uid"].tolist() == table["uid"].tolist()
    assert back["split_1"].tolist() == reps[1].tolist()


def test_leak_detection_and_bad_input(table: pd.DataFrame) -> None:
    leaky = pd.Series(np.where(np.arange(len(table)) % 2 == 0, "train", "test"))
    with pytest.raises(InputError, match="more than one"):
        check_disjoint(table["patient_id"], leaky)
    with pytest.raises(InputError, match="'subject'"):
        train_val_test(table, group="subject")
    with pytest.raises(InputError, match="cannot make 5 folds"):
        stratified_group_kfold(table.iloc[:4], k=5)
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
    if k < len(sizes):
        for sp in stratified_group_kfold(df, k=k, seed=seed) + patient_kfold(df, k=k, seed=seed):
            parts = pd.Series("", index=df.index)
            for name in ("train", "val", "test"):
                parts.iloc[sp[name]] = name
            assert (parts != "").all() and (_parts_per_patient(df, parts) == 1).all()
    s = train_val_test(df, seed=seed)
    assert (_parts_per_patient(df, s) == 1).all()
