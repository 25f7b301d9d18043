"""``--tracker tensorboard|mlflow``: epoch metrics, final metrics, config and report reach the store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medbench.errors import InputError
from medbench.tracking import make_tracker, numeric_items


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny ``train`` run per tracker on the same synthetic data."""
    from medbench.cli import app
    from medbench.data.synthetic import write_cxr_dataset

    base = tmp_path_factory.mktemp("track")
    write_cxr_dataset(base / "synth", 40, size=16, seed=3, progress=False)
    runs = {}
    for kind in ("tensorboard", "mlflow"):
        pytest.importorskip(kind)
        run = base / kind
        args = ["train", "--manifest", str(base / "synth" / "labels.csv"), "--source", "random",
                "--arch", "resnet10t", "--size", "16", "--epochs", "2", "--batch-size", "8",
                "--out", str(run), "--no-progress", "--device", "cpu", "--tracker", kind]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output + repr(res.exception)
        runs[kind] = run
    return runs


def test_tensorboard_event_files_hold_epoch_metrics(trained: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained["tensorboard"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    hist = pd.read_csv(run / "history.csv")
    got = acc.Scalars("train_loss")
    assert [e.step for e in got] == hist["epoch"].tolist()
    assert [e.value for e in got] == pytest.approx(hist["train_loss"].tolist(), rel=1e-6)
    assert "config" in acc.Tags()["tensors"] or "config/text_summary" in acc.Tags()["tensors"]
    import json

    auc = json.loads((run / "metrics.json").read_text())["per_source"][0]["auc"]
    assert acc.Scalars("final/per_source/0/auc")[0].value == pytest.approx(auc, rel=1e-6)


def test_mlflow_local_store_is_read_back_by_search_runs(trained: dict[str, Path]) -> None:
    import json

    import mlflow

    run = trained["mlflow"]
    mlflow.set_tracking_uri((run / "mlruns").resolve().as_uri())
    try:
        runs = mlflow.search_runs(experiment_names=["medbench"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1
    row = runs.iloc[0]
    hist = pd.read_csv(run / "history.csv")
    assert row["metrics.train_loss"] == pytest.approx(hist["train_loss"].iloc[-1], rel=1e-6)
    auc = json.loads((run / "metrics.json").read_text())["per_source"][0]["auc"]
    assert row["metrics.final/per_source/0/auc"] == pytest.approx(auc)
    assert row["params.epochs"] == "2" and row["params.source"] == "random"
    client = mlflow.tracking.MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    steps = [m.step for m in client.get_metric_history(row["run_id"], "train_loss")]
    assert steps == hist["epoch"].tolist()
    names = {a.path for a in client.list_artifacts(row["run_id"])}
    assert {"report.html", "metrics.json", "config.yaml"} <= names


def test_rerunning_a_finished_train_reuses_its_report(trained: dict[str, Path]) -> None:
    """The same command again: no retraining, no new evaluation, the same numbers printed."""
    import json

    from medbench.cli import app

    run = trained["tensorboard"]
    files = [run / "report.html", run / "metrics.json", run / "predictions.parquet", run / "checkpoints" / "last.pt"]
    stamps = [p.stat().st_mtime_ns for p in files]
    args = ["train", "--manifest", str(run.parent / "synth" / "labels.csv"), "--source", "random",
            "--arch", "resnet10t", "--size", "16", "--epochs", "2", "--batch-size", "8",
            "--out", str(run), "--no-progress", "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert (run / "units" / "evaluation.json").is_file()
    auc = json.loads((run / "metrics.json").read_text())["per_source"][0]["auc"]
    assert f"test AUC {auc:.3f}" in res.output


def test_numeric_items_flattens_and_drops_non_numbers() -> None:
    got = numeric_items({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": True, "f": float("nan"), "g": None,
                         "h": [{"auc": 0.7}]})
    assert got == {"a": 1.0, "b/c": 2.5, "h/0/auc": 0.7}


def test_mlflow_names_drop_refused_characters() -> None:
    from medbench.tracking import mlflow_name

    assert mlflow_name("final/source:a=b/p:0.5/auc (ci)") == "final/source:a_b/p:0.5/auc _ci_"


def test_unknown_tracker_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--tracker"):
        make_tracker("wandb", tmp_path)


def test_missing_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from medbench.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingDependencyError, match=r"medbench\[track\]"):
        make_tracker("mlflow", tmp_path)


def test_denoise_train_tracks_its_loss_history(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from harmonization.ct.learned import load_checkpoint
    from medbench.cli import app

    out = tmp_path / "t"
    res = CliRunner().invoke(app, [
        "denoise", "train", "--out", str(out), "--n-volumes", "1", "--slices", "3", "--size", "32",
        "--views", "48", "--epochs", "2", "--iters", "2", "--batch-size", "2", "--patch", "16",
        "--proj-width", "4", "--proj-depth", "3", "--img-width", "4", "--img-depth", "3", "--tracker", "tensorboard"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    hist = load_checkpoint(out / "two_stage.pt")["meta"]["history"]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    got = acc.Scalars("image_l1")
    assert [e.step for e in got] == list(range(1, len(hist) + 1)) and len(hist) == 2  # epochs from 1
    assert [e.value for e in got] == pytest.approx(hist, rel=1e-6)


def test_audit_cli_tracks_its_summary_and_shows_unit_progress(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    import mlflow
    import yaml

    from medbench.cli import app

    cfg = {"sources": [{"name": "random", "arch": "test_resnet", "label": "tiny"}],
           "confounders": [{"name": "tag", "size": 300, "font": "sans-bold"}], "ps": [0.0, 1.0], "splits": 1,
           "data": {"kind": "synthetic", "n": 60, "size": 32},
           "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "progress": False}, "n_boot": 20}
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "audit"
    res = CliRunner().invoke(app, ["audit", "--config", str(tmp_path / "audit.yaml"), "--out", str(out),
                                   "--tracker", "mlflow"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "audit units" in res.output and "2/2" in res.output
    summary = pd.read_csv(out / "summary.csv")
    mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
    try:
        runs = mlflow.search_runs(experiment_names=["medbench"])
    finally:
        mlflow.set_tracking_uri(None)
    (row,) = runs.to_dict("records")
    for s in summary.to_dict("records"):
        key = f"metrics.final/source:{s['source']}/confounder:{s['confounder']}/prevalence:{s['prevalence']}/gap"
        assert row[key] == pytest.approx(s["gap"]), key


def test_transfer_cli_logs_its_scores_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medbench.cli import app
    from medbench.data.synthetic import write_cxr_dataset

    write_cxr_dataset(tmp_path / "target", 24, size=32, seed=1, progress=False)
    out = tmp_path / "transfer"
    res = CliRunner().invoke(app, ["transfer", "--manifest", str(tmp_path / "target"), "--source", "random:resnet18",
                                   "--metric", "logme", "--metric", "nce", "--size", "32", "--out", str(out),
                                   "--tracker", "tensorboard"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    scores = pd.read_csv(out / "scores.csv")
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert sorted(scores["metric"]) == ["logme", "nce"]
    for row in scores.to_dict("records"):
        (event,) = acc.Scalars(f"final/source:{row['source']}/metric:{row['metric']}/score")
        assert event.value == pytest.approx(row["score"], rel=1e-6)
