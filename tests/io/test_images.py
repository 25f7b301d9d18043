"""PNG/JPEG/TIFF reading and label tables (generic CSV, NIH ChestX-ray14 format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medbench.errors import InputError
from medbench.io import read_image, read_image_table, read_nih_table
from medbench.io.images import NIH_FINDINGS
from medbench.utils.files import hash_id


def test_read_image_bit_depths(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    Image.fromarray(g16).save(tmp_path / "g16.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")
    np.testing.assert_allclose(read_image(tmp_path / "g8.png"), g8 / 255.0, atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "g16.png"), g16 / 65535.0, atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif"), rgb / 255.0, atol=1e-7)
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_read_image_table(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(np.full((4, 4), i * 50, np.uint8)).save(tmp_path / "imgs" / f"im{i}.png")
    pd.DataFrame({
        "path": [f"imgs/im{i}.png" for i in range(4)],
        "patient_id": ["a", "a", "b", "c"],
        "sex": ["Male", "F", "f", ""],
        "age": ["045Y", "46", "", "3"],
        "label": [1, 0, 1, 0],
        "vendor": ["x", "y", "x", "y"],
    }).to_csv(tmp_path / "labels.csv", index=False)
    table = read_image_table(tmp_path / "labels.csv")
    assert list(table.columns[:7]) == ["path", "uid", "patient_id", "patient_hash", "sex", "age", "view"]
    assert table["path"].tolist() == [str((tmp_path / "imgs" / f"im{i}.png").resolve()) for i in range(4)]
    assert table["uid"].tolist() == ["im0", "im1", "im2", "im3"]
    assert table["patient_hash"].tolist() == [hash_id(p) for p in ["a", "a", "b", "c"]]
    assert table["sex"].tolist() == ["M", "F", "F", ""]
    np.testing.assert_allclose(table["age"].to_numpy(), [45, 46, np.nan, 3])
    assert table["label"].tolist() == [1, 0, 1, 0] and table["vendor"].tolist() == ["x", "y", "x", "y"]

    (tmp_path / "imgs" / "im3.png").unlink()
    with pytest.raises(InputError, match="1 of 4 images not found"):
        read_image_table(tmp_path / "labels.csv")
    assert len(read_image_table(tmp_path / "labels.csv", on_missing="drop")) == 3


NIH_CSV = """Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,
00000002_000.png,No Finding,0,2,81,M,AP,2500,2048,0.171,0.171,
00000003_000.png,Hernia|Pleural_Thickening|Effusion,0,3,74,F,PA,2500,2048,0.168,0.168,
"""


def test_read_nih_table(tmp_path: Path) -> None:
    (tmp_path / "Data_Entry_2017.csv").write_text(NIH_CSV)
    img_dir = tmp_path / "images_001" / "images"
    img_dir.mkdir(parents=True)
    names = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]
    for name in names:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(img_dir / name)
    table = read_nih_table(tmp_path / "Data_Entry_2017.csv")  # images found below the CSV folder
    assert table["path"].tolist() == [str(img_dir / n) for n in names]
    assert table["uid"].tolist() == names
    assert table["sex"].tolist() == ["M", "M", "M", "F"] and table["view"].tolist() == ["PA", "PA", "AP", "PA"]
    assert table["age"].tolist() == [58, 58, 81, 74]
    assert table["patient_hash"].tolist() == [hash_id(p) for p in ["1", "1", "2", "3"]]
    assert table["follow_up"].tolist() == [0, 1, 0, 0]
    for finding in NIH_FINDINGS:
        expected = [int(finding in row.split("|")) for row in table["labels"]]
        assert table[finding].tolist() == expected, finding
    assert table["Cardiomegaly"].sum() == 2 and table["No Finding"].tolist() == [0, 0, 1, 0]
    (img_dir / names[0]).unlink()
    with pytest.raises(InputError, match="image_dir"):
        read_nih_table(tmp_path / "Data_Entry_2017.csv")
    assert len(read_nih_table(tmp_path / "Data_Entry_2017.csv", on_missing="keep")) == 4
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a ChestX-ray14 table"):
        read_nih_table(tmp_path / "other.csv")
