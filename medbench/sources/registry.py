"""The ``SOURCES`` registry of :class:`SourceCard` and the ``create_source`` factory."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from medbench.errors import InputError
from medbench.registry import Registry
from medbench.sources.card import Preprocessing, SourceCard
from medbench.sources.model import SourceModel

logger = logging.getLogger(__name__)



class SourceLoader(Protocol):
    """A card's ``loader``: builds the timm backbone (or ``(backbone, refined card)``) for the card."""

    def __call__(self, card: SourceCard, *, arch: str, num_classes: int | None, in_chans: int,
                 weights: str | os.PathLike[str] | None, drop_rate: float, **kwargs: Any) -> Any: ...


class SourceCardProtocol(Protocol):
    """The contract of a ``SOURCES`` entry (:class:`SourceCard` implements it): what the source is
    (name, arch, preprocessing, weights policy, licence) and the ``loader`` that builds it."""

    name: str
    arch: str
    loader: Callable[..., Any]
    preprocessing: Any
    needs_weights: bool
    arch_choices: tuple[str, ...] | None
    channel_policy: str
    weights_in_chans: int | None
    default_num_classes: int | None
    extra: str | None
    metadata: Mapping[str, str]

    def with_options(self, *, preprocessing: Any = None, channel_policy: str | None = None) -> Any: ...


# Modules whose import registers the built-in cards (imported on the first lookup; import errors raise).
_BUILTIN_MODULES = (
    "medbench.sources.imagenet",
    "medbench.sources.efficientnet_lite",
    "medbench.sources.radimagenet",
    "medbench.sources.checkpoint_source",
)
SOURCES: Registry[SourceCard] = Registry("source", builtins=_BUILTIN_MODULES, protocol=SourceCardProtocol)


def _ensure_builtin() -> None:
    SOURCES.load_builtins()


def register_source(card: SourceCard, *, overwrite: bool = False) -> SourceCard:
    """Add ``card`` to :data:`SOURCES` under ``card.name``."""
    return SOURCES.add(card.name, card, overwrite=overwrite)


def get_card(name: str) -> SourceCard:
    """The card registered as ``name`` (unknown names raise ``UnknownNameError`` with "did you mean")."""
    _ensure_builtin()
    return SOURCES.get(name)


def list_sources() -> list[SourceCard]:
    """Every registered card, in registration order."""
    _ensure_builtin()
    return [card for _, card in SOURCES.items()]


def first_conv_in_channels(backbone: nn.Module) -> int:
    """Input channels of the backbone's first convolution (timm ``pretrained_cfg['first_conv']``)."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    if isinstance(first, (list, tuple)):
        first = first[0]
    if first:
        try:
            return int(backbone.get_submodule(first).in_channels)
        except (AttributeError, TypeError):
            pass
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    raise ValueError("backbone has no Conv2d layer")


def create_source(
    name: str,
    *,
    arch: str | None = None,
    num_classes: int | None = 2,
    in_chans: int = 1,
    weights: str | os.PathLike[str] | None = None,
    drop_rate: float = 0.0,
    preprocessing: str | Preprocessing | None = None,
    channel_policy: str | None = None,
    seed: int | None = 0,
    **kwargs: Any,
) -> SourceModel:
    """Build the source ``name`` as a :class:`SourceModel` that takes images in [0, 1].

    Args:
        name: A registered source ("random", "imagenet", "radimagenet", "efficientnet-lite0-imagenet",
            "checkpoint", ...).
        arch: timm architecture; defaults to the card's (only where the card allows an override).
        num_classes: Size of the new head; ``None`` keeps the pretrained head (source logits),
            ``0`` gives no head (``forward`` returns the pooled features).
        in_chans: Channels of the images fed to the model (1 for grey).
        weights: Local weights file, where the source takes one (required for "radimagenet" and
            "checkpoint"; an offline alternative to the hub for "imagenet").
        drop_rate: Dropout before the head (the Source-Matters paper uses 0.5).
        preprocessing: Override the card's preprocessing preset (see ``card.PREPROCESSING``).
        channel_policy: Override the card's grey-image policy ("repeat" or "fold").
        seed: Seed of the randomly initialised weights (the whole network for ``random``, the new
            head otherwise), drawn inside a forked RNG so global state is untouched; ``None``
            draws from torch's global RNG.
        **kwargs: Passed to the card's loader (e.g. ``variant=`` for RadImageNet files).

    Returns:
        The model in eval mode on CPU.
    """
    card = get_card(name)
    card = card.with_options(preprocessing=preprocessing, channel_policy=channel_policy)
    if arch is not None and card.arch_choices is not None and arch not in card.arch_choices:
        raise InputError(
            f"source {name!r} supports arch in {list(card.arch_choices)} (given arch={arch!r}); "
            f"drop the arch argument or use the 'random'/'imagenet'/'checkpoint' sources"
        )
    if in_chans < 1:
        raise InputError(f"in_chans must be >= 1, got {in_chans}")
    if num_classes is not None and num_classes < 0:
        raise InputError(f"num_classes must be >= 0 or None, got {num_classes}")
    if not 0.0 <= drop_rate < 1.0:
        raise InputError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if card.needs_weights and weights is None:
        raise InputError(
            f"source {name!r} has no bundled weights: pass weights=PATH (a local weights file)"
        )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        built = card.loader(
            card,
            arch=arch or card.arch,
            num_classes=num_classes,
            in_chans=in_chans,
            weights=weights,
            drop_rate=drop_rate,
            **kwargs,
        )
    # A loader may refine the card (e.g. mean/std read from the weights' own config).
    backbone, card = built if isinstance(built, tuple) else (built, card)
    if preprocessing is None and weights is not None:
        from medbench.sources.checkpoint import preprocessing_from_file

        recorded = preprocessing_from_file(weights)  # written by save_source_weights
        if recorded is not None:
            card = card.with_options(preprocessing=recorded)
    model_chans = first_conv_in_channels(backbone)
    model = SourceModel(backbone, card, in_chans=in_chans, model_chans=model_chans)
    logger.debug("created source %s: %s", name, model.extra_repr())
    return model.eval()


def model_channels(card: SourceCard, in_chans: int) -> int:
    """Channels the network should be built with for ``in_chans`` input under the card's policy."""
    if card.weights_in_chans is None or card.channel_policy == "fold":
        return in_chans
    return card.weights_in_chans if in_chans == 1 else in_chans


def resolve_num_classes(card: SourceCard, num_classes: int | None) -> int:
    """``None`` means the pretrained head's size (1000 for ImageNet cards)."""
    if num_classes is None:
        return card.default_num_classes if card.default_num_classes is not None else 0
    return num_classes
