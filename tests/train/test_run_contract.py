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
    from medbench.train.experiment import read_table

    out = tmp_path_factory.mktemp("synth")
    write_cxr_dataset(out, 40, size=32, seed=2, progress=False)
    read_table(out / "labels.csv").to_csv(out / "table.csv", index=False)  # absolute paths: copyable
    return out


TRAIN = ["--source", "random", "--arch", "test_resnet", "--size", "32", "--batch-size", "8", "--no-progress",
         "--device", "cpu", "--patience", "0"]


def _train(table: Path, run: Path, *extra: str):
    from medbench.cli import app

    return CliRunner().invoke(app, ["train", "--manifest", str(table), "--out", str(run), *TRAIN, *extra])


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of the console entry point ``medbench ARGV``."""
    import sys

    from medbench.cli import main

    monkeypatch.setattr(sys, "argv", ["medbench", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code), capsys.readouterr().err


def _epochs_on_disk(run: Path) -> tuple[int, int]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return int(config["settings"]["train"]["epochs"]), len(pd.read_csv(run / "history.csv"))


@pytest.mark.slow
def test_train_rerun_with_more_epochs_refuses_then_restarts(synth: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run, table = tmp_path / "run", tmp_path / "table.csv"
    table.write_bytes((synth / "table.csv").read_bytes())
    first = _train(table, run, "--epochs", "1")
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert _epochs_on_disk(run) == (1, 1)
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    # the reported defect: --epochs 5 used to print "trained for 1 epochs" and rewrite config.yaml;
    # now exit 2 and every changed setting listed (a runtime-only flag such as --workers is no change)
    code, err = _main(["train", "--manifest", str(table), "--out", str(run), *TRAIN, "--epochs", "2",
                       "--lr", "0.003", "--workers", "1"], monkeypatch, capsys)
    assert code == 2
    assert "(2 changed: train.epochs: 1 -> 2; train.lr: 0.001 -> 0.003)" in err and "--restart" in err, err
    # an edited input table is a changed setting too, named as such
    edited = pd.read_csv(table)
    edited.loc[0, "label"] = 1 - edited.loc[0, "label"]
    edited.to_csv(table, index=False)
    refused = _train(table, run, "--epochs", "1")
    assert isinstance(refused.exception, InputError) and "1 changed: data.table:" in str(refused.exception)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == stamps  # untouched
    table.write_bytes((synth / "table.csv").read_bytes())
    same = _train(table, run, "--epochs", "1")  # identical settings: the finished run is reported as is
    assert same.exit_code == 0, same.output + repr(same.exception)
    assert "for 1 epochs" in same.output
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == stamps
    restarted = _train(table, run, "--epochs", "2", "--restart")
    assert restarted.exit_code == 0, restarted.output + repr(restarted.exception)
    assert _epochs_on_disk(run) == (2, 2) and "for 2 epochs" in restarted.output
    units = {p.stem: yaml.safe_load(p.read_text()) for p in (run / "units").glob("*.json")}
    assert set(units) == {"fit", "evaluation"} and units["fit"]["epochs_run"] == 2
    recorded = yaml.safe_load((run / "settings.yaml").read_text())
    assert units["fit"]["settings"] == units["evaluation"]["settings"] == recorded


@pytest.mark.slow
def test_train_killed_mid_run_resumes_to_the_uninterrupted_outputs(synth: Path, tmp_path: Path, kill_at) -> None:
    """SIGKILL after the first checkpoint, the same command again: the outputs of an uninterrupted
    run (CPU, one thread, fixed seed: exactly equal), and no temporary file left."""
    import json
    import signal
    import sys

    from medbench.cli import app

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "medbench", "train", "--manifest", str(synth / "table.csv"), "--out", str(out),
                *TRAIN, "--epochs", "3", "--checkpoint-every", "1"]

    killed, watcher = kill_at(command(tmp_path / "run")[3:], tmp_path / "run" / "checkpoints" / "last.pt")
    # the uninterrupted reference, meanwhile, in this process (one torch thread here too, see conftest)
    ref = CliRunner().invoke(app, command(tmp_path / "ref")[3:])
    assert ref.exit_code == 0, ref.output + repr(ref.exception)
    watcher.join()
    assert killed.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert not (tmp_path / "run" / "units" / "fit.json").exists()
    again = CliRunner().invoke(app, command(tmp_path / "run")[3:])  # the same command again (in this process: no start-up)
    assert again.exit_code == 0, again.output + repr(again.exception)
    a, b = tmp_path / "ref", tmp_path / "run"
    pd.testing.assert_frame_equal(pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet"))
    timing = ["time_s"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv").drop(columns=timing),
                                  pd.read_csv(b / "history.csv").drop(columns=timing))
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    for name in ("splits.csv", "settings.yaml"):
        assert (a / name).read_text() == (b / name).read_text(), name
    assert "resumed " in (b / "train.log").read_text()  # the engine continued from last.pt
    assert not [p for p in b.rglob(".*.tmp")]
