"""Early-layer feature statistics for the GDCE feature loss.

The paper uses global-average-pooled VGG16 conv2_2 features of a RadImageNet/ImageNet network.
:class:`EarlyFeatures` captures any named module's output with a forward hook and stops the
forward pass there, so only the early layers are computed. Offline, medbench's substitute is the
genuine ImageNet EfficientNet-Lite0 (``efficientnet-lite0-imagenet`` source, stage ``blocks.1``,
stride 4 like VGG's conv2_2); any registered source works.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medbench.errors import InputError

# module to tap per timm family: a stride-4 layer comparable to VGG16 conv2_2
DEFAULT_TAPS = {
    "vgg": "features.8",
    "resnet": "layer1",
    "efficientnet": "blocks.1",
    "densenet": "features.denseblock1",
    "convnext": "stages.0",
}


class _Stop(Exception):
    pass


class EarlyFeatures(nn.Module):
    """Run ``model`` up to module ``tap`` and return its output (B, C, h, w).

    Args:
        model: Any module (frozen here: eval mode, no grads for its parameters).
        tap: Dotted name of the submodule whose output is captured.
        preprocess: Optional callable applied to [0, 1] images before ``model``.
    """

    def __init__(self, model: nn.Module, tap: str, preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        names = dict(model.named_modules())
        if tap not in names:
            close = [n for n in names if n.split(".")[0] == tap.split(".")[0]][:8]
            raise InputError(f"module {tap!r} not found in the feature network; e.g. {close or list(names)[:8]}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tap = tap
        self.preprocess = preprocess
        self._out: torch.Tensor | None = None
        names[tap].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        self._out = output
        raise _Stop

    def train(self, mode: bool = True) -> EarlyFeatures:  # the feature network stays in eval mode
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        try:
            self.model(x)
        except _Stop:
            pass
        out, self._out = self._out, None
        if out is None:
            raise InputError(f"module {self.tap!r} was not reached in the forward pass")
        return out


def feature_network_from_source(name: str = "efficientnet-lite0-imagenet", *, tap: str | None = None,
                                **source_kwargs) -> EarlyFeatures:
    """Build :class:`EarlyFeatures` from a registered medbench source (grey [0, 1] input)."""
    from medbench.sources import create_source

    src = create_source(name, num_classes=0, in_chans=1, **source_kwargs)
    backbone = src.backbone
    if tap is None:
        arch = type(backbone).__name__.lower()
        tap = next((t for fam, t in DEFAULT_TAPS.items() if fam in arch), None)
        if tap is None:
            raise InputError(f"no default feature layer for {type(backbone).__name__}: pass tap=MODULE_NAME")
    return EarlyFeatures(backbone, tap, preprocess=src.preprocess)


def random_conv_features(seed: int = 0, width: int = 32) -> EarlyFeatures:
    """A small fixed random conv net (two conv blocks, stride 4): a weights-free feature network
    for tests and for users without any pretrained source. Random features still measure local
    intensity statistics, which is what the loss compares."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / (m.in_channels * 9)) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return EarlyFeatures(net, "9")


#: torchvision ``vgg16().features`` indices: 0 conv1_1, 2 conv1_2, 5 conv2_1, 7 conv2_2 (each
#: followed by its ReLU). The paper's loss taps conv2_2 *before* its ReLU: ``features[:8]``.
VGG16_CONV2_2 = 7


class VggConv22(nn.Module):
    """VGG16 ``features[:8]`` (conv2_2 before its ReLU) of a torchvision VGG16, frozen.

    Grey [0, 1] images are repeated to three channels and fed as they are (no ImageNet mean/SD
    normalisation), as the GDCE authors do.
    """

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.body = features[: VGG16_CONV2_2 + 1].eval()
        for p in self.body.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> VggConv22:  # frozen: stays in eval mode
        super().train(mode)
        self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x)


def vgg16_conv2_2(weights: str | None) -> VggConv22:
    """The paper's feature network from a user-supplied torchvision VGG16 weights file.

    Args:
        weights: A ``torch.save``d state dict of ``torchvision.models.vgg16`` (``features.*``
            keys; classifier keys, e.g. of a RadImageNet head, are ignored), or of its ``features``.

    Raises:
        InputError: No file given, file missing, or it lacks the conv1/conv2 weights.
    """
    from pathlib import Path

    from torchvision.models import vgg16

    if not weights:
        raise InputError("--recipe paper needs --vgg-weights PATH: a torchvision VGG16 state dict "
                         "(ImageNet or RadImageNet); offline, see the README (GDCE feature network)")
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"--vgg-weights {path}: file not found; pass a torch.save'd torchvision VGG16 state dict")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, nn.Module):  # pragma: no cover - weights_only refuses modules
        blob = blob.state_dict()
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"--vgg-weights {path}: not a state dict")
    state = {k.removeprefix("module.").removeprefix("vgg."): v for k, v in state.items()}
    if not any(k.startswith("features.") for k in state):
        state = {f"features.{k}": v for k, v in state.items()}
    model = vgg16(weights=None)
    wanted = {k: v for k, v in model.state_dict().items() if k.startswith("features.")
              and int(k.split(".")[1]) <= VGG16_CONV2_2}
    missing = [k for k in wanted if k not in state or tuple(state[k].shape) != tuple(wanted[k].shape)]
    if missing:
        raise InputError(f"--vgg-weights {path}: not a VGG16 state dict (missing or mis-shaped {missing[:3]})")
    model.features.load_state_dict({k.removeprefix("features."): state[k] for k in wanted}, strict=False)
    return VggConv22(model.features)
