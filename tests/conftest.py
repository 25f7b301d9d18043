"""Shared test set-up: offline hub, headless plots, small thread counts, shared data fixtures."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # xdist runs one worker per core


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix not in {".py", ".pyc", ".json", ".txt", ".md"})


@pytest.fixture(scope="session")
def pydicom_test_files() -> list[str]:
    """Every file of pydicom's bundled test data (listed from disk: no download attempts)."""
    import pydicom.data

    return _files_under(Path(pydicom.data.__file__).parent / "test_files")


@pytest.fixture(scope="session")
def pydicom_data_dir() -> Path:
    """Folder of the ``pydicom-data`` package (real CR/CT/MR files); skip if not installed."""
    data_store = pytest.importorskip("data_store", reason="pydicom-data not installed")
    return Path(data_store.__file__).parent / "data"


@pytest.fixture(scope="session")
def pydicom_data_files(pydicom_data_dir: Path) -> list[str]:
    """Every file of the ``pydicom-data`` package."""
    return _files_under(pydicom_data_dir)


@pytest.fixture(scope="session")
def synthetic_cxr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic chest X-ray DICOM dataset (56 images, 128 px, seed 0, some MONOCHROME1).

    The folder holds ``images/*.dcm`` and ``labels.csv`` (path, uid, patient_id, label, sex, age,
    vendor, model, modality, photometric, sop_uid). Treat it as read-only.
    """
    from medbench.data.synthetic import write_cxr_dataset

    out = tmp_path_factory.mktemp("synthetic_cxr")
    write_cxr_dataset(out, 56, size=128, seed=0, monochrome1_fraction=0.25, progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_ct_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small CT phantom series (6 slices of 64 px each, one folder per series, ct_series.csv).

    Series 0 stores int16 (intercept 0), series 1 12-bit uint16 (intercept -1024). Read-only.
    """
    from medbench.data.synthetic import write_ct_series_dataset

    out = tmp_path_factory.mktemp("synthetic_ct")
    write_ct_series_dataset(out, 2, n_slices=6, size=64, seed=0, progress=False)
    return out
