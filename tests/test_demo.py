"""``medbench demo --quick`` end to end: report, metrics, sane AUCs, resume, extra steps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medbench import demo


@pytest.mark.slow
def test_demo_quick_end_to_end_and_resume(tmp_path: Path) -> None:
    from medbench.cli import app

    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--quick", "--no-progress"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert f"report: {(out / 'report.html').resolve()}" in res.output
    html = (out / "report.html").read_text()
    assert "ROC curves" in html and "<img" in html
    metrics = json.loads((out / "metrics.json").read_text())
    per = {r["source"]: r for r in metrics["per_source"]}
    assert "random" in per
    if demo.PRETRAINED in per:
        assert len(metrics["pairwise"]) == 1  # the paired comparison of the two sources
    pred = pd.concat([pd.read_parquet(out / "runs" / s / "predictions.parquet") for s in per])
    test = pred[pred["split"] == "test"]
    from sklearn.metrics import roc_auc_score

    for s, row in per.items():
        assert 0.0 <= row["lo"] <= row["auc"] <= row["hi"] <= 1.0
        assert row["n"] == len(test) // len(per)  # every source predicted the same test images
        part = pd.read_parquet(out / "runs" / s / "predictions.parquet").query("split == 'test'")
        assert row["auc"] == pytest.approx(roc_auc_score(part["label"], part["prob"]))
    assert len(list((out / "data" / "images").glob("*.dcm"))) == 80
    assert len(pd.read_parquet(out / "ingest" / "manifest.parquet")) == 80

    # re-running skips finished units: nothing is retrained or rewritten, a new step is easy to add
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("runs/*/checkpoints/last.pt"), *out.glob("data/images/*.dcm")]}
    seen = []
    demo.add_step("extra", lambda ctx: seen.append(sorted(ctx.state["results"])), before="report")
    try:
        ctx = demo.run_demo(out, quick=True, progress=False)
    finally:
        demo.STEPS[:] = [s for s in demo.STEPS if s[0] != "extra"]
    assert seen == [sorted(per)]
    assert [n for n in ctx.timings] == ["data", "ingest", "table", "train", "audit", "extra", "report"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_demo_rejects_tiny_inputs(tmp_path: Path) -> None:
    from medbench.errors import InputError

    with pytest.raises(InputError, match="--n"):
        demo.run_demo(tmp_path, n=5)
