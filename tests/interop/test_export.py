"""``medbench export nifti|monai`` and the pandas API against independent readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medbench.cli import app
from medbench.errors import InputError


def _invoke(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


@pytest.mark.parametrize("series", [0, 1])
def test_export_nifti_equals_medbench_series_reader(synthetic_ct_dir: Path, tmp_path: Path, series: int) -> None:
    import SimpleITK as sitk

    from medbench.io.series import group_series, read_series

    groups = group_series(synthetic_ct_dir)
    uid = sorted(groups)[series]
    folder = Path(groups[uid][0]).parent
    out = tmp_path / "vol.nii.gz"
    _invoke("export", "nifti", str(folder), "--out", str(out))
    ref = read_series(folder)
    img = sitk.ReadImage(str(out))
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == ref.hu.shape
    np.testing.assert_array_equal(arr.astype(np.float32), ref.hu)  # HU exact (int16 when whole numbers)
    dz, dy, dx = ref.spacing
    assert img.GetSpacing() == pytest.approx((dx, dy, dz), abs=1e-6)
    assert img.GetOrigin() == pytest.approx(tuple(ref.origin), abs=1e-4)
    assert np.asarray(img.GetDirection()) == pytest.approx(np.asarray(ref.direction).reshape(-1), abs=1e-6)
    # and against SimpleITK's own DICOM series reader, independent of medbench
    reader = sitk.ImageSeriesReader()
    direct = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(folder), uid))
    np.testing.assert_allclose(sitk.GetArrayFromImage(direct).astype(np.float32), arr.astype(np.float32))
    assert direct.GetSpacing() == pytest.approx(img.GetSpacing(), abs=1e-4)


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCR.dcm"])
def test_export_nifti_on_real_ct(name: str, tmp_path: Path) -> None:
    """pydicom's CT_small and pydicom-data's 693_UNCR: HU from pydicom's pixel_array and rescale."""
    import shutil

    import pydicom
    import SimpleITK as sitk
    from pydicom.data import get_testdata_file

    if name == "CT_small.dcm":
        src = Path(get_testdata_file(name))
    else:
        data_store = pytest.importorskip("data_store", reason="pydicom-data not installed")
        src = Path(data_store.__file__).parent / "data" / name
    folder = tmp_path / "ct"
    folder.mkdir()
    ct_small_path = str(folder / name)
    shutil.copy(src, ct_small_path)
    out = tmp_path / "ct.nii.gz"
    _invoke("export", "nifti", str(folder), "--out", str(out))
    ds = pydicom.dcmread(ct_small_path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img)[0], hu)
    assert img.GetSpacing()[:2] == pytest.approx((float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])))


def test_export_nifti_refuses_other_extensions(synthetic_ct_dir: Path, tmp_path: Path) -> None:
    from medbench.interop.nifti import series_to_nifti

    with pytest.raises(InputError, match=r"\.nii"):
        series_to_nifti(synthetic_ct_dir, tmp_path / "vol.nrrd")


def test_monai_datalist_from_a_table_loads_with_load_decathlon_datalist(tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    rows = pd.DataFrame({"path": [str(tmp_path / f"img{i}.dcm") for i in range(6)],
                         "label": [0, 1, 0, 1, 1, 0], "patient_id": list("aabbcc"),
                         "split": ["train", "train", "val", "val", "test", "test"]})
    rows.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "datalist.json"
    _invoke("export", "monai", str(tmp_path / "labels.csv"), "--out", str(out))
    for section, split in (("training", "train"), ("validation", "val"), ("test", "test")):
        items = load_decathlon_datalist(str(out), data_list_key=section)
        want = rows[rows["split"] == split]
        assert [i["image"] for i in items] == want["path"].tolist()
        assert [i["label"] for i in items] == want["label"].tolist()


def test_monai_datalist_from_a_train_run_follows_its_splits(tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    from medbench.utils.files import hash_id

    table = pd.DataFrame({"path": [str(tmp_path / f"x{i}.png") for i in range(5)], "label": [0, 1, 0, 1, 0],
                          "uid": [f"u{i}" for i in range(5)], "patient_id": list("pqrst")})
    table.to_csv(tmp_path / "labels.csv", index=False)
    run = tmp_path / "run"
    run.mkdir()
    splits = pd.DataFrame({"uid": table["uid"], "patient_hash": [hash_id(p) for p in table["patient_id"]],
                           "split": ["train", "test", "train", "val", "test"]})
    splits.to_csv(run / "splits.csv", index=False)
    out = tmp_path / "dl.json"
    with pytest.raises(AssertionError, match="--manifest"):
        _invoke("export", "monai", str(run), "--out", str(out))
    _invoke("export", "monai", str(run), "--manifest", str(tmp_path / "labels.csv"), "--out", str(out))
    test = load_decathlon_datalist(str(out), data_list_key="test")
    assert [i["image"] for i in test] == [str(tmp_path / "x1.png"), str(tmp_path / "x4.png")]
    assert json.loads(out.read_text()).keys() == {"training", "validation", "test"}
