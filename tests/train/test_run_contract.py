"""The run contract for ``medbench train``: resume on identical settings, refuse (listing every
change) on different ones, start over only with ``--restart``; config.yaml always matches history."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medbench.errors import InputError
from medbench.runs import SETTINGS_FILE, changed_settings, check_settings, restart_run


def test_changed_settings_lists_every_nested_difference() -> None:
    old = {"train": {"epochs": 2, "lr": 1e-3, "seed": 0}, "data": {"size": 32, "arch": None}}
    new = {"train": {"epochs": 5, "lr": 3e-3, "seed": 0}, "data": {"size": 32, "arch": "resnet18"}, "x": [1, 2]}
    assert changed_settings(old, new) == {
        "data.arch": (None, "resnet18"), "train.epochs": (2, 5), "train.lr": (1e-3, 3e-3), "x": (None, [1, 2])}
    assert changed_settings(old, old) == {}


def test_check_settings_records_then_resumes_or_refuses(tmp_path: Path) -> None:
    s = {"train": {"epochs": 2, "pattern": (2, 4)}}
    assert check_settings(tmp_path, s) is False  # a new run: recorded
    assert check_settings(tmp_path, s) is True  # the same settings (tuples stored as lists): resume
    with pytest.raises(InputError, match=r"2 changed: train\.epochs: 2 -> 3; train\.extra: None -> 1.*--restart"):
        check_settings(tmp_path, {"train": {"epochs": 3, "pattern": (2, 4), "extra": 1}})
    (tmp_path / "mine.txt").write_text("a user's note")
    (tmp_path / "checkpoints").mkdir()
    restart_run(tmp_path, ["checkpoints", "missing.csv"])
    assert not (tmp_path / SETTINGS_FILE).exists() and not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "mine.txt").read_text() == "a user's note"  # only the run's own outputs go


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medbench.data.synthetic import write_cxr_dataset

    out = tmp_path_factory.mktemp("synth")
    write_cxr_dataset(out, 40, size=32, seed=2, progress=False)
    return out


def _train(synth: Path, run: Path, *extra: str):
    from medbench.cli import app

    args = ["train", "--manifest", str(synth / "labels.csv"), "--source", "random", "--arch", "test_resnet",
            "--size", "32", "--batch-size", "16", "--out", str(run), "--no-progress", "--device", "cpu",
            "--patience", "0", *extra]
    return CliRunner().invoke(app, args)


def _epochs_on_disk(run: Path) -> tuple[int, int]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return int(config["epochs"]), len(pd.read_csv(run / "history.csv"))


@pytest.mark.slow
def test_train_rerun_with_more_epochs_refuses_then_restarts(synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _train(synth, run, "--epochs", "1")
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert _epochs_on_disk(run) == (1, 1)
    # the reported defect: --epochs 5 used to print "trained for 1 epochs" and rewrite config.yaml
    changed = _train(synth, run, "--epochs", "2", "--lr", "0.003")
    assert isinstance(changed.exception, InputError), changed.output
    message = str(changed.exception)
    assert "train.epochs: 1 -> 2" in message and "train.lr: 0.001 -> 0.003" in message and "--restart" in message
    assert _epochs_on_disk(run) == (1, 1)  # the folder still describes what was computed
    same = _train(synth, run, "--epochs", "1")  # identical settings resume (a finished run reloads)
    assert same.exit_code == 0, same.output
    restarted = _train(synth, run, "--epochs", "2", "--restart")
    assert restarted.exit_code == 0, restarted.output + repr(restarted.exception)
    assert _epochs_on_disk(run) == (2, 2) and "for 2 epochs" in restarted.output
