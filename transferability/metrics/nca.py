"""Neighbourhood components analysis fitted as scikit-learn fits it, with a blockwise objective.

The authors' LP (Juodelyte et al. 2024) fits ``NeighborhoodComponentsAnalysis(n_components=50,
random_state=42)``. :func:`fit_nca` runs the same algorithm: the same ``init="auto"`` choice
(LDA, PCA with ``RandomState(seed)``, or identity), the same L-BFGS-B call (``tol=1e-5``,
``maxiter=50``) and the same objective, the sum over samples of the softmax probability mass
(over all other samples, of minus the squared embedded distance) on samples of the same class.

Only the evaluation of that objective and its gradient differs. scikit-learn materialises six
N x N float64 arrays per evaluation; here the samples are sorted by class and the rows are
processed in cache-sized blocks, so the same-class mask is a column range, the softmax is one
fused kernel and the gradient ``2 Xe^T (W + W^T - diag(colsum W)) X`` is accumulated per block
with ``W = P * (mask - p)``. In float64 this agrees with scikit-learn's evaluation to about 1e-15
(relative); the optimiser's path, and so the transform, agree to rounding (tested against
scikit-learn in ``tests/transferability/test_nca.py``). Squared distances are not clamped at zero
here: the row's own squared norm cancels in the softmax and is never added. Probabilities below
e^-500 (and products with a same-class mass below 2^-150) are set to exactly 0 rather than left
as subnormal numbers, which would slow every later operation on the block ~30x on x86; their
effect on the sums is below 1e-200 relative.
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
SPARSE_FRACTION = 0.05  # a block with more candidate pairs than this share is computed densely


def init_transform(x: np.ndarray, y: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """scikit-learn's ``init="auto"`` starting transform, (n_components, D)."""
    n, d = x.shape
    n_classes = len(np.unique(y))
    if n_components <= min(d, n_classes - 1):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        return LinearDiscriminantAnalysis(n_components=n_components).fit(x, y).scalings_.T[:n_components]
    if n_components < min(d, n):
        from sklearn.decomposition import PCA

        return PCA(n_components=n_components, random_state=np.random.RandomState(seed)).fit(x).components_
    return np.eye(n_components, d)


class BlockwiseObjective:
    """Minus the NCA objective and its gradient, evaluated block by block (float64, torch).

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
        self.evaluations = 0

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = self.x
        n, d = x.shape
        t = torch.from_numpy(np.asarray(flat, dtype=np.float64).reshape(-1, d))
        xe = x @ t.T  # (N, k) embedded samples
        k = xe.shape[1]
        # logits of row i: 2 xe_i.xe_j - |xe_j|^2 (= -squared distance + |xe_i|^2, a row constant)
        right = torch.cat([2 * xe, -(xe * xe).sum(1, keepdim=True)], 1).T.contiguous()  # (k+1, N)
        left = torch.cat([xe, torch.ones(n, 1, dtype=xe.dtype)], 1)  # (N, k+1)
        acc = _Accumulators(n, k)
        # reused buffers: a fresh multi-megabyte tensor per block costs as much as its matmul
        logits_buf = torch.empty(self.rows, n, dtype=xe.dtype)
        keep_buf = torch.empty(self.rows, n, dtype=torch.bool)
        for block in self.blocks:
            s, e = block[0], block[1]
            logits = torch.mm(left[s:e], right, out=logits_buf[: e - s])
            own = torch.arange(e - s)
            logits[own, own + s] = -torch.inf
            top = logits.amax(1, keepdim=True)
            keep = torch.ge(logits, top - LOGIT_RANGE, out=keep_buf[: e - s])
            ri, cj = keep.nonzero(as_tuple=True)
            if len(ri) > SPARSE_FRACTION * logits.numel():
                self._dense(block, logits, top, left, xe, acc)
            else:
                self._sparse(block, ri, cj, logits[ri, cj], top.squeeze(1), left, xe, acc)
        cols = acc.cols.add_(acc.cols_t.T)
        g = cols[:k].add_(acc.rows.T).sub_(xe.T * cols[k])
        grad = 2 * (g @ x)
        self.evaluations += 1
        return -float(acc.loss), -grad.numpy().ravel()

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

    @staticmethod
    def _sparse(block: tuple[int, int, int, int], ri: torch.Tensor, cj: torch.Tensor, logit: torch.Tensor,
                top: torch.Tensor, left: torch.Tensor, xe: torch.Tensor, acc: _Accumulators) -> None:
        """One block of rows with only the pairs (row ``ri``, column ``cj``, row-major) whose
        ``logit`` is within 500 of the row maximum ``top``; the others have probability below
        e^-500 and count as 0, as in :meth:`_dense`."""
        s, e, lo, hi = block
        b = e - s
        crow = torch.zeros(b + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(ri, minlength=b), 0, out=crow[1:])
        z = (logit - top[ri]).clamp_(min=-LOGIT_RANGE).exp_()
        zsum = torch.zeros(b, dtype=z.dtype).index_add_(0, ri, z)
        p_ij = torch.nn.functional.threshold_(z.div_(zsum[ri]), P_FLOOR, 0.0)
        same = (cj >= lo) & (cj < hi)
        p = torch.zeros(b, dtype=z.dtype).index_add_(0, ri, torch.where(same, p_ij, 0.0))
        acc.loss += p.sum()
        p_scale = torch.where(p < P_ROW_FLOOR, 0.0, p)
        w = torch.where(same, p_ij * (1 - p[ri]), -p_ij * p_scale[ri])
        with warnings.catch_warnings():  # "sparse CSR support is in beta": mm on CPU is all we use
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            w_csr = torch.sparse_csr_tensor(crow, cj, w, (b, xe.shape[0]), check_invariants=False)
        acc.rows[s:e] = w_csr @ xe
        acc.cols_t.index_add_(0, cj, w[:, None] * left[s:e][ri])


class _Accumulators:
    """Per-evaluation sums: xe^T W and the column sums of W (``cols``, and transposed in
    ``cols_t`` for sparse blocks), W xe (``rows``), the loss."""

    def __init__(self, n: int, k: int) -> None:
        self.cols = torch.zeros(k + 1, n, dtype=torch.float64)
        self.cols_t = torch.zeros(n, k + 1, dtype=torch.float64)
        self.rows = torch.empty(n, k, dtype=torch.float64)
        self.loss = torch.zeros((), dtype=torch.float64)


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
    log.debug("NCA: %d objective evaluations, %d iterations (%s)", objective.evaluations,
              result.nit, result.message)
    return result.x.reshape(-1, x.shape[1])
