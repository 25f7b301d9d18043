"""Fuzzed DICOM through ``medbench ingest --decode``: exit 0, every file accounted once, no false "ok".

The corpus (:mod:`fuzz_corpus`, seeded) mutates pydicom's test files with byte flips, truncations,
bad lengths and VRs, hostile photometric/bit/frame fields, wrong transfer syntaxes and
decompression bombs. Every file the manifest calls usable must decode, in a separate process so a
decoder abort shows as a failure here rather than killing the test, both with pydicom alone
(independent of medbench) and with :func:`medbench.io.dicom.read_dicom`, to finite pixels.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medbench.parallel import Failure, map_items

_HERE = Path(__file__).parent


def load_corpus_module() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_corpus", _HERE / "fuzz_corpus.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def decode_check(item: tuple[str, str]) -> str:
    """"" when ``path`` decodes to finite pixels with pydicom and with medbench, else why not."""
    import pydicom

    from medbench.io.dicom import read_dicom

    path, ts = item
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ts
        raw = np.asarray(ds.pixel_array)
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            return "pydicom: non-finite"
        pixels = read_dicom(path).pixels
    return "" if np.isfinite(pixels).all() else "medbench: non-finite"


def run_ingest(folder: Path, run: Path, workers: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(_HERE.parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "medbench.cli", "ingest", str(folder), "--out", str(run), "--decode", "--no-progress",
         "--workers", str(workers), "--no-resume"],
        capture_output=True, text=True, env=env, timeout=600,
    )


def undecodable_usable(manifest: pd.DataFrame, workers: int = 2) -> dict[str, str]:
    """Manifest files that fail :func:`decode_check` (path -> why)."""
    items = list(zip(manifest["path"], manifest["transfer_syntax"]))
    out = map_items(decode_check, items, workers=workers, isolate=True, progress=False)
    bad = {}
    for (path, _), res in zip(items, out):
        if isinstance(res, Failure):
            bad[path] = f"{res.error}: {res.message}"
        elif res:
            bad[path] = res
    return bad


@pytest.mark.slow
def test_fuzzed_ingest_decode(tmp_path: Path) -> None:
    corpus = load_corpus_module()
    files = corpus.build_corpus(tmp_path / "in", 300, seed=17)
    res = run_ingest(tmp_path / "in", tmp_path / "run")
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = pd.read_parquet(tmp_path / "run" / "manifest.parquet")
    quarantine = pd.read_parquet(tmp_path / "run" / "quarantine.parquet")
    listed = list(manifest["path"]) + list(quarantine["path"])
    assert sorted(listed) == sorted(str(p.resolve()) for p in files)  # every file exactly once
    assert len(manifest) > 30 and len(quarantine) > 100  # the corpus has both
    assert "error" not in set(quarantine["reason"]), quarantine[quarantine["reason"] == "error"]
    assert undecodable_usable(manifest) == {}
