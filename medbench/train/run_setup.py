"""The engine's run bookkeeping: opening the run folder, the progress counters, ``last.pt`` in and out.

:func:`open_fit_run` opens ``fit``'s folder through the run layer (:func:`medbench.runs.open_run`)
unless the calling workflow already did; :func:`last_state` builds the resumable state saved as
``checkpoints/last.pt`` and :func:`restore_last` loads it back into the training objects. The
training loop itself stays in :mod:`medbench.train.engine`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medbench.errors import InputError
from medbench.runs import Run, open_run
from medbench.train import dist
from medbench.train.checkpoint import LAST, capture_rng, restore_rng
from medbench.train.config import TrainConfig
from medbench.train.hooks import TrainHook
from medbench.train.optim import scheduler_state
from medbench.train.predict import PREDICTIONS

__all__ = ["FIT_OUTPUTS", "Progress", "last_state", "open_fit_run", "restore_last"]

logger = logging.getLogger(__name__)

#: What ``fit`` writes into its folder besides the run layer's own files (removed by a restart).
FIT_OUTPUTS = ["checkpoints", "history.csv", "summary.json", PREDICTIONS, "predictions.csv"]


@dataclass
class Progress:
    """Counters saved in ``last.pt``."""

    epoch: int = 0  # epoch in progress, 0-based (== epochs done when batch == 0); shown 1-based
    batch: int = 0  # batches of ``epoch`` already done
    step: int = 0  # optimizer steps in the run
    best_val_loss: float = math.inf
    best_epoch: int = -1  # 0-based like ``epoch``; -1: none yet
    bad_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False
    train_time_s: float = 0.0
    images_seen: int = 0
    loss_sum: float = 0.0  # running sums of the epoch in progress
    loss_count: int = 0
    epoch_lr: float = 0.0  # learning rate at the start of the epoch in progress
    history: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def open_fit_run(out: Path, cfg: TrainConfig, run: Run | None, *, restart: bool) -> Iterator[Run | None]:
    """Yield ``fit``'s open run folder: ``run`` when the workflow opened it, else ``out`` opened here
    (main rank only; other ranks get None) with the settings ``{"train": cfg.settings()}``."""
    if run is None and dist.is_main():
        with open_run(out, "train", {"train": cfg.settings()}, outputs=FIT_OUTPUTS, restart=restart) as opened:
            yield opened
    else:
        yield run


def last_state(
    *, cfg: TrainConfig, settings_hash: str | None, model: nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: Any, scaler: torch.amp.GradScaler, sampler_state: Any, ranks: list[Any] | None,
    hooks: Sequence[TrainHook], progress: Progress, loss_total: list[float],
) -> dict[str, Any]:
    """The state saved as ``last.pt``; ``loss_total`` is the all-ranks partial epoch loss (sum, count)."""
    counters = progress.__dict__.copy()
    counters["loss_sum"], counters["loss_count"] = float(loss_total[0]), int(round(loss_total[1]))
    return {
        "config": cfg.to_dict(),
        "settings_hash": settings_hash,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler_state(scheduler),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "sampler": sampler_state,
        "sampler_ranks": ranks,
        "hooks": [{"name": h.name, "state": h.state_dict()} for h in hooks],
        "rng": capture_rng(),
        "progress": counters,
    }


def restore_last(
    state: dict[str, Any], *, out: Path, settings_hash: str | None, model: nn.Module,
    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler, sampler: Any,
    hooks: Sequence[TrainHook], world: int,
) -> Progress:
    """Load a ``last.pt`` state into the training objects and the global RNGs; return its counters.

    Raises:
        InputError: the checkpoint was computed with other settings, or with other hooks.
    """
    # The run layer already refused other settings; this only catches a checkpoint the run folder
    # does not account for (copied in, or left by a medbench without run settings).
    if settings_hash is not None and state.get("settings_hash") != settings_hash:
        raise InputError(
            f"{out / 'checkpoints' / LAST} was computed with settings other than {out}'s settings.yaml: "
            "delete the checkpoints folder, or use a new output folder"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    sampler_state = state.get("sampler")
    per_rank = state.get("sampler_ranks")
    if per_rank is not None and len(per_rank) == world:
        sampler_state = per_rank[dist.rank()]
    if sampler_state is not None and hasattr(sampler, "load_state_dict"):
        sampler.load_state_dict(sampler_state)
    saved_hooks = state.get("hooks", [])
    if [h["name"] for h in saved_hooks] != [h.name for h in hooks]:
        raise InputError(
            f"{out}: checkpoint hooks {[h['name'] for h in saved_hooks]} differ from this run's "
            f"{[h.name for h in hooks]}; use a new output folder"
        )
    for hook, saved in zip(hooks, saved_hooks, strict=True):
        hook.load_state_dict(saved["state"])
    restore_rng(state["rng"])
    progress = Progress(**state["progress"])
    if dist.rank() != 0:  # the saved partial epoch loss is the all-ranks total: count it once
        progress.loss_sum, progress.loss_count = 0.0, 0
    logger.info("resumed %s at epoch %d, batch %d (step %d)", out, progress.epoch + 1, progress.batch,
                progress.step)
    return progress
