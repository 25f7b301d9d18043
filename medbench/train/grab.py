"""GraB: online Gradient Balancing for example ordering (Lu et al. 2022), as a DataLoader sampler.

Mean balance: for each visited example with gradient ``g``, ``c = g - m_prev`` (``m_prev``: the
previous epoch's mean gradient, a *stale* mean); if ``||s + c|| <= ||s - c||`` (``<s, c> <= 0``) then
``s += c`` and the example takes the next front slot, else ``s -= c`` and it takes the next back slot.
Ties go to the front, as in the authors' code (EugeneLYC/GraB, both ``dmsort`` and ``orderedsampler``
compare with ``<=``); the paper's pseudo-code uses ``<``. The tie matters: ``s`` is zero for the
first example of every epoch, and sending it to the back flips every later sign, which reverses the
whole order. At epoch end the next
order is the front slots in visit order followed by the back slots in reverse, and ``m_prev``
becomes this epoch's mean. Pair balance signs the differences of consecutive pairs and needs no
mean. The first epoch is a seeded random permutation; ``s`` restarts at zero every epoch.

Gradients reach the sampler through ``observe(model, loss_fn, inputs, targets, indices)`` (per-
example gradients via :mod:`medbench.train.pergrad`, count-sketched to ``sketch_dim``) or directly
through ``step(grads, indices)``, always in the order the examples were yielded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from medbench.errors import InputError
from medbench.train.hooks import ORDERINGS
from medbench.train.pergrad import GradTap, flatten_grads, per_example_grads, project_conv_grads
from medbench.train.sketch import CountSketch
from medbench.utils.rng import torch_generator

logger = logging.getLogger(__name__)

BALANCE_DTYPE = torch.float64


def mean_balance(
    grads: torch.Tensor, m_prev: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign each row of ``grads`` (visit order) against the running sum ``s``.

    Returns:
        ``(plus, s)``: ``plus[t]`` True where ``s += g_t - m_prev`` (front slot), and the new sum.
    """
    return pair_balance(grads - m_prev, s)


def pair_balance(diffs: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign each row ``d`` (e.g. a pair difference ``g_first - g_second``) against ``s``.

    Returns:
        ``(plus, s)``: ``plus[t]`` True where ``s += d_t`` (first/this one goes front), and the new sum.
    """
    s = s.clone()
    plus = torch.zeros(diffs.shape[0], dtype=torch.bool)
    for t in range(diffs.shape[0]):
        d = diffs[t]
        if torch.dot(s, d) <= 0:  # ||s + d|| <= ||s - d||; a tie goes front, as the authors
            s += d
            plus[t] = True
        else:
            s -= d
    return plus, s


def max_prefix_norm(vectors: torch.Tensor, order: Sequence[int] | torch.Tensor) -> float:
    """Herding bound: max over prefixes of ``||sum_{t<=k} (v_order[t] - mean)||_2``."""
    v = vectors.to(BALANCE_DTYPE)
    centred = v[torch.as_tensor(order, dtype=torch.long)] - v.mean(0)
    return float(centred.cumsum(0).norm(dim=1).max())


class SlotOrder:
    """Front/back slot assignment of one epoch; ``order()`` builds the next permutation."""

    def __init__(self) -> None:
        self.front: list[int] = []
        self.back: list[int] = []

    def place(self, unit: int, front: bool) -> None:
        (self.front if front else self.back).append(unit)

    def order(self, middle: Sequence[int] = ()) -> list[int]:
        """Front slots in visit order, then ``middle``, then back slots in reverse."""
        return self.front + list(middle) + self.back[::-1]


def gradient_rows(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    sketch: CountSketch | None,
    grad_params: Sequence[str] | None,
    chunk_size: int | None,
    conv_proj: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Per-example gradients of a batch as ``(B, D)`` rows, count-sketched to ``(B, k)`` if asked."""
    grads = per_example_grads(
        model, loss_fn, inputs, targets, param_patterns=grad_params, chunk_size=chunk_size
    )
    if conv_proj is not None:
        grads = project_conv_grads(grads, model, conv_proj, seed)
    return to_rows(grads, sketch)


def to_rows(grads: dict[str, torch.Tensor], sketch: CountSketch | None) -> torch.Tensor:
    """``{name: (B, ...)}`` -> ``(B, D)`` rows, or ``(B, k)`` when a sketch is given and k < D."""
    dim = sum(g[0].numel() for g in grads.values())
    if sketch is not None and dim > sketch.k:
        return sketch.apply(grads)
    return flatten_grads(grads)


class GradientSource:
    """Per-example gradient rows for ``observe``: tap or vmap, then count-sketch (see GraBSampler)."""

    def __init__(
        self, *, sketch: CountSketch | None, grad_params: Sequence[str] | None,
        chunk_size: int | None, method: str = "auto", conv_proj: int | None = None, seed: int = 0,
    ) -> None:
        if method not in ("auto", "vmap", "tap"):
            raise InputError(f"method={method!r} is not known: use 'auto', 'vmap' or 'tap'")
        if conv_proj is not None and int(conv_proj) < 1:
            raise InputError(f"conv_proj={conv_proj!r} must be a positive number of dims (or None)")
        self.conv_proj = None if conv_proj is None else int(conv_proj)
        self.seed = int(seed)
        self.sketch, self.grad_params, self.chunk_size, self.method = sketch, grad_params, chunk_size, method
        self._tap: GradTap | None = None
        self._tap_model: int | None = None
        self._params = grad_params
        self.batches_by_method = {"vmap": 0, "tap": 0}

    def rows(
        self, model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor, targets: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, d)`` rows of the batch just trained on (parameters as in its forward)."""
        if self.method != "vmap" and self._tap_model != id(model):
            self.close()
            self._tap, self._tap_model = GradTap(model, self.grad_params), id(model)
            self._params = self.grad_params
            if not self._tap.supported and self.method == "tap":
                raise InputError(
                    "method='tap' covers Linear/Conv2d parameters only: restrict grad_params to "
                    "them or use method='vmap'"
                )
            if not self._tap.covered:
                logger.info("no Linear/Conv2d parameter to tap: using vmap")
                self._tap = None
            else:
                if not self._tap.supported:
                    logger.info("balancing on the %d Linear/Conv2d parameter tensors only (norm "
                                "layers and others left out)", len(self._tap.covered))
                    self._params = self._tap.covered
                self._tap.attach()
        if self._tap is not None and self._tap.ready(inputs):
            self.batches_by_method["tap"] += 1
            return to_rows(self._tap.grads(self.conv_proj, self.seed), self.sketch)
        self.batches_by_method["vmap"] += 1
        return gradient_rows(model, loss_fn, inputs, targets, sketch=self.sketch,
                             grad_params=self._params, chunk_size=self.chunk_size,
                             conv_proj=self.conv_proj, seed=self.seed)

    def close(self) -> None:
        """Remove the hooks from the model."""
        if self._tap is not None:
            self._tap.detach()
        self._tap, self._tap_model = None, None


@ORDERINGS.register("grab")
class GraBSampler(Sampler[int]):
    """Online gradient balancing sampler (mean balance with the stale mean).

    Args:
        dataset_size: Number of examples N.
        seed: Seed of the first epoch's permutation, the sketch and the microbatch partition.
        balance: "mean" (stale-mean balance) or "pair" (pair balance).
        sketch_dim: Count-sketch dimension k (None: exact gradients). Models with at most k
            parameters are balanced exactly.
        granularity: Examples per balancing unit. 1 balances examples; b > 1 fixes a seeded
            partition into microbatches of b examples, orders whole microbatches and balances
            their mean gradients (b times fewer vectors to store and sign).
        grad_params: fnmatch patterns of the parameters whose gradients are balanced (None: all).
            Restricting to the last layers (e.g. ``["layer4.*", "fc.*"]``) cuts the cost.
        chunk_size: vmap chunk size for per-example gradients (bounds memory).
        method: How ``observe`` gets per-example gradients. "vmap": a second, eval-mode forward
            and ``vmap(grad)`` (any layer type). "tap": hooks capture the inputs and output
            gradients of the Linear/Conv2d layers during the training step itself, so no extra
            forward is needed (the first batch still uses vmap); every balanced parameter must
            belong to a Linear/Conv2d layer. "auto": tap the Linear/Conv2d parameters among
            ``grad_params`` and leave the others (BatchNorm/LayerNorm affine terms) out of the
            balanced vector; vmap only when there is no Linear/Conv2d parameter.
        conv_proj: Project each Conv2d weight gradient's patch axis (in*kh*kw) to this many
            seeded Gaussian directions before sketching (None: off; layers with fewer patch
            entries are kept). On the tap path this replaces unfolding every patch by a conv
            with ``conv_proj`` filters (``benchmarks/grab.py --cxr-grab tap-sketch``: epoch 1.4x RR, 1.7x
            with exact per-example gradients).
    """

    name = "grab"
    default_balance = "mean"

    def __init__(
        self,
        dataset_size: int,
        seed: int = 0,
        *,
        balance: str | None = None,
        sketch_dim: int | None = 1024,
        granularity: int = 1,
        grad_params: Sequence[str] | None = None,
        chunk_size: int | None = None,
        method: str = "auto",
        conv_proj: int | None = 8,
    ) -> None:
        if int(dataset_size) < 1:
            raise InputError(f"dataset_size must be >= 1, got {dataset_size!r}")
        balance = balance or self.default_balance
        if balance not in ("mean", "pair"):
            raise InputError(f"balance={balance!r} is not known: use 'mean' or 'pair'")
        if int(granularity) < 1:
            raise InputError(f"granularity must be >= 1 examples, got {granularity!r}")
        self.n = int(dataset_size)
        self.seed = int(seed)
        self.balance = balance
        self.granularity = int(granularity)
        self.grad_params = list(grad_params) if grad_params is not None else None
        self.chunk_size = chunk_size
        self.sketch = CountSketch(sketch_dim, seed) if sketch_dim else None
        self.source = GradientSource(sketch=self.sketch, grad_params=self.grad_params,
                                     chunk_size=chunk_size, method=method, conv_proj=conv_proj,
                                     seed=seed)
        self._make_units()
        self.epoch = 0
        self._order: list[int] = self._random_order(0)
        self.m_prev: torch.Tensor | None = None
        self.grad_dim: int | None = None
        self.epochs_balanced = 0
        self._observe_seconds = 0.0
        self._observe_calls = 0
        self._reset_epoch_state()

    # ----------------------------------------------------------------- structure
    def _make_units(self) -> None:
        b = self.granularity
        if b == 1:
            self.units: list[list[int]] | None = None
            self.n_units = self.n
            self._unit_of: list[int] | None = None
            return
        perm = torch.randperm(self.n, generator=torch_generator(self.seed, "grab-units")).tolist()
        self.units = [perm[i : i + b] for i in range(0, self.n, b)]
        self.n_units = len(self.units)
        self._unit_of = [0] * self.n
        for u, members in enumerate(self.units):
            for i in members:
                self._unit_of[i] = u

    def _random_order(self, epoch: int) -> list[int]:
        g = torch_generator(self.seed, "grab-order", epoch)
        return torch.randperm(self.n_units, generator=g).tolist()

    def _reset_epoch_state(self) -> None:
        self.s: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._slots = SlotOrder()
        self._seen: set[int] = set()
        self._pending: tuple[int, torch.Tensor] | None = None
        self._partial: dict[int, tuple[torch.Tensor, int]] = {}

    # ----------------------------------------------------------------- sampler API
    def __iter__(self) -> Iterator[int]:
        if self.units is None:
            return iter(list(self._order))
        return iter([i for u in self._order for i in self.units[u]])

    def __len__(self) -> int:
        return self.n

    def order(self) -> list[int]:
        """Dataset indices of the current epoch, in visit order."""
        return list(iter(self))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``; closes a previous epoch whose ``end_epoch`` was not called."""
        if self._seen and epoch != self.epoch:
            self.end_epoch()
        self.epoch = int(epoch)

    def observe(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor | Sequence[int],
    ) -> None:
        """Compute (sketched) per-example gradients of a visited batch and balance them."""
        t0 = time.perf_counter()
        self.step(self.source.rows(model, loss_fn, inputs, targets), indices)
        self._observe_seconds += time.perf_counter() - t0
        self._observe_calls += 1

    def step(self, grads: torch.Tensor, indices: torch.Tensor | Sequence[int]) -> None:
        """Balance gradient rows ``(B, d)`` of the examples ``indices`` (in visit order)."""
        idx = torch.as_tensor(indices).reshape(-1).tolist()
        if grads.ndim != 2 or grads.shape[0] != len(idx):
            raise InputError(
                f"step() needs grads of shape (B, d) with B = len(indices) = {len(idx)}, "
                f"got {tuple(grads.shape)}"
            )
        rows = grads.detach().to(BALANCE_DTYPE)
        if self.grad_dim is None:
            self.grad_dim = rows.shape[1]
        if self.s is None:
            self.s = rows.new_zeros(rows.shape[1])
            self._sum = rows.new_zeros(rows.shape[1])
            if self.m_prev is None or self.m_prev.shape[0] != rows.shape[1]:
                self.m_prev = rows.new_zeros(rows.shape[1])
            self.m_prev = self.m_prev.to(rows.device)
        for r, i in enumerate(idx):
            unit, g = self._unit_vector(int(i), rows[r])
            if unit is not None:
                self._balance_unit(unit, g)

    def _unit_vector(self, i: int, g: torch.Tensor) -> tuple[int | None, torch.Tensor]:
        if not 0 <= i < self.n:
            raise InputError(f"index {i} is outside the dataset (size {self.n})")
        if self.units is None:
            return i, g
        u = self._unit_of[i]  # type: ignore[index]
        acc, k = self._partial.get(u, (torch.zeros_like(g), 0))
        acc, k = acc + g, k + 1
        if k < len(self.units[u]):
            self._partial[u] = (acc, k)
            return None, g
        self._partial.pop(u, None)
        return u, acc / k

    def _balance_unit(self, unit: int, g: torch.Tensor) -> None:
        if unit in self._seen:
            logger.warning("unit %d visited twice in one epoch; the repeat is not balanced", unit)
            return
        self._seen.add(unit)
        assert self.s is not None and self._sum is not None and self.m_prev is not None
        self._sum += g
        self._count += 1
        if self.balance == "mean":
            plus, self.s = mean_balance(g[None], self.m_prev, self.s)
            self._slots.place(unit, bool(plus[0]))
            return
        if self._pending is None:
            self._pending = (unit, g)
            return
        first, g_first = self._pending
        self._pending = None
        plus, self.s = pair_balance((g_first - g)[None], self.s)
        self._slots.place(first, bool(plus[0]))
        self._slots.place(unit, not bool(plus[0]))

    def end_epoch(self) -> None:
        """Build the next epoch's order from this epoch's slots; the stale mean rolls over.

        Also removes the gradient-tap hooks, so a finished run leaves the model unhooked (the
        next epoch's first batch re-attaches them and is computed with vmap).
        """
        self.source.close()
        if not self._seen:
            logger.debug("end_epoch with nothing observed: next epoch gets a fresh random order")
            self._order = self._random_order(self.epoch + 1)
            self._reset_epoch_state()
            return
        if self._pending is not None:  # odd count under pair balance: the leftover is signed alone
            unit, g = self._pending  # against the running sum (front on a tie), not added to it
            assert self.s is not None
            self._slots.place(unit, bool(torch.dot(self.s, g) <= 0))
        missed = [u for u in self._order if u not in self._seen]
        if missed:
            logger.info("%d units were not observed this epoch; they keep their visit order", len(missed))
        self._order = self._slots.order(missed)
        assert self._sum is not None
        self.m_prev = self._sum / self._count
        self.epochs_balanced += 1
        self._reset_epoch_state()

    # ----------------------------------------------------------------- checkpoints/report
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, also mid-epoch (the balancing done so far is kept)."""
        pending = self._pending
        return {
            "epoch": self.epoch,
            "order": torch.tensor(self._order, dtype=torch.long),
            "m_prev": None if self.m_prev is None else self.m_prev.detach().cpu(),
            "epochs_balanced": self.epochs_balanced,
            "grad_dim": self.grad_dim,
            "running": None if self.s is None else {
                "s": self.s.cpu(), "sum": self._sum.cpu() if self._sum is not None else None,
                "count": self._count, "front": list(self._slots.front),
                "back": list(self._slots.back), "seen": sorted(self._seen),
                "pending": None if pending is None else [pending[0], pending[1].cpu()],
                "partial": {int(u): [acc.cpu(), k] for u, (acc, k) in self._partial.items()},
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = torch.as_tensor(state["order"]).tolist()
        if sorted(order) != list(range(self.n_units)):
            raise InputError("GraB state does not match this dataset/granularity: start a fresh run")
        self._order = order
        self.epoch = int(state["epoch"])
        self.m_prev = state.get("m_prev")
        self.epochs_balanced = int(state.get("epochs_balanced", 0))
        self.grad_dim = state.get("grad_dim")
        self._reset_epoch_state()
        run = state.get("running")
        if run:
            self.s, self._sum, self._count = run["s"], run["sum"], int(run["count"])
            self._slots.front, self._slots.back = list(run["front"]), list(run["back"])
            self._seen = set(run["seen"])
            pend = run.get("pending")
            self._pending = None if pend is None else (int(pend[0]), pend[1])
            self._partial = {int(u): (v[0], int(v[1])) for u, v in run.get("partial", {}).items()}

    def summary(self) -> dict[str, Any]:
        return {
            "order": self.name,
            "balance": self.balance,
            "sketch_dim": self.sketch.k if self.sketch is not None else None,
            "balanced_dim": self.grad_dim,
            "granularity": self.granularity,
            "grad_params": self.grad_params,
            "method": self.source.method,
            "conv_proj": self.source.conv_proj,
            "batches_by_method": dict(self.source.batches_by_method),
            "epochs_balanced": self.epochs_balanced,
            "observe_seconds": round(self._observe_seconds, 3),
            "observe_calls": self._observe_calls,
        }


@ORDERINGS.register("pair")
class PairBalanceSampler(GraBSampler):
    """GraB with pair balance: signs of consecutive-pair differences, no stale mean."""

    name = "pair"
    default_balance = "pair"
