"""Evaluation statistics: AUC with patient-level bootstrap CIs, paired tests, calibration, subgroups.

All functions take plain arrays (labels ``y`` in {0, 1} or [0, C), probabilities ``p``) and never
touch global RNG state: resampling uses ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from medbench.errors import InputError

__all__ = [
    "AucCI",
    "auc",
    "keras_auc",
    "bootstrap_auc_ci",
    "paired_bootstrap_test",
    "permutation_test",
    "ttest_folds",
    "permutation_ttest_folds",
    "permutation_ttest_ind",
    "format_p",
    "ece",
    "reliability_curve",
    "subgroup_auc",
    "age_band",
]


def _as_binary(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.shape[0] != p.shape[0]:
        raise InputError(f"labels ({y.shape[0]}) and scores ({p.shape[0]}) differ in length")
    if y.ndim != 1 or p.ndim != 1:
        raise InputError("binary AUC needs 1-D labels and scores; pass p[:, 1] for a 2-class softmax")
    if not np.all(np.isfinite(p)):
        raise InputError("scores contain NaN or inf: check the model outputs")
    if np.any(pd.isna(y)):
        raise InputError("labels contain missing values: drop or fill them first")
    vals = np.unique(y)
    if not np.all(np.isin(vals, [0, 1])):
        raise InputError(f"binary labels must be 0/1, got values {vals[:5].tolist()}")
    return y.astype(np.int64), p


def _auc_binary(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when one class is absent."""
    n1 = int(y.sum())
    n0 = y.shape[0] - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = stats.rankdata(p)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auc(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray, *, average: str = "macro") -> float:
    """ROC AUC. Binary when ``p`` is 1-D; one-vs-rest (``average`` macro/weighted) when ``p`` is (N, C).

    Raises:
        InputError: on NaN scores, missing labels, or a single class present.
    """
    p_arr = np.asarray(p, dtype=np.float64)
    if p_arr.ndim == 2:
        y_arr = np.asarray(y).astype(np.int64)
        c = p_arr.shape[1]
        if np.any((y_arr < 0) | (y_arr >= c)):
            raise InputError(f"labels must lie in [0, {c}) for {c} score columns")
        per, weights = [], []
        for k in range(c):
            a = _auc_binary((y_arr == k).astype(np.int64), p_arr[:, k])
            if not np.isnan(a):
                per.append(a)
                weights.append(float((y_arr == k).sum()))
        if not per:
            raise InputError("AUC is undefined: every class is absent or the only one present")
        w = np.asarray(weights) if average == "weighted" else np.ones(len(per))
        return float(np.average(per, weights=w))
    y_arr, p_arr = _as_binary(y, p_arr)
    value = _auc_binary(y_arr, p_arr)
    if np.isnan(value):
        raise InputError("AUC is undefined with only one class present: the test set needs both labels")
    return value


def keras_auc(y: np.ndarray, p: np.ndarray, *, num_thresholds: int | None = None) -> float:
    """Keras' default AUC on one-hot targets: all columns flattened into one binary problem.

    Published numbers computed with ``tf.keras.metrics.AUC()`` on softmax outputs use this "micro"
    AUC, which differs from the per-class AUC. With ``num_thresholds`` (Keras uses 200) the ROC is
    evaluated at that many evenly spaced thresholds and integrated with the trapezoid rule, as Keras
    does; without it the exact flattened AUC is returned.

    Args:
        y: Integer labels (N,) or one-hot (N, C).
        p: Probabilities (N, C).
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 2:
        raise InputError("keras_auc needs (N, C) probabilities")
    onehot = y if y.ndim == 2 else np.eye(p.shape[1], dtype=np.int64)[y.astype(np.int64)]
    yf, pf = onehot.ravel().astype(np.int64), p.ravel()
    if num_thresholds is None:
        return auc(yf, pf)
    eps = 1e-7
    thr = np.concatenate([[-eps], np.linspace(0, 1, num_thresholds)[1:-1], [1 + eps]])
    pos = yf == 1
    tpr = np.array([(pf[pos] > t).mean() for t in thr])
    fpr = np.array([(pf[~pos] > t).mean() for t in thr])
    return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2.0))


@dataclass(frozen=True)
class AucCI:
    """An AUC with a percentile bootstrap confidence interval."""

    auc: float
    lo: float
    hi: float
    level: float
    n_boot: int
    resampled_by: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _cluster_indices(groups: Sequence[object] | np.ndarray | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    codes, uniq = pd.factorize(pd.Series(np.asarray(groups)).astype(str), sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(len(uniq))]


class _WeightedAuc:
    """Mann-Whitney AUCs of many cluster resamples at once, as sample weights (draw counts).

    A resample's AUC with average ranks for ties equals the weighted pairwise form
    ``sum_{i pos, j neg} w_i w_j [p_i > p_j] + 0.5 [p_i = p_j]`` over ``W_pos W_neg``, with ``w`` the
    number of times each sample's cluster was drawn. Samples are sorted by score once; per resample
    the cost is a few passes over ``n`` numbers instead of a concatenation and a rank sort.
    """

    def __init__(self, y: np.ndarray, clusters: list[np.ndarray]) -> None:
        self.n_clusters = len(clusters)
        self.cluster_of = np.empty(len(y), dtype=np.int64)
        for c, members in enumerate(clusters):
            self.cluster_of[members] = c
        self.y = y.astype(bool)

    def __call__(self, picks: np.ndarray, p: np.ndarray) -> np.ndarray:
        """AUC (NaN where a class is absent) of each row of cluster ``picks`` (B, K) for scores ``p``."""
        order = np.argsort(p, kind="stable")
        ps, ys, cl = p[order], self.y[order], self.cluster_of[order]
        starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # first sample of each tied score level
        rows = max(1, 4_000_000 // max(len(p), self.n_clusters))  # bounded memory: rows x n floats
        out = np.empty(picks.shape[0])
        for r0 in range(0, picks.shape[0], rows):
            block = picks[r0 : r0 + rows]
            b, k = block.shape[0], self.n_clusters
            flat = (np.arange(b)[:, None] * k + block).ravel()
            counts = np.bincount(flat, minlength=b * k).reshape(b, k).astype(np.float64)
            w = counts[:, cl]  # (b, n) draw counts, samples sorted by score
            w_pos = np.add.reduceat(np.where(ys, w, 0.0), starts, axis=1)  # (b, levels)
            w_neg = np.add.reduceat(np.where(ys, 0.0, w), starts, axis=1)
            neg_below = np.cumsum(w_neg, axis=1) - w_neg
            tot_pos, tot_neg = w_pos.sum(axis=1), w_neg.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                a = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1) / (tot_pos * tot_neg)
            a[(tot_pos == 0) | (tot_neg == 0)] = np.nan
            out[r0 : r0 + b] = a
        return out


def _bootstrap_aucs(y: np.ndarray, scores: list[np.ndarray], clusters: list[np.ndarray], n_boot: int,
                    seed: int, combine=None) -> np.ndarray:
    """``n_boot`` bootstrap values of ``combine(*AUCs of scores)`` (default: the one AUC), vectorised.

    Draws the same cluster resamples, in the same order, as :func:`_bootstrap` (one generator
    stream, resamples lacking a class skipped and redrawn), so results equal the resample-by-resample
    loop up to floating-point rounding.
    """
    rng = np.random.default_rng(seed)
    k = len(clusters)
    weighted = _WeightedAuc(y, clusters)
    kept: list[np.ndarray] = []
    n_kept = tries = 0
    chunk = n_boot
    while n_kept < n_boot:
        picks = rng.integers(0, k, size=(chunk, k))
        aucs = [weighted(picks, s) for s in scores]
        values = aucs[0] if combine is None else combine(*aucs)
        ok = ~np.isnan(values)
        take = values[ok][: n_boot - n_kept]
        # rows after the last one needed were drawn ahead; the loop would not have drawn them, but
        # nothing reads the generator afterwards, so the kept values are the loop's
        tries += int(np.flatnonzero(ok)[len(take) - 1]) + 1 if len(take) else chunk
        kept.append(take)
        n_kept += len(take)
        if n_kept < n_boot and tries > 20 * n_boot:
            raise InputError("too few positives/negatives to bootstrap the AUC")
        chunk = max(16, 2 * (n_boot - n_kept))
    return np.concatenate(kept)


def bootstrap_auc_ci(
    y: Sequence[float] | np.ndarray,
    p: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[object] | np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> AucCI:
    """Percentile bootstrap CI of the binary AUC, resampling whole patients when ``groups`` is given.

    Resamples lacking one of the classes are redrawn (they have no AUC).
    """
    y_arr, p_arr = _as_binary(y, p)
    point = auc(y_arr, p_arr)
    clusters = _cluster_indices(groups, y_arr.shape[0])
    boots = _bootstrap_aucs(y_arr, [p_arr], clusters, n_boot, seed)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(boots, [a, 1.0 - a])
    return AucCI(point, float(lo), float(hi), level, n_boot, "patient" if groups is not None else "image")


def paired_bootstrap_test(
    y: Sequence[float] | np.ndarray,
    p1: Sequence[float] | np.ndarray,
    p2: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[object] | np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of ``AUC(p1) - AUC(p2)`` on the same cases.

    Returns:
        ``delta``, CI bounds ``lo``/``hi``, a two-sided ``p_value`` and its floor ``p_min``. The
        p-value is twice the smaller tail count around zero with the +1 correction,
        ``2 (k + 1) / (B + 1)`` capped at 1, so it is never 0; ``p_min = 2 / (B + 1)`` is the
        smallest value it can take (print it as "< p_min", see :func:`format_p`).
    """
    y_arr, a1 = _as_binary(y, p1)
    _, a2 = _as_binary(y, p2)
    delta = auc(y_arr, a1) - auc(y_arr, a2)
    clusters = _cluster_indices(groups, y_arr.shape[0])
    diffs_arr = _bootstrap_aucs(y_arr, [a1, a2], clusters, n_boot, seed, combine=lambda u, v: u - v)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(diffs_arr, [a, 1.0 - a])
    tail = min(int((diffs_arr <= 0).sum()), int((diffs_arr >= 0).sum()))
    p_val = min(1.0, 2.0 * (tail + 1) / (n_boot + 1))
    return {"delta": float(delta), "lo": float(lo), "hi": float(hi), "p_value": float(p_val),
            "p_min": 2.0 / (n_boot + 1)}


def permutation_test(
    y: Sequence[float] | np.ndarray,
    p1: Sequence[float] | np.ndarray,
    p2: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[object] | np.ndarray | None = None,
    n_perm: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired permutation test of equal AUCs: swap the two models' scores per patient at random.

    Returns ``delta`` (AUC1 - AUC2) and the two-sided ``p_value`` with the +1 correction.
    """
    y_arr, a1 = _as_binary(y, p1)
    _, a2 = _as_binary(y, p2)
    observed = auc(y_arr, a1) - auc(y_arr, a2)
    clusters = _cluster_indices(groups, y_arr.shape[0])
    cluster_of = np.empty(y_arr.shape[0], dtype=np.int64)
    for k, idx in enumerate(clusters):
        cluster_of[idx] = k
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        swap = rng.integers(0, 2, size=len(clusters)).astype(bool)[cluster_of]
        s1 = np.where(swap, a2, a1)
        s2 = np.where(swap, a1, a2)
        if abs(_auc_binary(y_arr, s1) - _auc_binary(y_arr, s2)) >= abs(observed) - 1e-12:
            hits += 1
    return {"delta": float(observed), "p_value": (hits + 1) / (n_perm + 1)}


def ttest_folds(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired t-test over folds/splits (``scipy.stats.ttest_rel``) of metric ``a`` against ``b``."""
    a_arr, b_arr = np.asarray(a, float), np.asarray(b, float)
    if a_arr.shape != b_arr.shape or a_arr.size < 2:
        raise InputError("ttest_folds needs two equal-length sequences of at least 2 per-split values")
    res = stats.ttest_rel(a_arr, b_arr)
    return {"mean_diff": float(np.mean(a_arr - b_arr)), "t": float(res.statistic), "p_value": float(res.pvalue)}


def _tstat_rows(x: np.ndarray) -> np.ndarray:
    """One-sample t of each row of ``x``; a zero-variance row gives +-inf (0 for a zero mean)."""
    sd = x.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = x.mean(axis=-1) / (sd / np.sqrt(x.shape[-1]))
        degenerate = np.sign(x.mean(axis=-1)) * np.inf
    return np.where(sd > 0, t, np.nan_to_num(degenerate, nan=0.0, posinf=np.inf, neginf=-np.inf))


def permutation_ttest_folds(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
                            n_perm: int = 10000) -> dict[str, float]:
    """Paired permutation t-test over splits (random sign flips of the per-split differences).

    medbench's extra to the paper's unpaired test (:func:`permutation_ttest_ind`). With at most
    ``n_perm`` distinct flips all ``2^k`` are enumerated and the p-value is exact; otherwise it is
    ``(hits + 1) / (n_perm + 1)``. ``p_min`` is the smallest p the design can give (``2 / 2^k``
    exact, e.g. 0.0625 for 5 splits; ``1 / (n_perm + 1)`` sampled) and ``exact`` says which.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.ndim != 1 or d.size < 2:
        raise InputError("permutation_ttest_folds needs two equal-length sequences of at least 2 paired splits")
    t_obs = float(_tstat_rows(d[None])[0])
    k = d.size
    if 2**k <= n_perm:
        signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)
        hits = int(np.sum(np.abs(_tstat_rows(signs * d[None])) >= abs(t_obs) - 1e-12))
        p, p_min, exact = hits / 2**k, 2.0 / 2**k, True
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(n_perm, k))
        hits = int(np.sum(np.abs(_tstat_rows(signs * d[None])) >= abs(t_obs) - 1e-12))
        p, p_min, exact = (hits + 1) / (n_perm + 1), 1.0 / (n_perm + 1), False
    return {"mean_diff": float(d.mean()), "t": t_obs, "p_value": float(p), "p_min": p_min, "exact": exact}


def _student_t(x: np.ndarray, y: np.ndarray, equal_var: bool) -> np.ndarray:
    """Two-sample t statistic along the last axis (Student pooled, or Welch)."""
    nx, ny = x.shape[-1], y.shape[-1]
    vx, vy = x.var(axis=-1, ddof=1), y.var(axis=-1, ddof=1)
    diff = x.mean(axis=-1) - y.mean(axis=-1)
    if equal_var:
        se = np.sqrt(((nx - 1) * vx + (ny - 1) * vy) / (nx + ny - 2) * (1.0 / nx + 1.0 / ny))
    else:
        se = np.sqrt(vx / nx + vy / ny)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / se
        degenerate = np.nan_to_num(np.sign(diff) * np.inf, nan=0.0, posinf=np.inf, neginf=-np.inf)
    return np.where(se > 0, t, degenerate)


def permutation_ttest_ind(a: Sequence[float], b: Sequence[float], *, n_perm: int = 10000, seed: int = 0,
                          equal_var: bool = True) -> dict[str, float]:
    """Unpaired permutation t-test of two sources' per-split values (Source Matters' comparison).

    The authors call ``scipy.stats.ttest_ind(a, b, permutations=10000)``: Student's t (pooled
    variance; ``equal_var=False`` gives Welch's) against its distribution over relabellings of the
    pooled values. When ``C(n_a + n_b, n_a) <= n_perm`` every relabelling is enumerated and the
    two-sided p is exact (5 vs 5: 252 relabellings, smallest p 2/252 = 0.0079); otherwise
    ``n_perm`` random relabellings give ``(hits + 1) / (n_perm + 1)``. Never 0.

    Returns:
        ``mean_diff`` (mean a - mean b), ``t``, ``p_value``, ``p_min`` (the smallest p the design
        can reach), ``exact`` and ``n_perm`` (relabellings evaluated).
    """
    from itertools import combinations
    from math import comb

    x, y = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if x.size < 2 or y.size < 2:
        raise InputError("permutation_ttest_ind needs at least 2 values per group (splits per source)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InputError("permutation_ttest_ind got NaN/inf values: drop the unfinished splits first")
    pooled = np.concatenate([x, y])
    n, na = pooled.size, x.size
    t_obs = float(_student_t(x[None], y[None], equal_var)[0])
    total = comb(n, na)
    if total <= n_perm:
        mask = np.zeros((total, n), dtype=bool)
        for r, idx in enumerate(combinations(range(n), na)):
            mask[r, list(idx)] = True
        exact = True
    else:
        rng = np.random.default_rng(seed)
        order = np.argsort(rng.random((n_perm, n)), axis=1)
        mask = np.zeros((n_perm, n), dtype=bool)
        np.put_along_axis(mask, order[:, :na], True, axis=1)
        exact = False
    xs = pooled[None].repeat(mask.shape[0], 0)[mask].reshape(-1, na)
    ys = pooled[None].repeat(mask.shape[0], 0)[~mask].reshape(-1, n - na)
    hits = int(np.sum(np.abs(_student_t(xs, ys, equal_var)) >= abs(t_obs) * (1 - 1e-12) - 1e-12))
    if exact:
        # the relabelling and its mirror (groups swapped, when sizes match) reach |t_obs| at least
        p, p_min = hits / total, (2.0 if na == n - na else 1.0) / total
    else:
        p, p_min = (hits + 1) / (n_perm + 1), 1.0 / (n_perm + 1)
    return {"mean_diff": float(x.mean() - y.mean()), "t": t_obs, "p_value": float(p), "p_min": float(p_min),
            "exact": exact, "n_perm": int(mask.shape[0])}


def format_p(p: float, p_min: float | None = None, *, exact: bool = False) -> str:
    """A p-value for reports, never "0.0": ``"< p_min"`` at a Monte-Carlo floor, 2 significant digits
    below 0.001, else 4 decimals. An exact test's floor is a real value and is printed as such."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if p_min is not None and not exact and p <= p_min * (1 + 1e-9):
        return f"< {_fmt_small(p_min)}"
    return _fmt_small(p)


def _fmt_small(v: float) -> str:
    return f"{v:.4f}" if v >= 1e-3 else f"{v:.2g}"


def reliability_curve(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray,
                      *, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width reliability bins: mean predicted probability, observed positive rate, count."""
    y_arr, p_arr = _as_binary(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p_arr, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = which == b
        rows.append({
            "bin": b, "lo": edges[b], "hi": edges[b + 1], "count": int(m.sum()),
            "mean_pred": float(p_arr[m].mean()) if m.any() else np.nan,
            "frac_pos": float(y_arr[m].mean()) if m.any() else np.nan,
        })
    return pd.DataFrame(rows)


def ece(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray, *, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |observed rate - mean prediction| over bins."""
    rel = reliability_curve(y, p, n_bins=n_bins)
    rel = rel[rel["count"] > 0]
    w = rel["count"] / rel["count"].sum()
    return float((w * (rel["frac_pos"] - rel["mean_pred"]).abs()).sum())


def age_band(age: Sequence[float] | pd.Series, edges: Sequence[int] = (0, 40, 60, 80, 200)) -> pd.Series:
    """Age bands like ``"40-59"`` (the last one ``"80+"``) from numeric ages (DICOM '045Y' parsed)."""
    s = pd.Series(age)
    if not pd.api.types.is_numeric_dtype(s):
        s = pd.to_numeric(s.astype(str).str.extract(r"(\d+)")[0], errors="coerce")
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-2], edges[1:-1])] + [f"{edges[-2]}+"]
    return pd.cut(s, bins=list(edges), right=False, labels=labels).astype(str)


def subgroup_auc(
    df: pd.DataFrame,
    by: str,
    *,
    label: str = "label",
    prob: str = "prob",
    groups: str | None = None,
    n_boot: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """AUC with bootstrap CI per value of column ``by`` (subgroups with one class get NaN AUC)."""
    for col in (by, label, prob):
        if col not in df.columns:
            raise InputError(f"column {col!r} is missing: available columns are {list(df.columns)}")
    rows = []
    for value, part in df.groupby(by, sort=True, dropna=False):
        y = part[label].to_numpy()
        row: dict[str, object] = {by: value, "n": len(part), "n_pos": int((y == 1).sum())}
        if 0 < row["n_pos"] < len(part):  # type: ignore[operator]
            ci = bootstrap_auc_ci(y, part[prob].to_numpy(), n_boot=n_boot, seed=seed,
                                  groups=None if groups is None else part[groups].to_numpy())
            row.update(auc=ci.auc, lo=ci.lo, hi=ci.hi)
        else:
            row.update(auc=np.nan, lo=np.nan, hi=np.nan)
        rows.append(row)
    return pd.DataFrame(rows)
