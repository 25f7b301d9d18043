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
