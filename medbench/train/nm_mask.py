"""N:M structured-sparsity masks: keep the N largest-magnitude weights in every M consecutive ones.

Groups run along the input dimension: for a Linear weight ``(out, in)`` along ``in``; for a Conv2d
weight ``(out, in, kh, kw)`` the tensor is viewed as ``(out, kh, kw, in)`` so groups run along input
channels (the layout that 2:4 sparse kernels use after an implicit-GEMM/channels-last lowering).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence

import torch
from torch import nn

from medbench.errors import InputError

logger = logging.getLogger(__name__)


def parse_pattern(pattern: str | tuple[int, int]) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; raises :class:`InputError` unless ``0 < N < M``."""
    try:
        if isinstance(pattern, str):
            n_str, m_str = pattern.strip().split(":")
            n, m = int(n_str), int(m_str)
        else:
            n, m = (int(v) for v in pattern)
    except (ValueError, TypeError):
        raise InputError(
            f"pattern={pattern!r} is not an N:M pattern: write it as 'N:M' with integers, e.g. '2:4'"
        ) from None
    if not 0 < n < m:
        raise InputError(f"pattern={pattern!r} needs 0 < N < M (e.g. '2:4' or '1:4')")
    return n, m


def _grouped(weight: torch.Tensor, m: int) -> torch.Tensor:
    """View of ``weight`` as ``(groups, m)`` along the input dim (conv: input channels last)."""
    if weight.ndim == 2:
        w = weight
    elif weight.ndim == 4:
        w = weight.permute(0, 2, 3, 1)
    else:
        raise InputError(f"N:M masks cover Linear (2-D) and Conv2d (4-D) weights, got {weight.ndim}-D")
    if w.shape[-1] % m:
        raise InputError(
            f"input dim {w.shape[-1]} is not divisible by M={m}: skip this layer (skip=[...]) "
            "or use strict=False"
        )
    return w.reshape(-1, m)


def _ungrouped(groups: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.ndim == 2:
        return groups.reshape(like.shape)
    o, i, kh, kw = like.shape
    return groups.reshape(o, kh, kw, i).permute(0, 3, 1, 2)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask with exactly ``n`` True (the largest ``|w|``) in every group of ``m``."""
    groups = _grouped(weight.detach(), m)
    keep = groups.abs().topk(n, dim=1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
    return _ungrouped(mask, weight).contiguous()


def group_nonzeros(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Number of non-zeros in each group of ``m`` (shape ``(groups,)``)."""
    return (_grouped(weight.detach(), m) != 0).sum(dim=1)


def satisfies_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` holds at most ``n`` non-zeros."""
    return bool((group_nonzeros(weight, m) <= n).all())


def input_dim(module: nn.Module) -> int:
    """Size of the dimension the groups run along (in_features, or in_channels per group)."""
    return int(module.weight.shape[1])


def eligible_layers(
    model: nn.Module,
    m: int,
    *,
    skip: Sequence[str] = (),
    skip_first: bool = True,
    skip_last: bool = True,
    strict: bool = False,
) -> dict[str, nn.Module]:
    """The Linear/Conv2d layers to sparsify, by module name.

    Args:
        model: The network.
        m: Group size M.
        skip: fnmatch patterns of module names never to sparsify (e.g. ``["stem.*", "head"]``).
        skip_first: Skip the first Linear/Conv2d in module order (the stem conv).
        skip_last: Skip the last Linear/Conv2d in module order (the classifier).
        strict: Raise :class:`InputError` for a remaining layer whose input dim is not divisible by
            ``m`` (default: skip it and log).
    """
    layers = [
        (name, mod) for name, mod in model.named_modules() if isinstance(mod, (nn.Linear, nn.Conv2d))
    ]
    if skip_first and layers:
        layers = layers[1:]
    if skip_last and layers:
        layers = layers[:-1]
    out: dict[str, nn.Module] = {}
    for name, mod in layers:
        if any(fnmatch.fnmatchcase(name, pat) for pat in skip):
            continue
        if input_dim(mod) % m:
            if strict:
                raise InputError(
                    f"layer {name!r} has input dim {input_dim(mod)}, not divisible by M={m}: "
                    f"add it to skip=[...] or pass strict=False"
                )
            logger.info("N:M: skipping %s (input dim %d not divisible by %d)", name, input_dim(mod), m)
            continue
        out[name] = mod
    return out
