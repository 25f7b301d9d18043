"""The data path's transforms: DICOM windowing, aspect-preserving pad, seeded MONAI augmentation,
and a uid-aware MONAI pipeline through ImageDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medbench.data.dataset import ImageDataset
from medbench.data.keras_augment import KerasAffine
from medbench.data.transforms import Pipeline, RandomAffine, apply_transform, resize
from medbench.io.images import read_image

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _write_dicom(path: Path, stored: np.ndarray, *, center: float, width: float, slope: float = 1.0,
                 intercept: float = 0.0) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "p1"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = f"{center}", f"{width}"
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope}", f"{intercept}"
    ds.PixelData = stored.astype("<u2").tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)


def _dicom_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out case by case, output range [0, 1]."""
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    y = np.empty_like(x, dtype=np.float64)
    for i, v in np.ndenumerate(x):
        if v <= lo:
            y[i] = 0.0
        elif v > hi:
            y[i] = 1.0
        else:
            y[i] = (v - (c - 0.5)) / (w - 1) + 0.5
    return y


def test_windowing_follows_the_dicom_voi_and_a_user_window(tmp_path: Path) -> None:
    stored = np.arange(0, 4096, 4096 // 64, dtype=np.uint16).reshape(8, 8)
    slope, intercept = 2.0, -1000.0  # modality values = 2 * stored - 1000
    _write_dicom(tmp_path / "a.dcm", stored, center=1500.0, width=2000.0, slope=slope, intercept=intercept)
    modality = slope * stored.astype(np.float64) + intercept
    # default: the file's VOI window on modality values
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm"), _dicom_linear(modality, 1500.0, 2000.0), atol=1e-6)
    # a user window instead (as `medbench train --window 0,801`)
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm", window="0,801"), _dicom_linear(modality, 0.0, 801.0),
                               atol=1e-6)
    # min-max stays available
    mm = (modality - modality.min()) / (modality.max() - modality.min())
    np.testing.assert_allclose(read_image(tmp_path / "a.dcm", window="minmax"), mm, atol=1e-6)
    # and the dataset takes the same window
    table = pd.DataFrame({"path": [str(tmp_path / "a.dcm")], "label": [1]})
    img = ImageDataset(table, size=None, window=(0.0, 801.0))[0][0]
    np.testing.assert_allclose(img[0].numpy(), _dicom_linear(modality, 0.0, 801.0), atol=1e-6)


def test_pad_keeps_the_aspect_ratio() -> None:
    rect = torch.ones(1, 20, 40)  # a 20 x 40 rectangle into a 32 x 32 square: scale 0.8 -> 16 x 32
    out = resize(rect, 32, pad=True)
    assert out.shape == (1, 32, 32)
    expected = torch.zeros(1, 32, 32)
    expected[:, 8:24, :] = 1.0  # centred: 8 black rows above and below
    assert torch.allclose(out, expected, atol=1e-6)  # (antialiased interpolation of a constant: 1 +- ulp)
    tall = resize(torch.ones(1, 30, 10), (24, 24), pad=True)  # scale 0.8 -> 24 x 8, 8 black columns each side
    expected = torch.zeros(1, 24, 24)
    expected[:, :, 8:16] = 1.0
    assert torch.allclose(tall, expected, atol=1e-6)
    assert torch.allclose(resize(rect, 32), torch.ones(1, 32, 32), atol=1e-6)  # no pad: stretched over the square


def _image(size: int = 32) -> torch.Tensor:
    x = torch.zeros(1, size, size)
    x[:, 6:12, 4:20] = 1.0  # an asymmetric block
    x[:, 20:28, 22:26] = 0.5
    return x


@pytest.mark.parametrize("make", [lambda: RandomAffine(seed=3), lambda: KerasAffine(seed=3)])
def test_augmentation_is_deterministic_per_seed_and_uid(make) -> None:
    x = _image()
    g_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a1 = apply_transform(make(), x, "uid-a")
    a2 = apply_transform(make(), x, "uid-a")  # a fresh transform: the same draw
    b = apply_transform(make(), x, "uid-b")
    assert torch.equal(a1, a2)
    assert (a1 - b).abs().max() > 0.05, "another uid gets another draw"
    later = make()
    later.set_epoch(1)
    assert (apply_transform(later, x, "uid-a") - a1).abs().max() > 0.05, "another epoch, another draw"
    assert torch.equal(torch.get_rng_state(), g_state) and np.array_equal(np.random.get_state()[1], np_state)


def test_flip_happens_half_the_time_and_is_exact() -> None:
    x = _image()
    flip_only = RandomAffine(rotation=0, shift=0, shear=0, zoom=0, flip=True, seed=0)
    flipped = 0
    n = 100
    for i in range(n):
        out = apply_transform(flip_only, x, f"u{i}")
        if torch.allclose(out, x.flip(-1), atol=1e-5):
            flipped += 1
        else:
            assert torch.allclose(out, x, atol=1e-5)
    # Binomial(100, 0.5): SD 5, so [30, 70] is 4 SD either side
    assert 30 <= flipped <= 70


def test_monai_pipeline_through_image_dataset(tmp_path: Path) -> None:
    import monai

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        img = (rng.random((24, 48)) * 255).astype(np.uint8)  # 2:1 images
        Image.fromarray(img).save(tmp_path / f"i{i}.png")
        rows.append({"path": str(tmp_path / f"i{i}.png"), "uid": f"u{i}", "label": i % 2})
    table = pd.DataFrame(rows)
    pipe = Pipeline([RandomAffine(seed=1), lambda t: 1.0 - t])  # a plain callable joins as a step
    assert isinstance(pipe._compose, monai.transforms.Compose)
    ds = ImageDataset(table, size=32, pad=True, transform=pipe)
    plain = ImageDataset(table, size=32, pad=True)
    x0 = plain[0][0]
    assert x0[:, :8].eq(0).all() and x0[:, 24:].eq(0).all()  # 2:1 padded: 16 image rows, centred
    first = [ds[i][0] for i in range(4)]
    assert all(t.shape == (1, 32, 32) and t.dtype == torch.float32 for t in first)
    again = ImageDataset(table, size=32, pad=True, transform=Pipeline([RandomAffine(seed=1), lambda t: 1.0 - t]))
    assert all(torch.equal(a, again[i][0]) for i, a in enumerate(first))  # per (seed, uid): reproducible
    manual = [1.0 - RandomAffine(seed=1)({"image": plain[i][0], "uid": f"u{i}"})["image"] for i in range(4)]
    assert all(torch.allclose(a, m, atol=1e-6) for a, m in zip(first, manual))
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], first[0])
    batch = next(iter(torch.utils.data.DataLoader(again, batch_size=4)))
    assert torch.equal(batch[0], torch.stack(first)) and batch[2]["uid"] == ["u0", "u1", "u2", "u3"]
