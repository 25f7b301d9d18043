"""Pretrained sources: a :class:`SourceCard` per source and the ``create_source`` factory.

Example:
    >>> from medbench.sources import create_source
    >>> model = create_source("random", arch="resnet18", num_classes=2, in_chans=1)
    >>> model(torch.rand(2, 1, 64, 64)).shape  # doctest: +SKIP
    torch.Size([2, 2])
"""

from __future__ import annotations

from medbench.sources.card import PREPROCESSING, Preprocessing, SourceCard, get_preprocessing
from medbench.sources.model import SourceModel
from medbench.sources.registry import (
    SOURCES,
    create_source,
    get_card,
    list_sources,
    register_source,
)

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
