"""``medbench train`` end to end on a tiny synthetic DICOM set, and the label-table helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medbench.errors import InputError
from medbench.train.experiment import assign_splits, join_labels, prepare_table, read_table
from medbench.utils.files import hash_id


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medbench.data.synthetic import write_cxr_dataset

    out = tmp_path_factory.mktemp("synth")
    write_cxr_dataset(out, 90, size=32, seed=1, progress=False)
    return out


@pytest.mark.slow
def test_train_cli_runs_evaluates_and_resumes(synth: Path, tmp_path: Path) -> None:
    from medbench.cli import app

    run = tmp_path / "run"
    args = ["train", "--manifest", str(synth / "labels.csv"), "--source", "random", "--arch", "resnet10t",
            "--size", "32", "--epochs", "2", "--batch-size", "16", "--out", str(run), "--no-progress",
            "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert f"run folder: {run}" in res.output and "test AUC" in res.output
    for name in ("config.yaml", "splits.csv", "history.csv", "predictions.parquet", "metrics.json",
                 "report.html", "train.log", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    splits = pd.read_csv(run / "splits.csv")
    labels = pd.read_csv(synth / "labels.csv")
    # patient-grouped: no patient in two splits; hashes, not raw ids
    assert splits.groupby("patient_hash")["split"].nunique().max() == 1
    assert set(splits["patient_hash"]) == {hash_id(p) for p in labels["patient_id"]}
    pred = pd.read_parquet(run / "predictions.parquet")
    test = pred[pred["split"] == "test"]
    assert sorted(test["uid"]) == sorted(splits.loc[splits["split"] == "test", "uid"])
    assert "patient_id" not in pred.columns and {"sex", "age", "vendor", "patient_hash"} <= set(pred.columns)
    metrics = json.loads((run / "metrics.json").read_text())
    (row,) = metrics["per_source"]
    from sklearn.metrics import roc_auc_score

    assert row["auc"] == pytest.approx(roc_auc_score(test["label"], test["prob"]))
    assert row["lo"] <= row["auc"] <= row["hi"] and row["n"] == len(test)
    html = (run / "report.html").read_text()
    for part in ("<h2>Training curves</h2>", "<h2>Example test images</h2>", "Configuration (YAML)"):
        assert part in html, part
    assert html.count("<img") == 4  # ROC, reliability with counts, training curves, example images
    # the same command again: the finished run is reloaded, not retrained
    stamp = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    # a bad label column is a clear user error
    bad_args = [a if a != str(run) else str(tmp_path / "bad") for a in args] + ["--label", "lesion"]
    bad = CliRunner().invoke(app, bad_args)
    assert isinstance(bad.exception, InputError) and "lesion" in str(bad.exception)


def test_join_labels_on_path_sop_uid_and_uid(synth: Path, tmp_path: Path) -> None:
    labels = read_table(synth / "labels.csv")
    # a manifest like `medbench ingest` writes: path + sop_uid, no label; relative path in the CSV
    manifest = labels[["path", "sop_uid"]].iloc[::-1].reset_index(drop=True)
    joined = join_labels(manifest, labels.drop(columns=["sop_uid"]))
    assert len(joined) == len(labels)
    assert joined.set_index("path")["label"].to_dict() == labels.set_index("path")["label"].to_dict()
    by_sop = join_labels(manifest.assign(path="elsewhere/" + manifest["path"]), labels)
    assert by_sop.set_index("sop_uid")["label"].to_dict() == labels.set_index("sop_uid")["label"].to_dict()
    rel = labels.assign(path=[str(Path(p).relative_to(synth)) for p in labels["path"]])
    rel.to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "images").symlink_to(synth / "images")
    assert read_table(tmp_path / "labels.csv")["path"].map(lambda p: Path(p).is_file()).all()
    with pytest.raises(InputError, match="cannot join"):
        join_labels(manifest.assign(path="x", sop_uid="y"), labels)


def test_prepare_table_and_splits(synth: Path) -> None:
    df = prepare_table(read_table(synth / "labels.csv"), "label")
    with pytest.raises(InputError, match="'finding'"):
        prepare_table(df, "finding")
    with pytest.raises(InputError, match="class ids"):
        prepare_table(df.assign(label=df["label"] + 0.5), "label")
    s = assign_splits(df, val_frac=0.2, test_frac=0.2, seed=3)
    assert set(s) == {"train", "val", "test"}
    assert df.assign(s=s).groupby("patient_hash")["s"].nunique().max() == 1
    assert np.array_equal(s, assign_splits(df, val_frac=0.2, test_frac=0.2, seed=3))
    given = assign_splits(df.assign(fold=np.where(np.arange(len(df)) % 2, "Train", "valid")), split_column="fold")
    assert set(given) == {"train", "val"}
    with pytest.raises(InputError, match="train/val/test"):
        assign_splits(df.assign(fold="dev"), split_column="fold")


def test_evaluate_run_multiclass_metrics(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from medbench.train.experiment import evaluate_run

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet([1, 1, 1], 60) + np.eye(3)[y] * 0.5
    p /= p.sum(1, keepdims=True)
    pred = pd.DataFrame({"uid": [str(i) for i in range(60)], "split": ["test"] * 50 + ["val"] * 10, "label": y,
                         **{f"prob_{k}": p[:, k] for k in range(3)}, "pred": p.argmax(1)})
    metrics, report = evaluate_run(pred, tmp_path, title="t")
    t = slice(0, 50)
    assert report is None and metrics["n"] == 50
    assert metrics["auc_macro_ovr"] == pytest.approx(roc_auc_score(y[t], p[t], multi_class="ovr", average="macro"))
    assert metrics["accuracy"] == pytest.approx(np.mean(p[t].argmax(1) == y[t]))
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
