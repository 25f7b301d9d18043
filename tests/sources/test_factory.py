"""``create_source`` contract: shapes, heads, preprocessing, errors."""

from __future__ import annotations

import pytest
import torch

from medbench.errors import InputError, UnknownNameError
from medbench.sources import create_source, get_card, list_sources
from medbench.sources.card import PREPROCESSING, Preprocessing
from medbench.sources.model import SourceModel


def test_registry_lists_builtin_cards() -> None:
    names = [c.name for c in list_sources()]
    for expected in ("random", "imagenet", "efficientnet-lite0-imagenet", "checkpoint"):
        assert expected in names


def test_unknown_source_suggests_close_name() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'imagenet'"):
        create_source("imagnet")


def test_unknown_arch_suggests_close_name() -> None:
    with pytest.raises(InputError, match="resnet18"):
        create_source("random", arch="resnet181")


def test_random_grey_resnet18_contract() -> None:
    torch.manual_seed(0)
    model = create_source("random", arch="resnet18", num_classes=2, in_chans=1)
    assert isinstance(model, SourceModel)
    x = torch.rand(2, 1, 64, 64)
    logits = model(x)
    feats = model.features(x)
    assert logits.shape == (2, 2) and feats.shape == (2, 512)
    # the head is exactly the classifier applied to the features
    torch.testing.assert_close(model.classifier(feats), logits)
    assert model.backbone.conv1.in_channels == 1


def test_num_classes_none_and_zero() -> None:
    x = torch.rand(2, 1, 32, 32)
    assert create_source("random", arch="resnet10t", num_classes=None)(x).shape == (2, 1000)
    m0 = create_source("random", arch="resnet10t", num_classes=0)
    assert isinstance(m0.classifier, torch.nn.Identity)
    torch.testing.assert_close(m0(x), m0.features(x))


def test_preprocess_matches_manual_formula() -> None:
    """grey -> 3 channels, BGR flip, scaling and mean/std, checked against the formula by hand."""
    pre = Preprocessing("t", input_range=(0.0, 255.0), channel_order="BGR", mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    import timm

    card = get_card("imagenet").with_options(preprocessing=pre)
    rgb = SourceModel(timm.create_model("resnet10t"), card, in_chans=3, model_chans=3)
    x = torch.rand(1, 3, 4, 4)
    want = torch.stack([(x[0, 2 - c] * 255 - (10, 20, 30)[c]) / (2, 4, 8)[c] for c in range(3)])[None]
    torch.testing.assert_close(rgb.preprocess(x), want)
    grey = SourceModel(timm.create_model("resnet10t"), card, in_chans=1, model_chans=3)
    g = torch.rand(1, 1, 4, 4)
    want = torch.stack([(g[0, 0] * 255 - (10, 20, 30)[c]) / (2, 4, 8)[c] for c in range(3)])[None]
    torch.testing.assert_close(grey.preprocess(g), want)


def test_wrong_input_shape_is_input_error() -> None:
    model = create_source("random", arch="resnet10t", in_chans=1)
    with pytest.raises(InputError, match="in_chans"):
        model(torch.rand(2, 3, 32, 32))


def test_drop_rate_applies_dropout_before_head() -> None:
    model = create_source("random", arch="resnet10t", num_classes=2, drop_rate=0.5)
    x = torch.rand(4, 1, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    feats = model.features(x)
    assert (feats == 0).float().mean() > 0.3  # about half the features dropped


def test_fixed_arch_card_rejects_override() -> None:
    with pytest.raises(InputError, match="supports arch in"):
        create_source("efficientnet-lite0-imagenet", arch="resnet18")


def test_checkpoint_needs_weights() -> None:
    with pytest.raises(InputError, match="weights=PATH"):
        create_source("checkpoint")


def test_presets_are_consistent() -> None:
    caffe, rescaled = PREPROCESSING["caffe"], PREPROCESSING["caffe-rescaled"]
    assert caffe.channel_order == rescaled.channel_order == "BGR"
    for a, b in zip(caffe.mean, rescaled.mean):
        assert a / 255 == pytest.approx(b)


@pytest.mark.parametrize("name, kw", [("efficientnet-lite0-imagenet", {}), ("random", {"arch": "efficientnet_lite0"}),
                                      ("random", {"arch": "mobilenetv3_small_100"}), ("random", {"arch": "resnet10t"})])
def test_a_new_two_class_head_starts_near_chance(name: str, kw: dict) -> None:
    """timm's EfficientNet/MobileNet heads are drawn in +-1/sqrt(out_features) (+-0.71 for two
    classes); medbench redraws them in PyTorch's +-1/sqrt(in_features), so the first loss is near ln 2."""
    import math

    torch.manual_seed(0)
    model = create_source(name, num_classes=2, in_chans=1, **kw).eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    bound = 1 / math.sqrt(head.in_features)
    assert float(head.weight.abs().max()) <= bound and float(head.bias.abs().max()) <= bound
    # uniform(-b, b) has SD b/sqrt(3); with 2 x in_features draws its sample SD is within 5%
    assert float(head.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    x = torch.rand(32, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), torch.arange(32) % 2)
    assert abs(float(loss) - math.log(2)) < 0.5  # timm's own head gave 4.8 (ImageNet) and 30 (random)


def test_a_pretrained_head_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """With hub weights and the hub's class count, the classifier is the pretrained one: not redrawn."""
    import timm

    from medbench.sources.timm_build import build_timm

    real = timm.create_model

    def fake(arch: str, pretrained: bool = False, **kw):  # the hub is offline: mark the head instead
        model = real(arch, pretrained=False, **kw)
        if pretrained and model.num_classes == 1000:
            torch.nn.init.constant_(model.get_classifier().weight, 0.5)
        return model

    monkeypatch.setattr(timm, "create_model", fake)
    kept = build_timm("efficientnet_lite0", pretrained=True, num_classes=1000).get_classifier()
    assert torch.all(kept.weight == 0.5)
    new = build_timm("efficientnet_lite0", pretrained=True, num_classes=2).get_classifier()
    assert float(new.weight.abs().max()) <= 1 / new.in_features ** 0.5
