"""Extension points of the training engine: example-ordering samplers and training hooks.

The engine (``medbench.train.engine``) knows nothing about GraB or N:M sparsity. It builds

- the training **sampler** from ``ORDERINGS.create(cfg.order, dataset_size=..., seed=..., **opts)``:
  any ``torch.utils.data.Sampler`` yielding dataset indices. Optional methods the engine calls:
  ``set_epoch(epoch)`` before each epoch, ``observe(model, loss_fn, inputs, targets, indices)``
  after each backward pass (GraB uses it to compute per-example gradients of the visited
  examples), ``end_epoch()`` after the last batch, ``state_dict()``/``load_state_dict()`` for
  resumable checkpoints and ``summary()`` for the run report.
- a list of **TrainHook** objects, e.g. from ``SPARSITY.create(recipe, pattern="2:4", ...)``. Hooks
  may replace the optimizer and see every step.

Registries are filled by the modules that implement entries (``medbench.train.ordering``: "rr" and
"so"; ``medbench.train.grab``: "grab" and "pair"; ``medbench.train.cdgrab``: "cdgrab";
``medbench.train.sparsity``); each registry imports them on its first lookup, and an import error
in one of them is raised, never skipped. :class:`Ordering` and :class:`Sparsity` are the contracts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from medbench.registry import Registry


@runtime_checkable
class Ordering(Protocol):
    """An example ordering: a sampler built as ``entry(dataset_size=N, seed=S, **opts)``.

    It yields each of the N dataset indices once per epoch. The engine also calls, when present,
    ``set_epoch``, ``observe``, ``end_epoch``, ``state_dict``/``load_state_dict`` and ``summary``.
    """

    def __iter__(self) -> Iterator[int]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class Sparsity(Protocol):
    """A sparsity recipe: a :class:`TrainHook` built as ``entry(pattern="N:M", **opts)``."""

    name: str

    def make_optimizer(self, params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer | None: ...

    def after_backward(self, model: nn.Module, step: int) -> None: ...

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None: ...

    def on_train_end(self, model: nn.Module) -> nn.Module: ...

    def masks_final(self) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


_ORDERING_MODULES = ("medbench.train.ordering", "medbench.train.grab", "medbench.train.cdgrab")
ORDERINGS: Registry[Any] = Registry("example ordering", builtins=_ORDERING_MODULES, protocol=Ordering,
                                    entry="class")
SPARSITY: Registry[Any] = Registry("sparsity recipe", builtins=("medbench.train.sparsity",), protocol=Sparsity,
                                   entry="class")


def load_builtin_entries() -> None:
    """Import the modules that register orderings and sparsity recipes (idempotent; errors propagate)."""
    ORDERINGS.load_builtins()
    SPARSITY.load_builtins()


class TrainHook:
    """Base class of engine hooks; every method is a no-op by default.

    Call order per run: ``make_optimizer`` (may return None to keep the engine's),
    ``on_train_start``; per step: forward, backward, ``after_backward``, (clip), optimizer step,
    ``after_step``, ``on_batch_end``; ``on_epoch_end`` per epoch; ``on_train_end`` once (may return a new model,
    e.g. an exported sparse one).
    """

    name: str = "hook"

    def make_optimizer(
        self, params: Iterable[nn.Parameter], cfg: Any
    ) -> torch.optim.Optimizer | None:
        return None

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def after_backward(self, model: nn.Module, step: int) -> None:
        pass

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        pass

    def on_batch_end(self, step: int, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """After ``after_step``: the batch's mean loss, logits and targets (detached; read-only).

        For per-step records such as learning curves; ``step`` is the 0-based optimizer step.
        """

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        pass

    def on_train_end(self, model: nn.Module) -> nn.Module:
        return model

    def masks_final(self) -> bool:
        """Whether the model as it stands is the one this hook would export (e.g. N:M masks fixed).

        The engine keeps a best checkpoint and counts early-stopping patience only over epochs at
        whose end every hook answers True; hooks that do not change the exported model say True.
        """
        return True

    def epoch_record(self) -> dict[str, Any]:
        """Extra columns for this epoch's row of ``history.csv`` (e.g. the STEP phase)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        """Facts for the run's config/report (e.g. the AutoSwitch step)."""
        return {}
