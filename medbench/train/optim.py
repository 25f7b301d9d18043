"""Optimizer, learning-rate schedule and linear-probe (frozen backbone) set-up for the engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from medbench.errors import InputError
from medbench.train.config import TrainConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled decay), Adam or SGD with momentum, from ``cfg``."""
    params = list(params)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The schedule of ``cfg``; it is stepped once per epoch or once per optimizer step.

    "cosine" anneals from ``lr`` to 0 over ``epochs`` (x ``steps_per_epoch`` for per-step);
    "step" multiplies by ``gamma`` every ``step_size`` intervals; "constant" returns None.
    """
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "cosine":
        total = cfg.epochs * (steps_per_epoch if cfg.schedule_interval == "step" else 1)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total), eta_min=0.0)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)


def classifier_of(model: nn.Module) -> nn.Module:
    """The model's classifier head: ``model.classifier``, else timm's ``get_classifier()``.

    Raises:
        InputError: the model has neither (linear probing is then undefined).
    """
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
        return head
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    raise InputError(
        f"linear_probe needs a model with a `classifier` module; {type(model).__name__} has none "
        "(medbench sources have one) - train without --linear-probe"
    )


@contextlib.contextmanager
def frozen_backbone(model: nn.Module, enabled: bool) -> Iterator[nn.Module | None]:
    """Freeze every parameter outside the classifier while the context is open (restored after).

    Yields the classifier head when ``enabled`` else None.
    """
    if not enabled:
        yield None
        return
    head = classifier_of(model)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    head_ids = {id(p) for p in head.parameters()}
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in head_ids)
        yield head
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def set_train_mode(model: nn.Module, head: nn.Module | None) -> None:
    """Training mode; in linear-probe mode only the head trains (BatchNorm/dropout of the backbone in eval)."""
    if head is None:
        model.train()
    else:
        model.eval()
        head.train()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode while the context is open; every module's own flag is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def scheduler_state(scheduler: Any) -> dict[str, Any] | None:
    return None if scheduler is None else scheduler.state_dict()
