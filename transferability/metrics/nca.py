"""Neighbourhood components analysis fitted as scikit-learn fits it, with a blockwise objective.

The authors' LP (Juodelyte et al. 2024) fits ``NeighborhoodComponentsAnalysis(n_components=50,
random_state=42)``. :func:`fit_nca` runs the same algorithm: the same ``init="auto"`` choice
(LDA, PCA with ``RandomState(seed)``, or identity), the same L-BFGS-B call (``tol=1e-5``,
``maxiter=50``) and the same objective, the sum over samples of the softmax probability mass
(over all other samples, of minus the squared embedded distance) on samples of the same class.

Only the evaluation of that objective and its gradient differs. scikit-learn materialises six
N x N float64 arrays per evaluation. Here:

- The samples are sorted by class, so a row's same-class samples are one column range.
- The gradient ``2 Xe^T (W + W^T - diag(colsum W)) X`` with ``W = P * (mask - p)`` is
  accumulated without forming N x N arrays: per block of rows when every pair is computed, or
  from a sparse W.
- A probability below e^-500 (about 1e-217) of its row's largest is set to exactly 0; so are
  products with a same-class mass below 2^-150. Their effect on the sums is below 1e-200
  relative, and it keeps subnormal numbers out, which slow every later operation ~30x on x86.
  Pairs that close to the row's nearest are usually under 1% of all pairs.
- The first evaluation computes every pair, one block of rows at a time. Later ones compute half
  the distances (each unordered pair once) and keep only the pairs that can lie within that
  range, bounded by the distance to the sample that was nearest at the previous evaluation
  (visiting the samples in order of decreasing bound, so that one threshold per row suffices);
  when they are too many (over 5% of pairs), every pair is computed again.
- The PCA start is scikit-learn's randomized PCA computed in torch by the same algorithm, when
  scikit-learn would pick that solver (:func:`randomized_pca_components`).

In float64 this agrees with scikit-learn's evaluation to about 1e-13 (relative) along its whole
optimisation path; squared distances are not clamped at zero here, because the row's own squared
norm cancels in the softmax and is never added. Where L-BFGS converges the transform equals
scikit-learn's; where its 50 iterations stop first (the usual case), both fits are sensitive to
rounding and land within the same spread (``tests/transferability/test_nca.py``,
``benchmarks/transferability.py --lp-reference``).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

log = logging.getLogger(__name__)

BLOCK_ELEMENTS = 1 << 20  # ~8 MB of float64 per block of rows
LOGIT_RANGE = 500.0  # logits further below their row's maximum are clamped, then zeroed:
P_FLOOR = 2.0**-700  # e^-500 ~ 2^-721 < P_FLOOR, so every clamped entry becomes exactly 0
P_ROW_FLOOR = 2.0**-150  # a same-class mass below this scales the other terms as 0
SPARSE_FRACTION = 0.05  # above this share of candidate pairs, a block (or pass) is computed densely


def init_transform(x: np.ndarray, y: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """scikit-learn's ``init="auto"`` starting transform, (n_components, D)."""
    n, d = x.shape
    n_classes = len(np.unique(y))
    if n_components <= min(d, n_classes - 1):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        return LinearDiscriminantAnalysis(n_components=n_components).fit(x, y).scalings_.T[:n_components]
    if n_components < min(d, n):
        if x.dtype == np.float64 and _pca_solver(n, d, n_components) == "randomized":
            return randomized_pca_components(x, n_components, seed)
        from sklearn.decomposition import PCA

        return PCA(n_components=n_components, random_state=np.random.RandomState(seed)).fit(x).components_
    return np.eye(n_components, d)


def _pca_solver(n: int, d: int, k: int) -> str:
    """The solver scikit-learn's ``PCA(svd_solver="auto")`` picks for an (n, d) array and k dims."""
    if d <= 1_000 and n >= 10 * d:
        return "covariance_eigh"
    if max(n, d) <= 500:
        return "full"
    return "randomized" if 1 <= k < 0.8 * min(n, d) else "full"


def randomized_pca_components(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``PCA(k, svd_solver="randomized", random_state=RandomState(seed)).fit(x).components_``,
    computed in torch (both cores) by the same algorithm (Halko et al.'s range finder as
    scikit-learn runs it: 10 extra vectors from ``RandomState(seed).normal``, 7 power iterations
    below 10% of the rank, else 4, each normalised by LU with partial pivoting, then QR, the SVD
    of the projection, and signs set by the largest entry of each component). Equal to
    scikit-learn's to rounding, ~4x faster on 5000 x 2048."""
    n, d = x.shape
    xc = torch.from_numpy(x - x.mean(axis=0))
    transpose = n < d
    m = xc.T if transpose else xc
    size = k + 10
    q = torch.from_numpy(np.random.RandomState(seed).normal(size=(m.shape[1], size)))
    for _ in range(7 if k < 0.1 * min(n, d) else 4):
        q = _permuted_l(m @ q)
        q = _permuted_l(m.T @ q)
    q = torch.linalg.qr(m @ q, mode="reduced").Q
    u_hat, _, vt = torch.linalg.svd(q.T @ m, full_matrices=False)
    u = q @ u_hat
    components = u[:, :k].T if transpose else vt[:k]
    rows = torch.arange(k)
    signs = torch.sign(components[rows, components.abs().argmax(1)])
    return (components * signs[:, None]).numpy()


def _permuted_l(a: torch.Tensor) -> torch.Tensor:
    """P @ L of the LU factorisation with partial pivoting a = P L U (``scipy.linalg.lu(a,
    permute_l=True)[0]``), without forming P."""
    lu, pivots = torch.linalg.lu_factor(a)
    cols = min(a.shape)
    lower = torch.tril(lu[:, :cols], -1) + torch.eye(a.shape[0], cols, dtype=a.dtype)
    perm = list(range(a.shape[0]))
    for i, p in enumerate(pivots.tolist()):  # LAPACK's row interchanges, in order (1-based)
        perm[i], perm[p - 1] = perm[p - 1], perm[i]
    out = torch.empty_like(lower)
    out[torch.tensor(perm)] = lower
    return out


class BlockwiseObjective:
    """Minus the NCA objective and its gradient (float64, torch): every pair in blocks of rows
    at the first evaluation, then only the pairs near each row's previous nearest sample.

    Args:
        x: (N, D) samples.
        y: (N,) integer labels.
        block_elements: rows per block are chosen so that a block holds about this many entries.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, block_elements: int = BLOCK_ELEMENTS) -> None:
        order = np.argsort(y, kind="stable")
        ys = y[order]
        self.x = torch.from_numpy(np.ascontiguousarray(x[order], dtype=np.float64))
        n = len(ys)
        cuts = np.flatnonzero(np.diff(ys)) + 1
        rows = max(1, min(1024, block_elements // max(n, 1)))
        self.rows = rows
        self.blocks = [(s, min(s + rows, hi), lo, hi)
                       for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n])
                       for s in range(int(lo), int(hi), rows)]
        self.labels = torch.from_numpy(np.ascontiguousarray(ys))
        self.nearest: torch.Tensor | None = None  # each row's nearest sample at the last evaluation
        self.crowded = False  # the last pass over all pairs found too many for the sparse form
        self.evaluations = 0
        self.full_passes = 0

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = self.x
        n, d = x.shape
        t = torch.from_numpy(np.asarray(flat, dtype=np.float64).reshape(-1, d))
        xe = x @ t.T  # (N, k) embedded samples
        k = xe.shape[1]
        left = torch.cat([xe, torch.ones(n, 1, dtype=xe.dtype)], 1)  # (N, k+1)
        acc = _Accumulators(n, k)
        pairs = self._near_pairs(xe) if self.nearest is not None and not self.crowded else None
        if pairs is None:
            self._row_blocks(xe, left, acc)
        else:
            rows, cols, logit, top = pairs
            same = self.labels[rows] == self.labels[cols]
            _sparse_terms(rows, cols, logit, top, same, 0, left, xe, acc)
        cols_sum = acc.cols.add_(acc.cols_t.T)
        g = cols_sum[:k].add_(acc.rows.T).sub_(xe.T * cols_sum[k])
        grad = 2 * (g @ x)
        self.evaluations += 1
        return -float(acc.loss), -grad.numpy().ravel()

    def _row_blocks(self, xe: torch.Tensor, left: torch.Tensor, acc: _Accumulators) -> None:
        """Every pair, one block of rows at a time; records each row's nearest sample."""
        n = xe.shape[0]
        # logits of row i: 2 xe_i.xe_j - |xe_j|^2 (= -squared distance + |xe_i|^2, a row constant)
        right = torch.cat([2 * xe, -(xe * xe).sum(1, keepdim=True)], 1).T.contiguous()  # (k+1, N)
        # reused buffers: a fresh multi-megabyte tensor per block costs as much as its matmul
        logits_buf = torch.empty(self.rows, n, dtype=xe.dtype)
        keep_buf = torch.empty(self.rows, n, dtype=torch.bool)
        nearest = torch.empty(n, dtype=torch.int64)
        kept = 0
        for block in self.blocks:
            s, e = block[0], block[1]
            logits = torch.mm(left[s:e], right, out=logits_buf[: e - s])
            own = torch.arange(e - s)
            logits[own, own + s] = -torch.inf
            top, nearest_block = logits.max(1, keepdim=True)
            nearest[s:e] = nearest_block.squeeze(1)
            keep = torch.ge(logits, top - LOGIT_RANGE, out=keep_buf[: e - s])
            ri, cj = keep.nonzero(as_tuple=True)
            kept += len(ri)
            if len(ri) > SPARSE_FRACTION * logits.numel():
                self._dense(block, logits, top, left, xe, acc)
            else:
                same = (cj >= block[2]) & (cj < block[3])
                _sparse_terms(ri, cj, logits[ri, cj], top.squeeze(1), same, s, left, xe, acc)
        self.nearest = nearest
        self.crowded = kept > SPARSE_FRACTION * n * n
        self.full_passes += 1

    def _near_pairs(self, xe: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The pairs within ``LOGIT_RANGE`` of their row's nearest, from half the distances.

        The distance to the sample that was nearest at the last evaluation bounds each row's
        nearest distance from above, so ``d_ij <= max(bound_i, bound_j) + LOGIT_RANGE`` keeps
        every pair that matters to row i or row j; each unordered pair is computed once. Returns
        (rows, cols, logits, row maxima) with rows ascending, or None when the pairs are too
        many for the sparse form (then all rows are done in blocks). Records the new nearest samples.
        """
        n = xe.shape[0]
        reach = ((xe - xe[self.nearest]) ** 2).sum(1) + LOGIT_RANGE  # pairs farther matter not
        # in order of decreasing reach, max(reach_i, reach_j) is the earlier one's: a row threshold
        by_reach = torch.argsort(reach, descending=True)
        z, reach = xe[by_reach], reach[by_reach]
        sq = (z * z).sum(1)
        # -d_ij = [2 z_i, -1, -|z_i|^2] . [z_j, |z_j|^2, 1]
        lhs = torch.cat([2 * z, -torch.ones(n, 1, dtype=z.dtype), -sq[:, None]], 1)
        rhs = torch.cat([z, sq[:, None], torch.ones(n, 1, dtype=z.dtype)], 1).T.contiguous()
        step = 2 * self.rows  # the tiles average half a row's width
        buf = torch.empty(step, n, dtype=z.dtype)
        keep_buf = torch.empty(step, n, dtype=torch.bool)
        found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        total, limit = 0, SPARSE_FRACTION * n * n
        for s in range(0, n, step):
            e = min(s + step, n)
            nd = torch.mm(lhs[s:e], rhs[:, s:], out=buf[: e - s, : n - s])  # rows s:e, cols s:N
            own = torch.arange(e - s)
            nd[own, own] = -torch.inf
            a, c = torch.ge(nd, -reach[s:e, None], out=keep_buf[: e - s, : n - s]).nonzero(as_tuple=True)
            v = nd[a, c]
            i, j = a + s, c + s  # positions in reach order; inside the block, row j sees the pair itself
            theirs = torch.nonzero((j >= e) & (v >= -reach[j])).squeeze(1)  # matters to row j too
            i_sorted, j_sorted = by_reach[i], by_reach[j]
            found += [(i_sorted, j_sorted, v), (j_sorted[theirs], i_sorted[theirs], v[theirs])]
            total += len(v) + len(theirs)
            if total > limit:
                return None
        rows, cols, logit = (torch.cat(part) for part in zip(*found))
        order = torch.argsort(rows * n + cols)
        rows, cols, logit = rows[order], cols[order], logit[order]
        top = torch.full((n,), -torch.inf, dtype=logit.dtype).scatter_reduce_(0, rows, logit, "amax")
        keep = logit >= top[rows] - LOGIT_RANGE  # as in the row blocks: within range of the row max
        rows, cols, logit = rows[keep], cols[keep], logit[keep]
        at_top = logit == top[rows]
        self.nearest = torch.full((n,), n, dtype=torch.int64).scatter_reduce_(
            0, rows[at_top], cols[at_top], "amin")
        return rows, cols, logit, top

    @staticmethod
    def _dense(block: tuple[int, int, int, int], logits: torch.Tensor, top: torch.Tensor,
               left: torch.Tensor, xe: torch.Tensor, acc: _Accumulators) -> None:
        """One block of rows with every pair kept (float64). ``logits`` (own pair -inf) and their
        row maxima ``top`` are overwritten."""
        s, e, lo, hi = block
        torch.maximum(logits, top.sub_(LOGIT_RANGE), out=logits)
        p_ij = torch.nn.functional.threshold_(torch.softmax(logits, dim=1), P_FLOOR, 0.0)
        same = p_ij[:, lo:hi]
        p = same.sum(1, keepdim=True)
        acc.loss += p.sum()
        same_w = same * (1 - p)
        w = p_ij.mul_(-torch.where(p < P_ROW_FLOOR, 0.0, p))
        w[:, lo:hi] = same_w
        acc.cols.addmm_(left[s:e].T, w)
        torch.mm(w, xe, out=acc.rows[s:e])


class _Accumulators:
    """Per-evaluation sums: xe^T W and the column sums of W (``cols``, and transposed in
    ``cols_t`` for sparse blocks), W xe (``rows``), the loss."""

    def __init__(self, n: int, k: int) -> None:
        self.cols = torch.zeros(k + 1, n, dtype=torch.float64)
        self.cols_t = torch.zeros(n, k + 1, dtype=torch.float64)
        self.rows = torch.empty(n, k, dtype=torch.float64)
        self.loss = torch.zeros((), dtype=torch.float64)


def _sparse_terms(ri: torch.Tensor, cj: torch.Tensor, logit: torch.Tensor, top: torch.Tensor,
                  same: torch.Tensor, offset: int, left: torch.Tensor, xe: torch.Tensor,
                  acc: _Accumulators) -> None:
    """Rows ``offset + ri`` (``ri`` ascending from 0) with only the pairs (``ri``, ``cj``) whose
    ``logit`` is within ``LOGIT_RANGE`` of the row maximum ``top[ri]``; the others have
    probability below e^-500 and count as 0, as in the dense blocks. ``same``: the pair's
    labels agree."""
    b = len(top)
    crow = torch.zeros(b + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(ri, minlength=b), 0, out=crow[1:])
    z = (logit - top[ri]).clamp_(min=-LOGIT_RANGE).exp_()
    zsum = torch.zeros(b, dtype=z.dtype).index_add_(0, ri, z)
    p_ij = torch.nn.functional.threshold_(z.div_(zsum[ri]), P_FLOOR, 0.0)
    p = torch.zeros(b, dtype=z.dtype).index_add_(0, ri, torch.where(same, p_ij, 0.0))
    acc.loss += p.sum()
    p_scale = torch.where(p < P_ROW_FLOOR, 0.0, p)
    w = torch.where(same, p_ij * (1 - p[ri]), -p_ij * p_scale[ri])
    n = xe.shape[0]
    acc.rows[offset:offset + b] = _csr(crow, cj, w, (b, n)) @ xe
    if b < n:  # a block of rows: its transpose's rows are scattered, add them one by one
        acc.cols_t.index_add_(0, cj, w[:, None] * left[offset:offset + b][ri])
    else:  # all rows: W^T as a CSR matrix of its own
        by_col = torch.argsort(cj * n + ri)
        crow_t = torch.zeros(n + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(cj, minlength=n), 0, out=crow_t[1:])
        acc.cols_t += _csr(crow_t, ri[by_col], w[by_col], (n, n)) @ left


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix from its row pointers, column indices and values (not re-checked)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": mm on CPU is all we use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def fit_nca(x: np.ndarray, y: np.ndarray, n_components: int, *, seed: int = 42, max_iter: int = 50,
            tol: float = 1e-5) -> np.ndarray:
    """The (n_components, D) transform of ``NeighborhoodComponentsAnalysis(n_components,
    random_state=seed, max_iter=max_iter, tol=tol)`` fitted on ``x``, ``y``."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    x = np.asarray(x)
    y = np.asarray(y)
    start = np.ravel(init_transform(x, y, n_components, seed))
    objective = BlockwiseObjective(x, y)
    # L-BFGS-B's own vector work runs on numpy's BLAS; its idle threads spinning between calls
    # took the cores from torch's and doubled the time per evaluation (measured at N=5000)
    with threadpool_limits(1, user_api="blas"):
        result = minimize(objective, start, method="L-BFGS-B", jac=True, tol=tol,
                          options={"maxiter": max_iter})
    log.debug("NCA: %d objective evaluations (%d over all pairs), %d iterations (%s)",
              objective.evaluations, objective.full_passes, result.nit, result.message)
    return result.x.reshape(-1, x.shape[1])
