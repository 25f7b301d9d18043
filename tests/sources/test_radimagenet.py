"""RadImageNet conversion without Keras: h5py-written Keras-2 files and PyTorch-port layouts."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from medbench.errors import InputError
from medbench.sources import create_source
from medbench.sources.card import PREPROCESSING
from medbench.sources.radimagenet import convert_radimagenet

from .keras_layout import (
    keras_resnet50_features,
    random_weights,
    resnet50_keras_shapes,
    write_keras2_h5,
)


@pytest.fixture(scope="module")
def keras2_resnet50(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    weights = random_weights(resnet50_keras_shapes(), seed=0)
    path = write_keras2_h5(tmp_path_factory.mktemp("h5") / "RadImageNet-ResNet50_notop.h5", weights)
    return path, weights


def _caffe_rescaled(x01: torch.Tensor) -> torch.Tensor:
    """Keras preprocess_input(mode='caffe') on 0-255 RGB, then rescale 1/255 (RadImageNet scripts)."""
    bgr = x01.flip(1) * 255.0
    mean = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    return (bgr - mean) / 255.0


def test_h5_resnet50_matches_direct_keras_computation(keras2_resnet50: tuple[Path, dict]) -> None:
    path, weights = keras2_resnet50
    with pytest.raises(InputError, match="no classification head"):
        create_source("radimagenet", weights=path, num_classes=None)
    model = create_source("radimagenet", weights=path, num_classes=0, in_chans=3)
    assert model.card.preprocessing is PREPROCESSING["caffe-rescaled"]
    assert isinstance(model.classifier, torch.nn.Identity)  # notop file: no head
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.features(x)
        ref = keras_resnet50_features(_caffe_rescaled(x), weights)
    assert ours.shape == (2, 2048)
    assert ref.abs().max() > 0.1
    assert (ours - ref).abs().max() < 1e-4


def test_naive_v15_load_computes_something_else(keras2_resnet50: tuple[Path, dict]) -> None:
    """Loading the same arrays into plain timm resnet50 (stride on 3x3, no biases) is not Keras."""
    import timm

    from medbench.sources.keras_h5 import read_keras_h5
    from medbench.sources.keras_resnet import resnet50_state_dict

    path, weights = keras2_resnet50
    naive = timm.create_model("resnet50", num_classes=0).eval()
    target = naive.state_dict()
    full = resnet50_state_dict(read_keras_h5(path))
    sd = {k: v for k, v in full.items() if k in target}  # conv biases have nowhere to go
    assert len(full) - len(sd) == 53  # one bias per conv
    naive.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (naive(_caffe_rescaled(x)) - keras_resnet50_features(_caffe_rescaled(x), weights)).abs().max()
    assert diff > 1e-2


def test_convert_then_load_is_identical(keras2_resnet50: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = keras2_resnet50
    out = convert_radimagenet(path, tmp_path / "r50.safetensors")
    a = create_source("radimagenet", weights=path, num_classes=2)
    b = create_source("radimagenet", weights=out, num_classes=2)
    b.classifier.load_state_dict(a.classifier.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_torchvision_port_layouts_match_torchvision(tmp_path: Path) -> None:
    """The RadImageNet_pytorch layout (backbone = Sequential(children)) loads into timm exactly."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    seq = torch.nn.Sequential(*list(tv.children())[:9])
    torch.save({f"backbone.{k}": v for k, v in seq.state_dict().items()}, tmp_path / "ResNet50.pt")
    model = create_source("radimagenet", weights=tmp_path / "ResNet50.pt", num_classes=0, in_chans=1)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = seq(model.preprocess(x)).flatten(1)
        torch.testing.assert_close(model.features(x), ref, atol=1e-5, rtol=1e-5)

    dn = torchvision.models.densenet121(weights=None).eval()
    torch.save({f"backbone.0.{k}": v for k, v in dn.features.state_dict().items()}, tmp_path / "DenseNet121.pt")
    with pytest.raises(InputError, match="arch='densenet121'"):
        create_source("radimagenet", weights=tmp_path / "DenseNet121.pt")
    dmodel = create_source("radimagenet", arch="densenet121", weights=tmp_path / "DenseNet121.pt", num_classes=0, in_chans=1)
    with torch.no_grad():
        feats = torch.nn.functional.relu(dn.features(dmodel.preprocess(x))).mean(dim=(2, 3))
        torch.testing.assert_close(dmodel.features(x), feats, atol=1e-5, rtol=1e-5)


def test_biased_port_loads_as_keras_v1(keras2_resnet50: tuple[Path, dict], tmp_path: Path) -> None:
    """A torchvision-named port with conv biases (Keras-v1 layout) is built as the Keras variant."""
    from medbench.sources.keras_h5 import read_keras_h5
    from medbench.sources.keras_resnet import resnet50_state_dict

    path, weights = keras2_resnet50
    torch.save(resnet50_state_dict(read_keras_h5(path)), tmp_path / "port.pt")
    model = create_source("radimagenet", weights=tmp_path / "port.pt", num_classes=0, in_chans=3, preprocessing="caffe")
    x = torch.rand(1, 3, 64, 64)
    bgr = x.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert (model.features(x) - keras_resnet50_features(bgr, weights)).abs().max() < 1e-4


def test_keras2_densenet_slash_names(tmp_path: Path) -> None:
    """Keras 2 DenseNet layer names contain '/' (``conv1/conv``) and still map."""
    from medbench.sources.keras_h5 import read_keras_h5

    w = {"conv1_conv": {"kernel": np.ones((7, 7, 3, 4), np.float32)}}
    path = write_keras2_h5(tmp_path / "d.h5", w, slash_names=True)
    with h5py.File(path) as f:
        assert "conv1" in f["model_weights"] and "conv" in f["model_weights/conv1"]
    read = read_keras_h5(path)
    assert list(read) == ["conv1_conv"] and read["conv1_conv"]["kernel"].shape == (7, 7, 3, 4)


def test_unsupported_and_bad_files(tmp_path: Path) -> None:
    irv2 = {"conv_7b": {"kernel": np.zeros((1, 1, 1, 1), np.float32)}}
    with pytest.raises(InputError, match="InceptionResNetV2"):
        create_source("radimagenet", weights=write_keras2_h5(tmp_path / "irv2.h5", irv2))
    broken = {f"conv2d_{i}": {"kernel": np.zeros((1, 1, 1, 1), np.float32)} for i in range(94)}
    with pytest.raises(InputError, match="0 batch_normalization"):
        create_source("radimagenet", arch="inception_v3", weights=write_keras2_h5(tmp_path / "iv3.h5", broken))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="junk.h5"):
        create_source("radimagenet", weights=tmp_path / "junk.h5")
    with pytest.raises(InputError, match="weights=PATH"):
        create_source("radimagenet")


def test_fine_tuned_radimagenet_checkpoint_round_trip(keras2_resnet50: tuple[Path, dict], tmp_path: Path) -> None:
    """A saved RadImageNet SourceModel (conv biases) reloads through ``checkpoint`` as Keras-v1."""
    from medbench.sources.checkpoint import save_source_weights

    path, _ = keras2_resnet50
    src = create_source("radimagenet", weights=path, num_classes=2)
    saved = save_source_weights(src, tmp_path / "ft.safetensors")
    back = create_source("checkpoint", arch="resnet50", weights=saved, num_classes=2)  # preprocessing from metadata
    assert back.card.preprocessing == src.card.preprocessing
    assert back.backbone.layer2[0].conv1.stride == (2, 2) and back.backbone.layer2[0].conv2.stride == (1, 1)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), back(x))


@pytest.mark.parametrize("hw", [(1, 1), (2, 5), (7, 9)])
def test_inception_pool_hook_excludes_padding(hw: tuple[int, int]) -> None:
    """The branch-pool rescaling turns timm's zero-counting 3x3 average into Keras/TF's."""
    import torch.nn.functional as F

    from medbench.sources.keras_inception import _valid_count_scale

    x = torch.rand(2, 3, *hw)
    counted = F.avg_pool2d(x, 3, 1, 1)  # what timm's InceptionA/C/E compute
    want = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(counted * _valid_count_scale(counted), want)


def test_file_with_top_keeps_source_logits(tmp_path: Path) -> None:
    """A file with a ``predictions`` Dense layer: num_classes=None gives Keras' logits (pre-softmax)."""
    weights = random_weights(resnet50_keras_shapes(), seed=5)
    rng = np.random.default_rng(6)
    weights["predictions"] = {
        "kernel": rng.normal(0, 0.05, (2048, 5)).astype(np.float32),
        "bias": rng.normal(0, 0.1, 5).astype(np.float32),
    }
    path = write_keras2_h5(tmp_path / "top.h5", weights)
    model = create_source("radimagenet", weights=path, num_classes=None, in_chans=3)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = keras_resnet50_features(_caffe_rescaled(x), weights)
        want = feats @ torch.from_numpy(weights["predictions"]["kernel"]) + torch.from_numpy(weights["predictions"]["bias"])
        assert (model(x) - want).abs().max() < 1e-4


def test_imagenet_h5_without_keras_and_random_keras_arm(keras2_resnet50: tuple[Path, dict]) -> None:
    """``imagenet`` reads a Keras .h5 (caffe input, no rescale); ``random`` builds the same network."""
    from medbench.sources.keras_h5 import read_keras_h5
    from medbench.sources.keras_resnet import resnet50_state_dict

    path, weights = keras2_resnet50
    model = create_source("imagenet", arch="resnet50", weights=path, num_classes=0, in_chans=3)
    assert model.card.preprocessing is PREPROCESSING["caffe"]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    bgr = x.flip(1) * 255.0 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert (model.features(x) - keras_resnet50_features(bgr, weights)).abs().max() < 1e-3
    rnd = create_source("random", arch="keras_resnet50", num_classes=0, in_chans=3)
    rnd.backbone.load_state_dict(resnet50_state_dict(read_keras_h5(path)), strict=True)
    rnd.backbone.eval()
    with torch.no_grad():  # the random arm computes Keras' graph given Keras' weights
        ref = keras_resnet50_features(rnd.preprocess(x), weights)
        assert (rnd.backbone(rnd.preprocess(x)) - ref).abs().max() < 1e-3
