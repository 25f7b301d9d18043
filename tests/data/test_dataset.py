"""ImageDataset / ArrayDataset items, errors and DataLoader collation with workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medbench.data.dataset import ArrayDataset, ImageDataset
from medbench.data.synthetic import cxr_records, make_cxr, read_labels, render_cxr
from medbench.errors import InputError


def test_image_dataset_items(synthetic_cxr_dir: Path) -> None:
    table = read_labels(synthetic_cxr_dir)
    ds = ImageDataset(table, size=64)
    assert len(ds) == 56
    img, label, meta = ds[3]
    assert img.shape == (1, 64, 64) and img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    ds_file = pydicom.dcmread(table["path"][3])
    raw = ds_file.pixel_array.astype(np.float64)
    inverted = table["photometric"][3] == "MONOCHROME1"
    # default: the file's own VOI window, DICOM PS3.3 C.11.2.1.2.1 LINEAR, then MONOCHROME1 inversion
    c, w = float(ds_file.WindowCenter), float(ds_file.WindowWidth)
    voi = np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
    voi = 1.0 - voi if inverted else voi
    full, _, _ = ImageDataset(table, size=None)[3]
    np.testing.assert_allclose(full[0].numpy(), voi, atol=1e-6)
    stored = 4095 - raw if inverted else raw
    minmax = (stored - stored.min()) / (stored.max() - stored.min())  # min-max on request
    np.testing.assert_allclose(ImageDataset(table, size=None, window="minmax")[3][0][0].numpy(), minmax, atol=1e-5)
    assert label == int(table["label"][3])
    assert meta["uid"] == table["uid"][3] and meta["patient_id"] == table["patient_id"][3]
    assert meta["age"] == table["age"][3] and meta["sex"] == table["sex"][3]
    rgb, _, _ = ImageDataset(table, size=(40, 50), channels=3)[3]
    assert rgb.shape == (3, 40, 50) and torch.equal(rgb[0], rgb[2])


def test_bits_window_recovers_written_image_exactly(synthetic_cxr_dir: Path) -> None:
    table = read_labels(synthetic_cxr_dir)
    ds = ImageDataset(table, size=None, window="bits")
    recs = {r.uid: r for r in cxr_records(56, seed=0)}
    for i in (0, 1, 2, int(np.flatnonzero(table["photometric"] == "MONOCHROME1")[0])):
        img, _, meta = ds[i]
        expected = np.rint(render_cxr(recs[meta["uid"]], size=128, seed=0) * 4095) / 4095
        np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-6)


def test_image_dataset_cache_returns_same_tensor(synthetic_cxr_dir: Path) -> None:
    ds = ImageDataset(read_labels(synthetic_cxr_dir), size=32, cache=True)
    a = ds[5][0]
    assert ds[5][0] is a


def test_label_errors_name_the_column(synthetic_cxr_dir: Path) -> None:
    table = read_labels(synthetic_cxr_dir)
    with pytest.raises(InputError, match="'disease'"):
        ImageDataset(table, label_column="disease")
    bad = table.copy()
    bad.loc[4, "label"] = np.nan
    with pytest.raises(InputError, match="'label'.*1 missing"):
        ImageDataset(bad)
    with pytest.raises(InputError, match="path"):
        ImageDataset(table.drop(columns="path"))
    gone = table.copy()
    gone.loc[0, "path"] = str(synthetic_cxr_dir / "nope.dcm")
    with pytest.raises(InputError, match="nope.dcm"):
        ImageDataset(gone)[0]


def test_png_files(tmp_path: Path) -> None:
    arr = (np.arange(32 * 48).reshape(32, 48) % 256).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    arr16 = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "b.png")
    table = pd.DataFrame({"path": [str(tmp_path / "a.png"), str(tmp_path / "b.png")], "y": [1, 0], "site": ["s1", None]})
    ds = ImageDataset(table, label_column="y", size=None)
    img, label, meta = ds[0]
    np.testing.assert_allclose(img[0].numpy(), arr / 255.0, atol=1e-6)
    assert label == 1 and meta["uid"] == "a" and meta["site"] == "s1"
    img_b, _, meta_b = ds[1]
    np.testing.assert_allclose(img_b[0].numpy(), arr16 / 65535.0, atol=1e-6)
    assert meta_b["site"] == ""


def test_dataloader_with_workers(synthetic_cxr_dir: Path) -> None:
    ds = ImageDataset(read_labels(synthetic_cxr_dir), size=32)
    loader = DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    x, y, meta = batches[0]
    assert x.shape == (8, 1, 32, 32) and y.dtype == torch.int64
    assert meta["uid"] == [ds[i][2]["uid"] for i in range(8)]
    assert torch.equal(meta["age"], torch.tensor([ds[i][2]["age"] for i in range(8)]))
    assert sum(len(b[1]) for b in batches) == 56
    torch.testing.assert_close(x[2], ds[2][0])


def test_array_dataset(tmp_path: Path) -> None:
    imgs, meta = make_cxr(10, size=32, seed=2)
    ds = ArrayDataset(imgs, meta["label"], meta)
    img, label, m = ds[4]
    assert img.shape == (1, 32, 32)
    np.testing.assert_array_equal(img[0].numpy(), imgs[4])
    assert label == meta["label"][4] and m["uid"] == meta["uid"][4] and m["vendor"] == meta["vendor"][4]
    x, y, mb = next(iter(DataLoader(ds, batch_size=5, num_workers=2)))
    assert x.shape == (5, 1, 32, 32) and y.tolist() == meta["label"][:5].tolist()
    assert mb["patient_id"] == meta["patient_id"][:5].tolist()
    flipped = ArrayDataset(torch.as_tensor(imgs)[:, None], np.asarray(meta["label"]), transform=lambda t: t.flip(-1))
    assert torch.equal(flipped[1][0], torch.as_tensor(imgs[1]).flip(-1)[None])
    assert flipped[1][2]["uid"] == "1"
    with pytest.raises(InputError, match="labels has 3"):
        ArrayDataset(imgs, [0, 1, 0])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ArrayDataset(imgs * 255, meta["label"])
    with pytest.raises(InputError, match="missing"):
        ArrayDataset(imgs, np.r_[np.nan, np.zeros(9)])


def test_meta_with_missing_values_collates() -> None:
    imgs = np.zeros((4, 8, 8), dtype=np.float32)
    meta = pd.DataFrame({
        "uid": ["a", "b", "c", "d"],
        "age": pd.array([40, None, 60, 70], dtype="Int64"),
        "site": ["x", None, pd.NA, "y"],
        "spacing": [[0.1, 0.1]] * 4,
    })
    x, y, m = next(iter(DataLoader(ArrayDataset(imgs, [0, 1, 0, 1], meta), batch_size=4)))
    assert m["uid"] == ["a", "b", "c", "d"] and m["site"] == ["x", "", "", "y"]
    assert m["age"].dtype == torch.float64 and torch.isnan(m["age"][1]) and m["age"][2] == 60
    assert m["spacing"][0] == "[0.1, 0.1]" and m["patient_id"] == m["uid"]
