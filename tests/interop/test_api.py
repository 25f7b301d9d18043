"""medbench.api returns the tables the commands computed, read back from their run folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medbench import api
from medbench.errors import InputError


def test_load_manifest_and_quarantine(pydicom_test_files: list[str], tmp_path: Path) -> None:
    from medbench.io.manifest import scan

    folder = Path(pydicom_test_files[0]).parent
    res = scan(folder, workers=1, progress=False)
    res.save(tmp_path)
    pd.testing.assert_frame_equal(api.load_manifest(tmp_path), res.manifest)
    pd.testing.assert_frame_equal(api.load_manifest(tmp_path, quarantine=True), res.quarantine)
    with pytest.raises(InputError, match="medbench ingest"):
        api.load_manifest(tmp_path / "nothing")


def test_audit_summary_and_transfer_scores(tmp_path: Path) -> None:
    from confounders.audit import AuditConfig, run_audit
    from medbench.data.synthetic import write_cxr_dataset
    from medbench.train.experiment import read_table
    from transferability.pipeline import run_transfer

    cfg = AuditConfig(sources=[{"name": "random", "arch": "test_resnet", "label": "tiny"}],
                      confounders=[{"name": "tag", "size": 300, "font": "sans-bold"}], ps=[0.0, 1.0], splits=1,
                      data={"kind": "synthetic", "n": 60, "size": 32},
                      train={"epochs": 1, "batch_size": 16, "device": "cpu"}, n_boot=20)
    audit = run_audit(cfg, tmp_path / "audit", report=False)
    got = api.audit_summary(tmp_path / "audit")
    assert got[["source", "confounder"]].astype(str).values.tolist() == \
        audit.summary[["source", "confounder"]].astype(str).values.tolist()
    assert got["gap"].tolist() == pytest.approx(audit.summary["gap"].tolist())
    assert len(api.audit_results(tmp_path / "audit")) == len(audit.results) == 2
    # runs written before the rename call the confounder strength "p": read back as "prevalence"
    import json

    summary_csv = tmp_path / "audit" / "summary.csv"
    pd.read_csv(summary_csv).rename(columns={"prevalence": "p"}).to_csv(summary_csv, index=False)
    assert api.audit_summary(tmp_path / "audit")["prevalence"].tolist() == [0.0, 1.0]
    for row_json in (tmp_path / "audit" / "units").glob("*/row.json"):
        row = json.loads(row_json.read_text())
        row_json.write_text(json.dumps({("p" if k == "prevalence" else k): v for k, v in row.items()}))
    again = run_audit(cfg, tmp_path / "audit", report=False)  # old rows are reused, not retrained
    assert again.results["prevalence"].tolist() == [0.0, 1.0] and "p" not in again.results
    assert again.results["auc_ood"].tolist() == audit.results["auc_ood"].tolist()

    write_cxr_dataset(tmp_path / "target", 24, size=32, seed=1, progress=False)
    tr = run_transfer(read_table(tmp_path / "target"), tmp_path / "transfer", sources=["random:resnet18"],
                      metrics=["logme"], size=32, target="T", batch_size=8)
    long = api.transfer_scores(tmp_path / "transfer")
    assert long["score"].tolist() == pytest.approx(tr.scores["score"].tolist())
    wide = api.transfer_scores(tmp_path / "transfer", wide=True)
    assert wide["source"].tolist() == ["random:resnet18"] and "logme" in wide.columns
