"""FU: gradient-based adaptability of a source (Juodelyte et al. 2024) and the combined score.

The authors' recipe (DovileDo/transferability-in-medical-imaging, ``FU_Score``): the source with
its classifier removed, in eval mode, sees the target's training images in order (no shuffling)
in batches of ``floor(N / 6)`` (the last, smaller batch included). For each batch the loss is
pytorch-metric-learning's ``TripletMarginLoss()`` with its defaults:

- embeddings L2-normalised, distance = Euclidean distance between the normalised embeddings;
- every valid in-batch triplet (anchor a, positive p != a of a's class, negative n of another
  class), both (a, p) and (p, a);
- per-triplet loss ``relu(d(a, p) - d(a, n) + 0.05)``;
- reduced by the mean over the triplets whose loss is > 0 (``AvgNonZeroReducer``); a batch where
  no triplet is active (or none exists) has loss 0 and zero gradients.

Without any optimiser step, the gradient of each batch's loss gives the Frobenius norms of the
weights of two layers, the first layer and an early layer;
FU = mean over batches of ||grad early||_F / mean over batches of ||grad first||_F.
When every triplet of every batch satisfies the margin, both means are 0 and FU is undefined (the
authors' code returns NaN): :func:`fu_details` raises :class:`InputError` instead.

Layer pairs are resolved for timm families (first conv -> first conv of the first stage block),
as the authors pick them for the torchvision models:

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

log = logging.getLogger(__name__)

FU_MARGIN = 0.05  # pytorch-metric-learning's TripletMarginLoss default, as the authors use it
FU_BATCHES = 6  # the authors' DataLoader: batch_size = floor(N / 6), shuffle=False

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


def triplet_margin_loss(z: torch.Tensor, labels: torch.Tensor, *, margin: float = FU_MARGIN,
                        normalize: bool = True, anchor_chunk: int = 64) -> tuple[torch.Tensor, int, int]:
    """Triplet-margin loss over every valid in-batch triplet, mean over the non-zero ones.

    pytorch-metric-learning semantics (``TripletMarginLoss`` with ``AvgNonZeroReducer``).

    Args:
        z: (B, D) embeddings.
        labels: (B,) integer labels on ``z``'s device.
        margin: Margin on the distance.
        normalize: L2-normalise the embeddings first (the default, as pml).
        anchor_chunk: Anchors per vectorised step (memory ~ chunk x B x B).

    Returns:
        (loss, number of valid triplets, number with a non-zero loss). With no active triplet the
        loss is an exact 0 still attached to ``z``, so its gradients are zeros.
    """
    if normalize:
        z = nn.functional.normalize(z, p=2, dim=1)
    dist = torch.cdist(z, z, p=2)
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=z.device)
    pos_mask, neg_mask = same & not_self, ~same
    total = z.sum() * 0.0
    n_valid = n_active = 0
    for s in range(0, len(labels), anchor_chunk):
        d = dist[s:s + anchor_chunk]
        valid = pos_mask[s:s + anchor_chunk, :, None] & neg_mask[s:s + anchor_chunk, None, :]
        losses = torch.relu(d[:, :, None] - d[:, None, :] + margin)[valid]
        n_valid += int(valid.sum())
        n_active += int((losses > 0).sum())
        total = total + losses.sum()
    return (total / n_active if n_active else total), n_valid, n_active


def fu_details(model: nn.Module, images: torch.Tensor, labels: Any, *, layers: tuple[str, str] | None = None,
               embed: Callable[[torch.Tensor], torch.Tensor] | None = None, n_batches: int = FU_BATCHES,
               batch_size: int | None = None, margin: float = FU_MARGIN, normalize: bool = True,
               device: str | torch.device = "cpu") -> dict[str, Any]:
    """FU with its parts: layer names, the mean gradient norms of both layers, triplet counts.

    Args:
        model: Source model (SourceModel or timm model); left unchanged (mode restored,
            no ``.grad`` written).
        images: (N, C, H, W) inputs as the model/embedding takes them, in the order batched.
        labels: (N,) class labels.
        layers: Explicit (first, early) module names; resolved automatically when None.
        embed: Embedding function; default :func:`default_embed`.
        n_batches: Split the images into batches of ``floor(N / n_batches)`` (the authors: 6);
            a smaller last batch holds the remainder.
        batch_size: Explicit batch size instead (overrides ``n_batches``).
        margin: Triplet margin on the distance between normalised embeddings (0.05).
        normalize: L2-normalise the embeddings (pml's default; False only for experiments).
        device: Where to run.

    Raises:
        InputError: bad shapes, fewer than two classes, or no triplet of any batch violates the
            margin (FU would be 0/0).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputError("images must be a (N, C, H, W) tensor")
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if y.ndim != 1 or len(y) != images.shape[0]:
        raise InputError(f"labels has shape {y.shape} for {images.shape[0]} images; pass one label per image")
    if len(np.unique(y)) < 2:
        raise InputError("labels hold a single class: FU's triplets need at least 2 classes")
    n = len(y)
    bs = int(batch_size) if batch_size is not None else max(1, n // max(1, int(n_batches)))
    if bs < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    first, early = resolve_layers(model, layers)
    mods = dict(model.named_modules())
    params = [mods[first].weight, mods[early].weight]
    embed = embed or default_embed(model)
    was_training = model.training
    model.to(device).eval()
    norms: list[tuple[float, float]] = []
    n_valid = n_active = 0
    try:
        for start in range(0, n, bs):
            x = images[start:start + bs].to(device)
            z = embed(x)
            yb = torch.as_tensor(y[start:start + bs], device=z.device)
            loss, v, a = triplet_margin_loss(z, yb, margin=margin, normalize=normalize)
            n_valid, n_active = n_valid + v, n_active + a
            g_first, g_early = torch.autograd.grad(loss, params, allow_unused=True)
            norms.append((0.0 if g_first is None else float(g_first.norm()),
                          0.0 if g_early is None else float(g_early.norm())))
    finally:
        model.train(was_training)
    arr = np.asarray(norms)
    first_mean, early_mean = float(arr[:, 0].mean()), float(arr[:, 1].mean())
    if n_active == 0:
        raise InputError(f"every one of the {n_valid} in-batch triplets already satisfies the margin "
                         f"{margin} (or no batch holds two samples of a class): FU is 0/0; use larger "
                         "batches (fewer n_batches) or more images")
    if first_mean == 0.0:
        raise InputError(f"no gradient reaches the first layer {first!r}; choose layers=(first, early) "
                         "that the loss depends on")
    return {"fu": early_mean / first_mean, "first_layer": first, "early_layer": early,
            "first_grad_norm": first_mean, "early_grad_norm": early_mean, "n_triplets": n_valid,
            "n_active_triplets": n_active, "n_batches": len(norms), "batch_size": bs}


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
