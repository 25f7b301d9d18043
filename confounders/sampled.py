"""Sampled (patient-level) confounders: subgroup prevalence sampling by a metadata column.

The paper's sex experiment (Source Matters, ``gender.py``): PA views only; positive = a finding
(Atelectasis), negative = No Finding. Training/validation **negatives are all from the other group
(male) at every p**; training/validation positives are drawn with fraction ``p`` from the group
(female) and ``1 - p`` from the other group. So at ``p = 0`` sex carries no label information and
at ``p = 1`` it predicts the label. The o.o.d. test set has the reversed association: positives
only from the other group (male), negatives only from the group (female). medbench adds an i.i.d.
test set with the training association and a clean test set with no association (female share 0.5
in both classes). Patients are partitioned into ``n_splits`` folds; each split tests on one fold
and trains/validates on patient-disjoint parts of the rest, so no patient is in two sets.

``negatives="complement"`` (negatives with fraction ``1 - p`` from the group) and ``"balanced"``
(0.5) are medbench alternatives, not the paper's protocol.

Example:
    >>> splits = build_prevalence_splits(meta, p=0.8, column="sex", group="F")
    >>> splits[0].train, splits[0].val, splits[0].test_ood, splits[0].counts()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from confounders.taxonomy import MiccatPath, validate_path
from medbench.errors import InputError
from medbench.registry import Registry
from medbench.utils.rng import numpy_rng

logger = logging.getLogger(__name__)


class SampledConfounderProtocol(Protocol):
    """The contract of a ``SAMPLED`` entry: a named metadata column and the group whose share
    among the positives is set to ``p`` by :func:`build_prevalence_splits`."""

    name: str
    column: str
    group: Any
    miccat: MiccatPath
    description: str


@dataclass(frozen=True)
class SampledConfounder:
    """A patient-level confounder realised by sampling on a metadata column."""

    name: str
    column: str
    group: Any
    miccat: MiccatPath
    description: str = ""


SAMPLED: Registry[SampledConfounder] = Registry("sampled confounder", protocol=SampledConfounderProtocol)
#: Negative-sampling policies of :func:`build_prevalence_splits` ("other" is the paper's).
NEGATIVES = ("other", "complement", "balanced")
#: Metadata columns searched for the view position (NIH: "View Position").
VIEW_COLUMNS = ("view_position", "View Position", "view", "ViewPosition")


def register_sampled(conf: SampledConfounder) -> SampledConfounder:
    validate_path(conf.miccat)
    return SAMPLED.add(conf.name, conf)


register_sampled(SampledConfounder("sex", "sex", "F", ("patient", "demographic", "sex"),
                                   "positives drawn with fraction p from female patients, negatives all male"))
register_sampled(SampledConfounder("age", "age_band", "60+", ("patient", "demographic", "age"),
                                   "positives drawn with fraction p from patients aged 60+"))
register_sampled(SampledConfounder("vendor", "vendor", None, ("environment", "imaging", "vendor"),
                                   "positives drawn with fraction p from one vendor (give group=)"))


def add_age_band(meta: pd.DataFrame, *, edges: tuple[float, ...] = (0, 40, 60, 200),
                 column: str = "age") -> pd.DataFrame:
    """Copy of ``meta`` with an ``age_band`` column ("0-40", "40-60", "60+" for the default edges)."""
    if column not in meta.columns:
        raise InputError(f"metadata has no {column!r} column: add patient ages to build age bands")
    labels = [f"{int(a)}-{int(b)}" for a, b in zip(edges[:-2], edges[1:-1])] + [f"{int(edges[-2])}+"]
    out = meta.copy()
    out["age_band"] = pd.cut(out[column].astype(float), list(edges), right=False, labels=labels).astype(str)
    return out


@dataclass
class PrevalenceSplit:
    """One patient-grouped split at prevalence ``p``; frames carry a 0/1 ``target`` column."""

    fold: int
    p: float
    train: pd.DataFrame
    val: pd.DataFrame
    test_iid: pd.DataFrame
    test_ood: pd.DataFrame
    column: str
    group: Any
    test_clean: pd.DataFrame | None = None

    @property
    def test(self) -> pd.DataFrame:
        """The reversed-association test set (the paper's test set)."""
        return self.test_ood

    def sets(self) -> dict[str, pd.DataFrame]:
        out = {"train": self.train, "val": self.val, "test_iid": self.test_iid, "test_ood": self.test_ood}
        if self.test_clean is not None:
            out["test_clean"] = self.test_clean
        return out

    def counts(self) -> pd.DataFrame:
        """Rows per set x target x (in group / not in group)."""
        rows = []
        for name, df in self.sets().items():
            ing = df[self.column] == self.group
            for t in (1, 0):
                rows.append({"set": name, "target": t, "in_group": int(((df.target == t) & ing).sum()),
                             "other": int(((df.target == t) & ~ing).sum())})
        return pd.DataFrame(rows)


def _take(df: pd.DataFrame, k: int, rng_keys: tuple, seed: int) -> pd.DataFrame:
    if k > len(df):
        raise InputError(
            f"need {k} rows of {rng_keys[1:]} but only {len(df)} are available: lower n_pos/n_neg or add data"
        )
    order = numpy_rng(seed, *rng_keys).permutation(len(df))
    return df.iloc[np.sort(order[:k])]


def _caps(pool: pd.DataFrame, in_group: pd.Series, negatives: str = "complement") -> tuple[int, int]:
    """Largest positive and negative counts drawable at every ``p``: per class, the smaller of the
    in-group and out-of-group row counts; with ``negatives="other"`` all out-of-group negatives."""
    pos = pool.target == 1
    cap_pos = int(min((pos & in_group).sum(), (pos & ~in_group).sum()))
    if negatives == "other":
        return cap_pos, int((~pos & ~in_group).sum())
    return cap_pos, int(min((~pos & in_group).sum(), (~pos & ~in_group).sum()))


def _sample_set(pool: pd.DataFrame, n_pos: int, n_neg: int, p_pos: float, p_neg: float,
                keys: tuple, seed: int, in_group: pd.Series) -> pd.DataFrame:
    parts = []
    for target, n, frac in ((1, n_pos, p_pos), (0, n_neg, p_neg)):
        k_g = int(round(frac * n))
        cls = pool.target == target
        parts.append(_take(pool[cls & in_group], k_g, (*keys, target, "group"), seed))
        parts.append(_take(pool[cls & ~in_group], n - k_g, (*keys, target, "other"), seed))
    return pd.concat(parts).sort_index()


def build_prevalence_splits(
    meta: pd.DataFrame,
    *,
    p: float,
    column: str = "sex",
    group: Any = "F",
    label_column: str = "label",
    positive: Any = 1,
    negative: Any = 0,
    patient_column: str = "patient_id",
    view_column: str | None = "auto",
    view: str = "PA",
    n_splits: int = 5,
    val_fraction: float = 0.15,
    n_pos: int | None = None,
    n_neg: int | None = None,
    negatives: str = "other",
    seed: int = 0,
) -> list[PrevalenceSplit]:
    """Patient-grouped splits where a fraction ``p`` of training positives comes from ``group``.

    Args:
        meta: One row per image with ``label_column``, ``column`` and ``patient_column``.
        p: Fraction of train/val/i.i.d.-test positives drawn from ``group``.
        column, group: The metadata column and its confounding value (e.g. "sex", "F").
        positive, negative: Label values of the two classes (other rows are dropped).
        view_column, view: Keep only rows whose view is ``view`` (PA, as the paper). "auto" uses the
            first of :data:`VIEW_COLUMNS` that ``meta`` has (none: no filter); None never filters.
        n_splits: Patient folds; split ``f`` tests on fold ``f``.
        val_fraction: Fraction of the non-test patients used for validation.
        n_pos, n_neg: Training positives/negatives per split (default: the largest counts that
            are feasible for every ``p``, so set sizes do not depend on ``p``); validation and
            i.i.d. test sizes follow the same rule on their own pools.
        negatives: "other" (the paper: every negative from outside ``group``, at every p),
            "complement" (fraction 1 - p from ``group``) or "balanced" (0.5); the last two are
            medbench variants.
        seed: Seed of the patient partition and the sampling (nested in ``p``).
    """
    if not 0.0 <= float(p) <= 1.0:
        raise InputError(f"p must lie in [0, 1]; got {p!r}")
    if negatives not in NEGATIVES:
        raise InputError(f"negatives must be one of {NEGATIVES}; got {negatives!r}")
    if view_column == "auto":
        view_column = next((c for c in VIEW_COLUMNS if c in meta.columns), None)
    need = [label_column, column, patient_column] + ([view_column] if view_column else [])
    missing = [c for c in need if c not in meta.columns]
    if missing:
        raise InputError(f"metadata is missing column(s) {missing}: add them (have {list(meta.columns)})")
    if n_splits < 2:
        raise InputError(f"n_splits must be >= 2; got {n_splits}")
    df = meta
    if view_column:
        df = df[df[view_column] == view]
    df = df[df[label_column].isin([positive, negative])].copy()
    if df.empty:
        raise InputError(f"no rows with {label_column} in {[positive, negative]} (and view {view!r})")
    df["target"] = (df[label_column] == positive).astype(int)
    p = float(p)
    p_neg = {"other": 0.0, "complement": 1.0 - p, "balanced": 0.5}[negatives]

    patients = np.array(sorted(df[patient_column].astype(str).unique()))
    fold_of = dict(zip(patients[numpy_rng(seed, "patients").permutation(len(patients))],
                       np.arange(len(patients)) % n_splits))
    pid = df[patient_column].astype(str)
    fold = pid.map(fold_of)
    ing_all = df[column] == group
    out = []
    for f in range(n_splits):
        test_pool = df[fold == f]
        rest_pat = np.array(sorted(set(pid[fold != f])))
        rest_pat = rest_pat[numpy_rng(seed, "val", f).permutation(len(rest_pat))]
        val_pat = set(rest_pat[: int(round(val_fraction * len(rest_pat)))])
        is_val = pid.isin(val_pat) & (fold != f)
        pools = {"train": df[(fold != f) & ~is_val], "val": df[is_val]}
        sets: dict[str, pd.DataFrame] = {}
        for name, pool in pools.items():
            ing = ing_all.loc[pool.index]
            cap_pos, cap_neg = _caps(pool, ing, negatives)
            npos = n_pos if (n_pos is not None and name == "train") else cap_pos
            nneg = n_neg if (n_neg is not None and name == "train") else cap_neg
            if name == "val" and n_pos is not None:
                npos = min(cap_pos, max(1, int(round(n_pos * val_fraction / (1 - val_fraction)))))
            if name == "val" and n_neg is not None:
                nneg = min(cap_neg, max(1, int(round(n_neg * val_fraction / (1 - val_fraction)))))
            sets[name] = _sample_set(pool, npos, nneg, p, p_neg, (name, f), seed, ing)
        ing_t = ing_all.loc[test_pool.index]
        test_ood = test_pool[((test_pool.target == 1) & ~ing_t) | ((test_pool.target == 0) & ing_t)]
        test_iid = _sample_set(test_pool, *_caps(test_pool, ing_t, negatives), p, p_neg, ("test", f), seed, ing_t)
        # no association: the same group share (0.5) in both classes, identical at every p
        test_clean = _sample_set(test_pool, *_caps(test_pool, ing_t), 0.5, 0.5, ("clean", f), seed, ing_t)
        out.append(PrevalenceSplit(f, p, sets["train"], sets["val"], test_iid, test_ood, column, group, test_clean))
        logger.debug("fold %d p=%.2f: train %d, val %d, test_iid %d, test_ood %d", f, p,
                     len(sets["train"]), len(sets["val"]), len(test_iid), len(test_ood))
    return out
