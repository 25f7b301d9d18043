"""The ``checkpoint`` source: round trip and safe refusal of bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from medbench.errors import InputError
from medbench.sources import create_source
from medbench.sources.checkpoint import read_state_dict, save_source_weights


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_identical_outputs(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(3)
    src = create_source("random", arch="resnet10t", num_classes=2, in_chans=1)
    path = save_source_weights(src, tmp_path / f"model{suffix}")
    back = create_source("checkpoint", arch="resnet10t", num_classes=2, in_chans=1, weights=path)
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(src(x), back(x))
        assert torch.equal(src.features(x), back.features(x))


def test_timm_state_dict_with_new_head(tiny_checkpoint: Path) -> None:
    sd = read_state_dict(tiny_checkpoint)
    model = create_source("checkpoint", arch="resnet10t", num_classes=5, weights=tiny_checkpoint)
    assert model.classifier.out_features == 5
    torch.testing.assert_close(model.backbone.conv1[0].weight, sd["backbone.conv1.0.weight"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        create_source("checkpoint", arch="resnet10t", weights=tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):  # would run code if unpickled unsafely
        return (print, ("unpickled!",))


def test_pickled_object_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Evil()}, f, protocol=2)
    with pytest.raises(InputError, match="weights_only=True") as err:
        create_source("checkpoint", arch="resnet10t", weights=path)
    assert "bad.pth" in str(err.value)


def test_non_tensor_values_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save({"conv1.weight": [1, 2, 3]}, path)
    with pytest.raises(InputError, match="not tensors"):
        read_state_dict(path)


def test_mismatching_keys_listed(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(InputError, match="unexpected keys|missing keys") as err:
        create_source("checkpoint", arch="resnet18", weights=tiny_checkpoint)
    assert "tiny.pth" in str(err.value) and "layer" in str(err.value)


def test_num_classes_none_keeps_saved_head(tiny_checkpoint: Path) -> None:
    model = create_source("checkpoint", arch="resnet10t", num_classes=None, weights=tiny_checkpoint)
    sd = read_state_dict(tiny_checkpoint)
    assert model.classifier.out_features == 2
    torch.testing.assert_close(model.classifier.weight, sd["backbone.fc.weight"])
