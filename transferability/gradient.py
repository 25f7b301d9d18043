"""FU: gradient-based adaptability of a source (Juodelyte et al. 2024) and the combined score.

FU feeds triplets (anchor, positive of the same class, negative of another class) through the
source's embedding (classifier removed, model in eval mode), takes the triplet-margin loss and,
without any optimizer step, the gradient of the loss with respect to the weights of two layers:
the first layer and an early layer. FU = mean over batches of ||grad early||_F divided by the
mean over batches of ||grad first||_F.

Layer pairs are resolved for timm families (first conv -> first conv of the first stage block):

=============  ====================  =========================================
family         first layer           early layer
=============  ====================  =========================================
ResNet         conv1                 layer1.0.conv1
DenseNet       features.conv0        features.denseblock1.denselayer1.conv1
EfficientNet   conv_stem             blocks.0.0.conv_dw (or conv_pw / conv)
ConvNeXt       stem.0                stages.0.blocks.0.conv_dw
VGG            features.0            the second convolution
=============  ====================  =========================================

Any other model falls back to its first and second convolutions; pass ``layers=(first, early)``
to choose explicitly.

Note: timm initialises the last BatchNorm of every residual branch to zero (``zero_init_last``),
so on a *randomly initialised* timm ResNet no gradient reaches ``layer1.0.conv1`` and FU is
exactly 0; that is the true value for that initialisation, not a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from medbench.errors import InputError
from medbench.utils.rng import numpy_rng

log = logging.getLogger(__name__)

# (suffix of the first layer, suffix of the early layer), tried in order
LAYER_PATTERNS: tuple[tuple[str, str], ...] = (
    ("conv1", "layer1.0.conv1"),
    ("features.conv0", "features.denseblock1.denselayer1.conv1"),
    ("conv_stem", "blocks.0.0.conv_dw"),
    ("conv_stem", "blocks.0.0.conv_pw"),
    ("conv_stem", "blocks.0.0.conv"),
    ("stem.0", "stages.0.blocks.0.conv_dw"),
    ("stem.conv", "stages.0.blocks.0.conv_dw"),
)


def _weighted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "weight", None) is not None]


def resolve_layers(model: nn.Module, layers: tuple[str, str] | None = None) -> tuple[str, str]:
    """Names of (first layer, early layer) for ``model``; explicit ``layers`` are validated.

    Raises:
        InputError: an explicit name is not a module with a weight, or no convolutions exist.
    """
    named = dict(_weighted_modules(model))
    if layers is not None:
        for name in layers:
            if name not in named:
                raise InputError(f"layers: {name!r} is not a conv/linear module of the model; choose from "
                                 f"{list(named)[:8]}...")
        return layers[0], layers[1]
    convs = [n for n, m in named.items() if isinstance(m, nn.Conv2d)]
    if len(convs) < 2:
        raise InputError("FU needs a model with at least two convolutions; pass layers=(first, early)")
    for first_sfx, early_sfx in LAYER_PATTERNS:
        first = next((n for n in convs if n == first_sfx or n.endswith("." + first_sfx)), None)
        early = next((n for n in convs if n == early_sfx or n.endswith("." + early_sfx)), None)
        if first == convs[0] and early is not None:
            return first, early
    log.info("no known layer pattern for %s: using its first two convolutions", type(model).__name__)
    return convs[0], convs[1]


def default_embed(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The embedding without classifier: ``SourceModel.features`` or timm's pre-logits."""
    if hasattr(model, "features") and callable(model.features) and hasattr(model, "backbone"):
        return model.features
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
    raise InputError(f"cannot find the embedding of a {type(model).__name__}: pass embed=callable "
                     "returning (B, D) features")


def mine_triplets(labels: Any, n_triplets: int | None = None, *, seed: int = 0) -> np.ndarray:
    """Deterministic triplets (anchor, positive, negative) as an (T, 3) index array.

    Anchors are visited in a seeded permutation; each gets a random other sample of its class
    and a random sample of another class. Classes with a single sample cannot be anchors.
    """
    y = np.asarray(labels).astype(np.int64)
    if y.ndim != 1 or len(np.unique(y)) < 2:
        raise InputError("labels must be 1-D with at least 2 classes to mine triplets")
    rng = numpy_rng(seed, "fu-triplets")
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    anchors = [i for i in rng.permutation(len(y)) if len(by_class[y[i]]) > 1]
    if not anchors:
        raise InputError("labels: every class has a single sample; FU needs two of some class")
    if n_triplets is not None:
        anchors = anchors[:n_triplets]
    out = []
    for i in anchors:
        same = by_class[y[i]]
        pos = same[same != i][rng.integers(len(same) - 1)]
        other = np.flatnonzero(y != y[i])
        out.append((i, pos, other[rng.integers(len(other))]))
    return np.asarray(out, dtype=np.int64)


def fu_details(model: nn.Module, images: torch.Tensor, labels: Any, *, layers: tuple[str, str] | None = None,
               embed: Callable[[torch.Tensor], torch.Tensor] | None = None, n_triplets: int | None = 64,
               batch_size: int = 16, margin: float = 1.0, seed: int = 0,
               device: str | torch.device = "cpu") -> dict[str, Any]:
    """FU with its parts: layer names and the mean gradient norms of both layers.

    Args:
        model: Source model (SourceModel or timm model); left unchanged (mode restored,
            no ``.grad`` written).
        images: (N, C, H, W) inputs as the model/embedding takes them.
        labels: (N,) class labels.
        layers: Explicit (first, early) module names; resolved automatically when None.
        embed: Embedding function; default :func:`default_embed`.
        n_triplets: Triplets used (None: one per eligible anchor).
        batch_size: Triplets per backward pass.
        margin: Triplet-margin loss margin (L2 distance).
        seed: Triplet mining seed.
        device: Where to run.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputError("images must be a (N, C, H, W) tensor")
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if len(y) != images.shape[0]:
        raise InputError(f"labels has {len(y)} entries for {images.shape[0]} images; pass one per image")
    first, early = resolve_layers(model, layers)
    mods = dict(model.named_modules())
    params = [mods[first].weight, mods[early].weight]
    embed = embed or default_embed(model)
    trip = mine_triplets(y, n_triplets, seed=seed)
    loss_fn = nn.TripletMarginLoss(margin=margin, p=2)
    was_training = model.training
    model.to(device).eval()
    norms: list[tuple[float, float]] = []
    try:
        for start in range(0, len(trip), batch_size):
            t = trip[start:start + batch_size]
            x = images[torch.as_tensor(t.T.reshape(-1))].to(device)
            z = embed(x)
            b = len(t)
            loss = loss_fn(z[:b], z[b:2 * b], z[2 * b:])
            g_first, g_early = torch.autograd.grad(loss, params, allow_unused=False)
            norms.append((float(g_first.norm()), float(g_early.norm())))
    finally:
        model.train(was_training)
    arr = np.asarray(norms)
    first_mean, early_mean = float(arr[:, 0].mean()), float(arr[:, 1].mean())
    if first_mean == 0.0:
        raise InputError("the first layer's gradient is zero for every batch (all triplets already "
                         "satisfy the margin?); raise margin or use more triplets")
    return {"fu": early_mean / first_mean, "first_layer": first, "early_layer": early,
            "first_grad_norm": first_mean, "early_grad_norm": early_mean, "n_triplets": len(trip),
            "n_batches": len(norms)}


def fu(model: nn.Module, images: torch.Tensor, labels: Any, **kwargs: Any) -> float:
    """FU score: mean ||grad early layer||_F / mean ||grad first layer||_F (see :func:`fu_details`)."""
    return float(fu_details(model, images, labels, **kwargs)["fu"])


def minmax(values: Mapping[str, float]) -> dict[str, float]:
    """Min-max scale across candidates to [0, 1]; all-equal values map to 1."""
    v = np.array(list(values.values()), dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise InputError("scores must be finite to min-max scale them")
    lo, hi = v.min(), v.max()
    return {k: (1.0 if hi == lo else float((x - lo) / (hi - lo))) for k, x in values.items()}


def combined_score(lp: Mapping[str, float], fu_scores: Mapping[str, float]) -> dict[str, float]:
    """The paper's score for one target: min-max(LP) x min-max(FU) across candidate sources."""
    if set(lp) != set(fu_scores):
        raise InputError(f"lp and fu must score the same sources, got {sorted(lp)} and {sorted(fu_scores)}")
    a, b = minmax(lp), minmax(fu_scores)
    return {k: a[k] * b[k] for k in lp}
