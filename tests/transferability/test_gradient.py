"""FU (gradient-norm ratio) and the combined LP x FU score."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from medbench.errors import InputError
from transferability.gradient import (
    combined_score,
    fu,
    fu_details,
    mine_triplets,
    minmax,
    resolve_layers,
)


@pytest.mark.parametrize("arch, expected", [
    ("resnet18", ("conv1", "layer1.0.conv1")),
    ("densenet121", ("features.conv0", "features.denseblock1.denselayer1.conv1")),
    ("efficientnet_b0", ("conv_stem", "blocks.0.0.conv_dw")),
    ("convnext_atto", ("stem.0", "stages.0.blocks.0.conv_dw")),
])
def test_layers_resolved_per_timm_family(arch: str, expected: tuple[str, str]) -> None:
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    assert resolve_layers(model) == expected


class TinyVGG(nn.Module):
    """VGG-like layout: ``features`` with conv/relu/pool, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_vgg_like_falls_back_to_first_two_convs_and_explicit_layers_are_checked() -> None:
    m = TinyVGG()
    assert resolve_layers(m) == ("features.0", "features.3")
    assert resolve_layers(m, ("features.3", "features.0")) == ("features.3", "features.0")
    with pytest.raises(InputError, match="layers"):
        resolve_layers(m, ("features.1", "features.3"))


def test_triplets_are_valid_and_deterministic() -> None:
    y = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    t = mine_triplets(y, seed=3)
    np.testing.assert_array_equal(t, mine_triplets(y, seed=3))
    assert not np.array_equal(t, mine_triplets(y, seed=4))
    assert len(t) == len(y)
    assert np.all(y[t[:, 0]] == y[t[:, 1]]) and np.all(t[:, 0] != t[:, 1])
    assert np.all(y[t[:, 0]] != y[t[:, 2]])
    assert len(mine_triplets(y, 3, seed=3)) == 3
    with pytest.raises(InputError):
        mine_triplets(np.zeros(5, dtype=int))


def test_fu_equals_manual_gradient_norm_ratio() -> None:
    torch.manual_seed(0)
    model = TinyVGG()
    x = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = np.arange(12) % 3
    d = fu_details(model, x, y, embed=model.features, n_triplets=12, batch_size=4, margin=2.0, seed=5)
    trip = mine_triplets(y, 12, seed=5)
    w1, w2 = model.features[0].weight, model.features[3].weight
    n1, n2 = [], []
    for s in range(0, 12, 4):
        a, p, n = (model.features(x[torch.as_tensor(trip[s:s + 4, j])]) for j in range(3))
        loss = torch.clamp((a - p).norm(dim=1) - (a - n).norm(dim=1) + 2.0, min=0).mean()
        g1, g2 = torch.autograd.grad(loss, [w1, w2])
        n1.append(float(torch.sqrt((g1**2).sum())))
        n2.append(float(torch.sqrt((g2**2).sum())))
    assert d["first_layer"] == "features.0" and d["early_layer"] == "features.3"
    assert d["n_batches"] == 3
    assert d["fu"] == pytest.approx(np.mean(n2) / np.mean(n1), rel=1e-4)


def test_fu_leaves_the_model_untouched() -> None:
    model = TinyVGG().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    fu(model, x, np.arange(8) % 2, embed=model.features)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fu_rejects_bad_input() -> None:
    model = TinyVGG()
    with pytest.raises(InputError):
        fu(model, torch.rand(8, 16, 16), np.arange(8) % 2)
    with pytest.raises(InputError):
        fu(model, torch.rand(8, 1, 16, 16), np.arange(7) % 2)


def test_fu_pretrained_efficientnet_differs_from_random(lite0_pair) -> None:
    x = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = np.arange(16) % 2
    scores = {}
    for name, model in lite0_pair.items():
        d = fu_details(model, x, y, n_triplets=8, batch_size=8)
        assert d["first_layer"] == "backbone.conv_stem" and d["early_layer"] == "backbone.blocks.0.0.conv_dw"
        assert np.isfinite(d["fu"]) and d["fu"] > 0
        assert fu(model, x, y, n_triplets=8, batch_size=8) == d["fu"]  # deterministic
        scores[name] = d["fu"]
    # ImageNet weights pass far more gradient to the early layer than a random init does
    assert scores["pretrained"] > 3 * scores["random"]


def test_minmax_and_combined_score() -> None:
    assert minmax({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax({"a": 2.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}
    comb = combined_score({"a": 0.5, "b": 0.9, "c": 0.7}, {"a": 3.0, "b": 1.0, "c": 2.0})
    assert comb == pytest.approx({"a": 0.0, "b": 0.0, "c": 0.25})
    with pytest.raises(InputError):
        combined_score({"a": 1.0}, {"b": 1.0})
