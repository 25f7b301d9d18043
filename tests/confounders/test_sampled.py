"""Subgroup prevalence sampling (the paper's sex experiment)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from confounders.sampled import SAMPLED, add_age_band, build_prevalence_splits
from confounders.taxonomy import validate_path
from medbench.errors import InputError


@pytest.fixture(scope="module")
def nih_like() -> pd.DataFrame:
    """An NIH-like table: 700 patients, 1-3 images each, PA/AP views, three findings."""
    rng = np.random.default_rng(42)
    rows = []
    for p in range(700):
        sex = "F" if rng.random() < 0.5 else "M"
        age = int(rng.integers(20, 90))
        for k in range(int(rng.integers(1, 4))):
            rows.append({"uid": f"img{p:04d}_{k}", "patient_id": f"pat{p:04d}", "sex": sex, "age": age,
                         "view": "PA" if rng.random() < 0.8 else "AP",
                         "finding": rng.choice(["Atelectasis", "No Finding", "Effusion"], p=[0.35, 0.5, 0.15])})
    return pd.DataFrame(rows)


def _split(df: pd.DataFrame, p: float, **kw) -> list:
    return build_prevalence_splits(df, p=p, column="sex", group="F", label_column="finding",
                                   positive="Atelectasis", negative="No Finding", view_column="view",
                                   n_pos=40, n_neg=40, **kw)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_counts_follow_p_and_test_is_reversed(nih_like: pd.DataFrame, p: float) -> None:
    splits = _split(nih_like, p)
    assert len(splits) == 5
    for s in splits:
        tr = s.train
        assert (tr.view == "PA").all() and tr.finding.isin(["Atelectasis", "No Finding"]).all()
        pos, neg = tr[tr.finding == "Atelectasis"], tr[tr.finding == "No Finding"]
        assert len(pos) == 40 and len(neg) == 40
        assert (pos.sex == "F").sum() == round(p * 40) and (pos.sex == "M").sum() == 40 - round(p * 40)
        assert (neg.sex == "M").all(), "the paper: training negatives are all male at every p"
        vpos, vneg = s.val[s.val.target == 1], s.val[s.val.target == 0]
        assert (vneg.sex == "M").all() and abs((vpos.sex == "F").mean() - p) <= 0.5 / len(vpos) + 1e-9
        assert (tr.target == (tr.finding == "Atelectasis")).all()
        # o.o.d. test: male positives + female negatives only, and all such PA rows of the test fold
        t = s.test_ood
        assert set(zip(t.finding, t.sex)) == {("Atelectasis", "M"), ("No Finding", "F")}
        fold_pat = set(t.patient_id) | set(s.test_iid.patient_id)
        pool = nih_like[nih_like.patient_id.isin(fold_pat) & (nih_like.view == "PA")]
        expect = pool[((pool.finding == "Atelectasis") & (pool.sex == "M"))
                      | ((pool.finding == "No Finding") & (pool.sex == "F"))]
        assert set(expect.uid) == set(t.uid)
        # the i.i.d. test keeps the training association
        ti = s.test_iid
        tpos = ti[ti.target == 1]
        assert abs((tpos.sex == "F").mean() - p) <= 0.5 / max(len(tpos), 1) + 1e-9
        assert (ti[ti.target == 0].sex == "M").all()
        # the clean test: female share 0.5 in both classes (no association), the same at every p
        tc = s.test_clean
        for cls in (0, 1):
            part = tc[tc.target == cls]
            assert len(part) > 0 and abs((part.sex == "F").mean() - 0.5) <= 0.5 / len(part) + 1e-9
        assert not set(tc.patient_id) & (set(tr.patient_id) | set(s.val.patient_id)) and (tc.view == "PA").all()
        # no patient in two sets
        sets = [set(tr.patient_id), set(s.val.patient_id), set(t.patient_id) | set(ti.patient_id)]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_negative_policies_are_options_and_views_are_detected(nih_like: pd.DataFrame) -> None:
    comp = _split(nih_like, 0.2, negatives="complement")[0].train
    assert (comp[comp.target == 0].sex == "F").sum() == round(0.8 * 40)
    bal = _split(nih_like, 0.2, negatives="balanced")[0].train
    assert (bal[bal.target == 0].sex == "F").sum() == 20
    with pytest.raises(InputError, match="negatives must be"):
        _split(nih_like, 0.2, negatives="female")
    kw = dict(p=0.5, column="sex", group="F", label_column="finding", positive="Atelectasis",
              negative="No Finding", n_pos=20, n_neg=20)
    nih_named = nih_like.rename(columns={"view": "View Position"})
    auto = build_prevalence_splits(nih_named, **kw)[0]  # the NIH column name is found by itself
    assert all((df["View Position"] == "PA").all() for df in auto.sets().values())
    off = build_prevalence_splits(nih_named, view_column=None, **kw)
    assert any((s.test_ood["View Position"] == "AP").any() for s in off)


def test_p_half_gives_equal_female_and_male_positives(nih_like: pd.DataFrame) -> None:
    s = _split(nih_like, 0.5)[0]
    c = s.counts().set_index(["set", "target"])
    assert c.loc[("train", 1), "in_group"] == c.loc[("train", 1), "other"] == 20
    assert c.loc[("test_ood", 1), "in_group"] == 0 and c.loc[("test_ood", 0), "other"] == 0


def test_test_folds_partition_patients_and_sampling_is_nested(nih_like: pd.DataFrame) -> None:
    lo, hi = _split(nih_like, 0.5), _split(nih_like, 0.8)
    test_pats = [set(s.test_ood.patient_id) | set(s.test_iid.patient_id) for s in lo]
    for a in range(5):
        for b in range(a + 1, 5):
            assert not (test_pats[a] & test_pats[b])
    for a, b in zip(lo, hi):
        fa = set(a.train.uid[(a.train.target == 1) & (a.train.sex == "F")])
        fb = set(b.train.uid[(b.train.target == 1) & (b.train.sex == "F")])
        assert fa <= fb
    again = _split(nih_like, 0.8)
    assert all(x.train.uid.tolist() == y.train.uid.tolist() for x, y in zip(hi, again))


def test_default_sizes_do_not_depend_on_p(nih_like: pd.DataFrame) -> None:
    kw = dict(column="sex", group="F", label_column="finding", positive="Atelectasis", negative="No Finding")
    sizes = {p: len(build_prevalence_splits(nih_like, p=p, **kw)[1].train) for p in (0.0, 0.5, 1.0)}
    assert len(set(sizes.values())) == 1 and sizes[0.0] > 100


def test_bad_input(nih_like: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="p must"):
        _split(nih_like, 1.5)
    with pytest.raises(InputError, match="missing column"):
        build_prevalence_splits(nih_like.drop(columns="sex"), p=0.5, label_column="finding")
    with pytest.raises(InputError, match="lower n_pos"):
        build_prevalence_splits(nih_like, p=1.0, label_column="finding", positive="Atelectasis",
                                negative="No Finding", n_pos=10_000)


def test_registry_and_age_band(nih_like: pd.DataFrame) -> None:
    for name in SAMPLED:
        validate_path(SAMPLED.get(name).miccat)
    banded = add_age_band(nih_like)
    assert set(banded.age_band) == {"0-40", "40-60", "60+"}
    assert (banded.age_band[banded.age >= 60] == "60+").all()
    s = build_prevalence_splits(banded, p=1.0, column="age_band", group="60+", label_column="finding",
                                positive="Atelectasis", negative="No Finding", n_pos=20, n_neg=20)[0]
    assert (s.train[s.train.target == 1].age >= 60).all()
