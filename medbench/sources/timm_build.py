"""Building timm architectures by name, with clear errors (shared by every source loader)."""

from __future__ import annotations

from typing import Any

from torch import nn

from medbench.errors import InputError
from medbench.registry import did_you_mean


def check_timm_arch(arch: str) -> None:
    """Raise :class:`InputError` (with close matches) when ``arch`` is not a timm architecture."""
    import timm

    if not timm.is_model(arch):
        raise InputError(f"unknown timm architecture {arch!r}: {did_you_mean(arch, timm.list_models())}")


def build_timm(arch: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with an :class:`InputError` (and close matches) for unknown names."""
    import timm

    check_timm_arch(arch)
    return timm.create_model(arch, **kwargs)
