"""``SourceCard``: everything medbench needs to know about one pretrained source.

A card names the timm architecture, how its weights are loaded, and the exact input the weights
expect (value range, channel order, mean/std, resolution, what to do with grey images). The
:class:`~medbench.sources.model.SourceModel` reads the card to preprocess images in [0, 1] itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medbench.errors import InputError
from medbench.registry import did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Keras imagenet_utils "caffe" mode, BGR order

CHANNEL_POLICIES = ("repeat", "fold")
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocessing:
    """How an image in [0, 1] becomes the tensor a set of weights was trained on.

    The steps, in order: grey -> 3 channels (when the weights need 3 and the card says "repeat"),
    channel order (RGB -> BGR flips the channel axis), scaling ``lo + x * (hi - lo)`` to
    ``input_range``, then ``(x - mean) / std`` per channel (mean/std given in the final channel
    order and in the units of ``input_range``; a single value applies to every channel).

    Args:
        name: Short name of the preset ("imagenet", "caffe", ...).
        input_range: ``(lo, hi)`` the [0, 1] image is mapped onto.
        channel_order: "RGB" or "BGR".
        mean: Per-channel mean subtracted after scaling.
        std: Per-channel divisor after the mean.
        note: Where the preset comes from.
    """

    name: str
    input_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "RGB"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    note: str = ""

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if len(self.mean) not in (1, 3) or len(self.std) not in (1, 3):
            raise ValueError("mean and std need 1 or 3 entries each")
        if any(s <= 0 for s in self.std):
            raise ValueError("std entries must be positive")


PREPROCESSING: dict[str, Preprocessing] = {
    p.name: p
    for p in (
        Preprocessing("imagenet", note="torchvision/timm ImageNet: RGB [0, 1], ImageNet mean/std"),
        Preprocessing(
            "tf",
            input_range=(0.0, 1.0),
            mean=(0.5,),
            std=(0.5,),
            note="[-1, 1] (Keras 'tf' mode, TF EfficientNet-Lite mean 127/std 128 rounded)",
        ),
        Preprocessing(
            "caffe",
            input_range=(0.0, 255.0),
            channel_order="BGR",
            mean=CAFFE_MEAN_BGR,
            std=(1.0,),
            note="Keras imagenet_utils.preprocess_input(mode='caffe'): BGR, 0-255 minus the BGR mean",
        ),
        Preprocessing(
            "caffe-rescaled",
            input_range=(0.0, 1.0),
            channel_order="BGR",
            mean=tuple(m / 255.0 for m in CAFFE_MEAN_BGR),
            std=(1.0,),
            note=(
                "RadImageNet's own training scripts: ImageDataGenerator(rescale=1/255, "
                "preprocessing_function=preprocess_input) applies 'caffe' mode and then divides by 255"
            ),
        ),
        Preprocessing(
            "tf-lite",
            input_range=(0.0, 255.0),
            mean=(127.0,),
            std=(128.0,),
            note="TensorFlow EfficientNet-Lite: RGB 0-255, mean 127, std 128 (about [-1, 1])",
        ),
        Preprocessing("unit", mean=(0.0,), std=(1.0,), note="identity: the [0, 1] image as is"),
    )
}


def get_preprocessing(name: str) -> Preprocessing:
    """Look up a preprocessing preset by name (unknown names raise with "did you mean")."""
    try:
        return PREPROCESSING[name]
    except KeyError:
        raise InputError(
            f"unknown preprocessing {name!r}: {did_you_mean(name, list(PREPROCESSING))}"
        ) from None


@dataclass(frozen=True)
class SourceCard:
    """A pretrained source: architecture, weights loader and the input its weights expect.

    Args:
        name: Registry name, e.g. ``"imagenet"``.
        arch: Default timm architecture name.
        loader: ``loader(card, *, arch, num_classes, in_chans, weights, drop_rate) -> nn.Module``
            building the backbone (a timm-style model with ``forward_features``,
            ``forward_head(x, pre_logits=...)`` and ``get_classifier``).
        preprocessing: The default preprocessing preset.
        weights_in_chans: Channels the weights were trained with (3 for RGB weights); ``None``
            when there are no weights (the model is built with the caller's ``in_chans``).
        channel_policy: For grey input and 3-channel weights: "repeat" (copy grey to 3 channels in
            ``preprocess``; default) or "fold" (sum the first conv's RGB filters, timm-style).
        arch_choices: Architectures ``create_source(..., arch=...)`` accepts; ``None``: any timm name.
        needs_weights: True when the source needs ``weights=PATH`` (no bundled/hub weights).
        resolution: Native training resolution (square side, pixels).
        preprocessing_options: Other presets the weights are used with in the literature.
        licence: Licence of the weights.
        citation: Reference for the weights.
        description: One line for ``medbench sources``.
        extra: pip extra providing the weights (e.g. "weights"), if any.
        default_num_classes: Size of the pretrained head (1000 for ImageNet), if any.
    """

    name: str
    arch: str
    loader: Callable[..., Any] = field(repr=False, compare=False)
    preprocessing: Preprocessing = PREPROCESSING["imagenet"]
    weights_in_chans: int | None = 3
    channel_policy: str = "repeat"
    arch_choices: tuple[str, ...] | None = None
    needs_weights: bool = False
    resolution: int = 224
    preprocessing_options: tuple[str, ...] = ()
    licence: str = ""
    citation: str = ""
    description: str = ""
    extra: str | None = None
    default_num_classes: int | None = 1000
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.channel_policy not in CHANNEL_POLICIES:
            raise ValueError(f"channel_policy must be one of {CHANNEL_POLICIES}")

    def with_options(
        self, *, preprocessing: str | Preprocessing | None = None, channel_policy: str | None = None
    ) -> SourceCard:
        """A copy of the card with another preprocessing preset and/or channel policy."""
        changes: dict[str, Any] = {}
        if preprocessing is not None:
            changes["preprocessing"] = (
                preprocessing
                if isinstance(preprocessing, Preprocessing)
                else get_preprocessing(preprocessing)
            )
        if channel_policy is not None:
            if channel_policy not in CHANNEL_POLICIES:
                raise InputError(
                    f"channel_policy must be one of {CHANNEL_POLICIES}, got {channel_policy!r}"
                )
            changes["channel_policy"] = channel_policy
        return dataclasses.replace(self, **changes) if changes else self

    def summary(self) -> dict[str, str]:
        """Flat string fields for tables and reports."""
        p = self.preprocessing
        return {
            "name": self.name,
            "arch": self.arch if self.arch_choices is None else "|".join(self.arch_choices),
            "weights": _weights_source(self),
            "input": f"{p.channel_order} {p.input_range[0]:g}..{p.input_range[1]:g}",
            "mean/std": f"{_fmt(p.mean)} / {_fmt(p.std)}",
            "preprocessing": p.name,
            "grey": self.channel_policy if self.weights_in_chans == 3 else "native",
            "resolution": str(self.resolution),
            "licence": self.licence,
            "citation": self.citation,
        }


def _weights_source(card: SourceCard) -> str:
    if card.needs_weights:
        return "weights=PATH"
    if card.weights_in_chans is None:
        return "none"
    return f"package [{card.extra}]" if card.extra else "hub or weights=PATH"


def _fmt(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:.3g}" for v in values)
