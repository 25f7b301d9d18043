"""Per-example gradients with ``torch.func`` (``vmap(grad(...))`` over ``functional_call``).

BatchNorm and dropout: a single example has no batch statistics, so per-example gradients are
taken with the model in **eval mode** (BatchNorm uses its running statistics, dropout is off) and
no buffer is updated. They are therefore the gradients of the eval-mode network at the current
weights; for models without BatchNorm/dropout they are exact, and their batch mean equals the
minibatch ``.grad`` of a mean-reduced loss.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from medbench.errors import InputError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def select_params(
    model: nn.Module, patterns: Sequence[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split trainable parameters into (selected, rest) by fnmatch ``patterns`` (None: all)."""
    chosen: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        keep = p.requires_grad and (
            patterns is None or any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
        )
        (chosen if keep else rest)[name] = p.detach()
    if not chosen:
        raise InputError(
            f"grad_params={list(patterns or [])!r} matches no trainable parameter: "
            "pass fnmatch patterns of parameter names, e.g. ['fc.*'], or None for all"
        )
    return chosen, rest


def per_example_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    param_patterns: Sequence[str] | None = None,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Gradients of ``loss_fn`` for each example separately.

    Args:
        model: The network (its training flags are restored afterwards).
        loss_fn: Mean-reduced loss ``loss_fn(outputs, targets)``.
        inputs: Batch ``(B, ...)``.
        targets: Batch ``(B, ...)``.
        param_patterns: fnmatch patterns of the parameters to differentiate (None: all trainable).
        chunk_size: Examples per vmap chunk (bounds memory); None: the whole batch.

    Returns:
        ``{name: (B, *param.shape)}``.
    """
    if inputs.shape[0] != targets.shape[0]:
        raise InputError(
            f"inputs and targets disagree on batch size ({inputs.shape[0]} vs {targets.shape[0]})"
        )
    chosen, rest = select_params(model, param_patterns)
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss_one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**p, **rest}, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        fn = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)
        return fn(chosen, inputs, targets)
    finally:
        for m, flag in flags:
            m.training = flag


def flatten_grads(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate ``{name: (B, ...)}`` into one ``(B, D)`` matrix."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)
