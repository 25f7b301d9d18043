"""Shared test set-up: offline hub, headless plots, small thread counts, shared data fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # xdist runs one worker per core


@pytest.fixture(scope="session")
def pydicom_test_files() -> list[str]:
    """Every file of pydicom's bundled test data."""
    from pydicom.data import get_testdata_files

    return sorted(get_testdata_files("*"))


@pytest.fixture(scope="session")
def pydicom_data_files() -> list[str]:
    """Every file of the ``pydicom-data`` package (real CR/CT/MR files); skip if not installed."""
    pytest.importorskip("dicom_data_files", reason="pydicom-data not installed") if False else None
    from pathlib import Path

    import pydicom.data

    try:
        from pydicom.data.data_manager import get_external_data_files  # type: ignore
    except ImportError:  # pragma: no cover
        get_external_data_files = None
    files: list[str] = []
    if get_external_data_files is not None:
        files = [str(p) for p in get_external_data_files()]
    if not files:
        pytest.skip("pydicom-data not installed")
    return sorted(f for f in files if Path(f).is_file())
