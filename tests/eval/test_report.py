"""Report writing from a predictions table, through the library and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from medbench.cli import app


def _predictions(n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, n)
    rows = []
    for source, d in [("random", 0.5), ("pretrained", 2.0)]:
        rows.append(pd.DataFrame({
            "uid": [f"u{i}" for i in range(n)], "split": "test", "label": label, "source": source,
            "patient_id": [f"p{i // 2}" for i in range(n)], "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(20, 90, n), "prob": 1 / (1 + np.exp(-(rng.normal(size=n) + d * label))),
        }))
    return pd.concat(rows, ignore_index=True)


def test_cli_report_writes_metrics_tables_and_html(tmp_path):
    pred = _predictions()
    pred.to_parquet(tmp_path / "predictions.parquet")
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--n-boot", "200"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    per = {r["source"]: r for r in metrics["per_source"]}
    for source, part in pred.groupby("source"):
        assert per[source]["auc"] == np.float64(roc_auc_score(part["label"], part["prob"])).item()
        assert per[source]["lo"] < per[source]["auc"] < per[source]["hi"]
    assert metrics["pairwise"][0]["delta"] < 0  # random - pretrained
    # no resample crosses zero here: p sits at its floor 2/(200+1), printed as "< 0.0100", never 0
    assert metrics["pairwise"][0]["p_value"] == metrics["pairwise"][0]["p_min"] == 2 / 201
    html = (tmp_path / "report.html").read_text()
    assert "&lt; 0.0100" in html and ">0.0000<" not in html and ">0.0<" not in html
    assert html.count("data:image/png;base64") >= 3 and "Subgroups by sex" in html
    assert (tmp_path / "subgroup_age_band.csv").is_file()


def test_cli_report_missing_predictions_is_clear_error(tmp_path):
    from medbench.cli import main  # noqa: F401  (same app)

    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code != 0
    assert "predictions.parquet" in str(res.exception) or "predictions.parquet" in res.output
