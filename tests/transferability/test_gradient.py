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
    minmax,
    resolve_layers,
    triplet_margin_loss,
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


def _reference_triplet_loss(z: torch.Tensor, y: list[int], margin: float = 0.05) -> torch.Tensor:
    """pytorch-metric-learning's TripletMarginLoss written as plain loops: L2-normalised
    embeddings, every (anchor, positive != anchor, negative) triplet, mean of the non-zero losses."""
    z = z / z.norm(dim=1, keepdim=True)
    active = []
    for a in range(len(y)):
        for p in range(len(y)):
            for n in range(len(y)):
                if p != a and y[p] == y[a] and y[n] != y[a]:
                    loss = torch.relu((z[a] - z[p]).norm() - (z[a] - z[n]).norm() + margin)
                    if loss > 0:
                        active.append(loss)
    return torch.stack(active).mean() if active else z.sum() * 0


def test_triplet_loss_matches_reference_loops() -> None:
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(9, 5, generator=g, dtype=torch.float64) * 100).requires_grad_()
    y = [0, 1, 2, 0, 1, 2, 0, 0, 1]
    loss, n_valid, n_active = triplet_margin_loss(z, torch.as_tensor(y), anchor_chunk=4)
    ref = _reference_triplet_loss(z, y)
    assert n_valid == sum(1 for a in range(9) for p in range(9) for n in range(9)
                          if p != a and y[p] == y[a] and y[n] != y[a])
    assert 0 < n_active < n_valid
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    (g1,) = torch.autograd.grad(loss, z)
    (g2,) = torch.autograd.grad(ref, z)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    # no active triplet: an exact zero still attached to the graph (zero gradients)
    far = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    loss, _, n_active = triplet_margin_loss(far, torch.as_tensor([0, 0, 1, 1]), margin=0.05)
    assert n_active == 0 and float(loss.detach()) == 0.0


def test_fu_equals_manual_gradient_norm_ratio() -> None:
    torch.manual_seed(0)
    model = TinyVGG()
    x = torch.rand(26, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = (np.arange(26) // 2) % 2  # 0 0 1 1 ...: every batch of 4 has two of each class
    d = fu_details(model, x, y, embed=model.features)  # the authors' 6 batches: floor(26/6) = 4
    w1, w2 = model.features[0].weight, model.features[3].weight
    n1, n2 = [], []
    for s in range(0, 26, 4):  # 6 batches of 4 and the remainder batch of 2
        loss = _reference_triplet_loss(model.features(x[s:s + 4]), y[s:s + 4].tolist())
        g1, g2 = torch.autograd.grad(loss, [w1, w2])
        n1.append(float(torch.sqrt((g1**2).sum())))
        n2.append(float(torch.sqrt((g2**2).sum())))
    assert d["first_layer"] == "features.0" and d["early_layer"] == "features.3"
    assert d["n_batches"] == 7 and d["batch_size"] == 4
    assert d["fu"] == pytest.approx(np.mean(n2) / np.mean(n1), rel=1e-5)


class TinyNet(nn.Module):
    """conv-relu-conv-relu-pool-linear embedding with a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16))
        self.head = nn.Linear(16, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: horizontal stripes, class 1: vertical stripes, plus N(0, 1.5^2) noise."""
    y = torch.arange(n) % 2
    base = torch.zeros(2, 1, 12, 12)
    base[0, :, ::2, :] = 1
    base[1, :, :, ::2] = 1
    return base[y] + 1.5 * torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed)), y


def test_fu_is_finite_for_a_trained_source_with_far_apart_embeddings() -> None:
    torch.manual_seed(0)
    model = TinyNet()
    x, y = _stripes(256, 0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model.head(model.features(x)), y).backward()
        opt.step()
    with torch.no_grad():  # embeddings ~1000x further apart: the raw-distance margin-1 recipe gave up here
        model.body[-1].weight.mul_(1000)
        model.body[-1].bias.mul_(1000)
    xt, yt = _stripes(120, 1)
    with torch.no_grad():
        z = model.features(xt)
    assert float(torch.pdist(z).mean()) > 1000
    d = fu_details(model, xt, yt.numpy(), embed=model.features)
    assert np.isfinite(d["fu"]) and d["fu"] > 0
    assert 0 < d["n_active_triplets"] < d["n_triplets"]


def test_fu_raises_when_every_triplet_satisfies_the_margin() -> None:
    torch.manual_seed(0)
    model = TinyVGG()
    x = torch.zeros(12, 1, 16, 16)
    x[1::2] = 1.0  # two distinct images: identical embeddings within a class
    y = np.arange(12) % 2
    with torch.no_grad():
        z = nn.functional.normalize(model.features(x), dim=1)
    assert float((z[0] - z[1]).norm()) > 0.05  # the two classes are further apart than the margin
    with pytest.raises(InputError, match="satisfies the margin"):
        fu(model, x, y, embed=model.features, batch_size=6)


def test_fu_leaves_the_model_untouched() -> None:
    model = TinyVGG().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    fu(model, x, np.arange(8) % 2, embed=model.features, batch_size=4)
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
        d = fu_details(model, x, y, batch_size=8)
        assert d["first_layer"] == "backbone.conv_stem" and d["early_layer"] == "backbone.blocks.0.0.conv_dw"
        assert np.isfinite(d["fu"]) and d["fu"] > 0
        assert fu(model, x, y, batch_size=8) == d["fu"]  # deterministic
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
