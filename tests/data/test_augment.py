"""Albumentations transforms in the training data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medbench.data.augment import AlbumentationsTransform, as_transform, load_augmentation
from medbench.data.dataset import ArrayDataset, ImageDataset
from medbench.errors import InputError

A = pytest.importorskip("albumentations")


def test_horizontal_flip_p1_mirrors_the_image_in_an_image_dataset(synthetic_cxr_dir: Path) -> None:
    table = pd.read_csv(synthetic_cxr_dir / "labels.csv").head(3)
    table["path"] = [str(synthetic_cxr_dir / p) for p in table["path"]]
    plain = ImageDataset(table, size=32)
    flipped = ImageDataset(table, size=32, transform=as_transform(A.HorizontalFlip(p=1.0)))
    for i in range(3):
        a, b = plain[i][0], flipped[i][0]
        assert b.shape == a.shape == (1, 32, 32) and b.dtype == torch.float32
        assert torch.equal(b, a[:, :, torch.arange(31, -1, -1)])  # column j <- column W-1-j
        assert not torch.equal(a, b)


def test_three_channel_and_compose() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.random((2, 3, 8, 6)).astype(np.float32)
    t = as_transform(A.Compose([A.VerticalFlip(p=1.0), A.HorizontalFlip(p=1.0)]))
    out = t(torch.from_numpy(imgs[0]))
    np.testing.assert_array_equal(out.numpy(), imgs[0][:, ::-1, ::-1])
    ds = ArrayDataset(imgs, labels=np.array([0, 1]), transform=t)
    np.testing.assert_array_equal(ds[1][0].numpy(), imgs[1][:, ::-1, ::-1])


def test_saved_pipeline_loads_and_bad_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "aug.json"
    A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(path))
    t = load_augmentation(path)
    assert isinstance(t, AlbumentationsTransform)
    x = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4) / 12
    assert torch.equal(t(x), x.flip(-1))
    with pytest.raises(InputError, match="not found"):
        load_augmentation(tmp_path / "missing.json")
    with pytest.raises(InputError, match="callable"):
        as_transform(42)


def test_run_experiment_augments_only_the_training_split(synthetic_cxr_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import medbench.train.experiment as exp

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake_fit(model, train_ds, val_ds, cfg, out, **kw):
        seen["train"], seen["val"], seen["test"] = train_ds.transform, val_ds.transform, kw["test_ds"].transform
        raise Stop

    import medbench.train.engine as engine

    monkeypatch.setattr(engine, "fit", fake_fit)  # run_experiment imports fit (and torch) when it runs
    table = exp.read_table(synthetic_cxr_dir / "labels.csv")
    with pytest.raises(Stop):
        exp.run_experiment(table, tmp_path / "run", size=16, arch="resnet10t",
                           train_transform=A.HorizontalFlip(p=1.0))
    assert isinstance(seen["train"], AlbumentationsTransform)
    assert seen["val"] is None and seen["test"] is None


def test_builtin_affine_augmentation_is_the_seeded_monai_pipeline() -> None:
    from medbench.data.transforms import RandomAffine, apply_transform

    t = load_augmentation("affine", seed=4)  # `medbench train --augment affine --seed 4`
    x = torch.zeros(1, 24, 24)
    x[:, 4:10, 3:15] = 1.0
    out = apply_transform(t, x, "img-1")
    expected = RandomAffine(seed=4)({"image": x, "uid": "img-1"})["image"]
    assert torch.allclose(out, expected, atol=1e-6) and not torch.allclose(out, x, atol=1e-3)
