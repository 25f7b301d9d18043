"""Pretrained sources: a :class:`SourceCard` per source and the ``create_source`` factory.

Example:
    >>> from medbench.sources import create_source
    >>> model = create_source("random", arch="resnet18", num_classes=2, in_chans=1)
    >>> model(torch.rand(2, 1, 64, 64)).shape  # doctest: +SKIP
    torch.Size([2, 2])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medbench.sources.card import PREPROCESSING, Preprocessing, SourceCard, get_preprocessing
    from medbench.sources.model import SourceModel
    from medbench.sources.registry import (
        SOURCES,
        create_source,
        get_card,
        list_sources,
        register_source,
    )

# Re-exports resolved on first use: ``medbench sources`` registers its command through
# ``medbench.sources.cli``, which must not pay for importing torch.
_EXPORTS = {
    "PREPROCESSING": "medbench.sources.card",
    "Preprocessing": "medbench.sources.card",
    "SourceCard": "medbench.sources.card",
    "get_preprocessing": "medbench.sources.card",
    "SourceModel": "medbench.sources.model",
    "SOURCES": "medbench.sources.registry",
    "create_source": "medbench.sources.registry",
    "get_card": "medbench.sources.registry",
    "list_sources": "medbench.sources.registry",
    "register_source": "medbench.sources.registry",
}

__all__ = [
    "PREPROCESSING",
    "Preprocessing",
    "SOURCES",
    "SourceCard",
    "SourceModel",
    "create_source",
    "get_card",
    "get_preprocessing",
    "list_sources",
    "register_source",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
