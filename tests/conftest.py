"""Shared test set-up: offline hub, headless plots, determinism, slow-first order, shared data.

Determinism (the green-suite contract): every test process runs torch, BLAS and OpenMP on one
thread (xdist runs one worker per core), with ``torch.use_deterministic_algorithms(True)``, and
every test starts from the same seeds (Python, NumPy's legacy global RNG, torch), so a test's
numbers do not depend on which worker runs it, in which order, or how loaded the machine is.
Across CPUs the floating-point kernels still differ (AVX2/AVX-512, oneDNN or not): thresholds on
trained models carry margins measured against that (see each test's docstring).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MEDBENCH_SECRET", "medbench-test-secret")  # tests never create ~/.config/medbench/secret
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy/torch load their thread pools

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # xdist runs one worker per core
try:
    torch.set_num_interop_threads(1)
except RuntimeError:  # already set by an earlier import in this process
    pass
torch.use_deterministic_algorithms(True)

#: Seed every test starts from (tests that need another seed set it explicitly).
TEST_SEED = 0


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Reset the global RNGs before each test, so results do not depend on test order or worker."""
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)  # the legacy global state some libraries still read
    torch.manual_seed(TEST_SEED)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run slow tests first (notebooks first of all), so that with ``-n 2 --dist loadgroup`` the
    long ones start at once on both workers and the quick ones fill the gaps at the end."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is None:
            return 2
        return 0 if "test_notebooks" in item.nodeid else 1

    items.sort(key=rank)  # stable: collection order is kept within each rank


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


@pytest.fixture
def kill_at():
    """``kill_at(argv, marker)``: run ``python -m medbench *argv`` in a subprocess (one thread, this
    checkout on the path) and SIGKILL it once ``marker`` exists (or it ends, or 180 s pass).
    Returns ``(process, watcher thread)``; join the watcher, then ``process.wait()``."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def start(argv: list[str], marker: Path) -> tuple[subprocess.Popen, threading.Thread]:
        proc = subprocess.Popen([sys.executable, "-m", "medbench", *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def watch() -> None:
            deadline = time.monotonic() + 180
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        return proc, watcher

    return start
