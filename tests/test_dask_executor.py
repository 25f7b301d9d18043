"""Batch commands on Dask: a LocalCluster of 2 worker processes gives the local executor's results.

The cluster is started by the test (``processes=True``) and its address is passed as
``--scheduler``, as a user would pass a remote one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def scheduler() -> str:
    from dask.distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _cli(args: list[str]) -> tuple[int, str]:
    from medbench.cli import _register_all, app

    _register_all()
    res = CliRunner().invoke(app, args)
    return res.exit_code, res.output + (repr(res.exception) if res.exception and res.exit_code not in (0, 1) else "")


@pytest.mark.slow
def test_ingest_dask_manifest_equals_local(synthetic_cxr_dir: Path, tmp_path: Path, scheduler: str) -> None:
    images = synthetic_cxr_dir / "images"
    code, out = _cli(["ingest", str(images), "--out", str(tmp_path / "local"), "--workers", "1", "--no-progress"])
    assert code == 0, out
    code, out = _cli(["ingest", str(images), "--out", str(tmp_path / "dask"), "--executor", "dask",
                      "--scheduler", scheduler, "--no-progress"])
    assert code == 0, out
    local = pd.read_parquet(tmp_path / "local" / "manifest.parquet")
    dask = pd.read_parquet(tmp_path / "dask" / "manifest.parquet")
    assert len(local) == 56
    pd.testing.assert_frame_equal(local, dask)


def _gdce_model(path: Path) -> Path:
    import torch

    from harmonization.xray.gdce import GDCEConfig, save_predictor
    from harmonization.xray.predictor import CurvePredictor

    torch.manual_seed(0)
    pred = CurvePredictor(input_size=32, widths=(4, 8, 8, 8, 16))
    save_predictor(pred, path, GDCEConfig(input_size=32, widths=(4, 8, 8, 8, 16)))
    return path


@pytest.mark.slow
def test_harmonize_apply_dask_equals_local_with_corrupt_file(synthetic_cxr_dir: Path, tmp_path: Path,
                                                             scheduler: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((synthetic_cxr_dir / "images").glob("*.dcm"))[:6]:
        shutil.copy(p, src / p.name)
    (src / "corrupt.dcm").write_bytes(b"not a dicom file at all" * 10)
    model = _gdce_model(tmp_path / "model.pt")

    tables, outs = {}, {}
    for name, extra in (("local", ["--executor", "local", "--workers", "1"]),
                        ("dask", ["--executor", "dask", "--scheduler", scheduler])):
        outs[name] = tmp_path / f"out_{name}"
        code, out = _cli(["harmonize", "apply", str(src), "--model", str(model), "--out", str(outs[name]), *extra])
        assert code == 1, out  # the corrupt file fails the command's exit code, not the batch
        tables[name] = pd.read_csv(outs[name] / "harmonize_log.csv")
    for t in tables.values():
        assert (t["status"] == "written").sum() == 6
        bad = t[t["status"] == "failed"]
        assert len(bad) == 1 and bad["path"].iloc[0].endswith("corrupt.dcm")
    pd.testing.assert_frame_equal(tables["local"].drop(columns="output"), tables["dask"].drop(columns="output"))

    written = sorted(p.name for p in outs["local"].glob("*.dcm"))
    assert written == sorted(p.name for p in outs["dask"].glob("*.dcm")) and len(written) == 6
    for name in written:
        a, b = pydicom.dcmread(outs["local"] / name), pydicom.dcmread(outs["dask"] / name)
        assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)


@pytest.mark.slow
def test_denoise_apply_dask_equals_local(synthetic_ct_dir: Path, tmp_path: Path, scheduler: str) -> None:
    from medbench.io import read_series

    src = tmp_path / "in"
    shutil.copytree(synthetic_ct_dir, src)
    broken = sorted(src.rglob("*.dcm"))[-1]  # truncate one slice's pixel data: its series must fail
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    outs = {}
    for name, extra in (("local", ["--executor", "local", "--workers", "1"]),
                        ("dask", ["--executor", "dask", "--scheduler", scheduler])):
        outs[name] = tmp_path / name
        code, out = _cli(["denoise", "apply", str(src), "--out", str(outs[name]),
                          "--denoiser", "gaussian", *extra])
        assert code == 1, out  # one failed series: reported, exit code 1, the other series written
    logs = {k: pd.read_csv(v / "denoise_log.csv", keep_default_na=False) for k, v in outs.items()}
    assert sorted(logs["local"]["status"]) == ["failed", "written"]
    pd.testing.assert_frame_equal(logs["local"].drop(columns="output"), logs["dask"].drop(columns="output"))
    folders = sorted(p.parent.name for p in outs["local"].rglob("done.json"))
    assert len(folders) == 1
    for folder in folders:
        a, b = read_series(outs["local"] / folder), read_series(outs["dask"] / folder)
        np.testing.assert_array_equal(a.hu, b.hu)
