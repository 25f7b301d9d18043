"""`medbench synth` through the real CLI app."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
from typer.testing import CliRunner

from medbench.cli import app


def test_synth_writes_dataset_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--out", str(out), "--n", "12", "--size", "32", "--seed", "3", "--ct-series", "1", "--ct-slices", "3", "--ct-size", "32", "--no-progress"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "labels.csv")
    assert len(df) == 12 and all(Path(p).is_file() for p in df["path"])
    assert str(out / "labels.csv") in res.output
    for col in ("vendor", "label", "sex"):
        counts = df[col].value_counts().sort_index()
        assert f"{col:<11} " + ", ".join(f"{k}: {v}" for k, v in counts.items()) in res.output
    ct = pd.read_csv(out / "ct" / "ct_series.csv")
    assert len(ct) == 3 and pydicom.dcmread(ct["path"][0]).Modality == "CT"
    # a second run resumes: same files, same table
    mtimes = [Path(p).stat().st_mtime_ns for p in df["path"]]
    res2 = runner.invoke(app, ["synth", "--out", str(out), "--n", "12", "--size", "32", "--seed", "3", "--no-progress"])
    assert res2.exit_code == 0, res2.output
    assert [Path(p).stat().st_mtime_ns for p in df["path"]] == mtimes
    pd.testing.assert_frame_equal(pd.read_csv(out / "labels.csv"), df)


def test_synth_help_and_bad_vendor(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--help"])
    assert res.exit_code == 0 and "--ct-series" in res.output and "labels.csv" in res.output
    bad = runner.invoke(app, ["synth", "--out", str(tmp_path), "--n", "2", "--vendor", "Acme", "--no-progress"])
    assert bad.exit_code != 0
    assert "Acme" in str(bad.exception) or "Acme" in bad.output
