"""``medbench transfer``'s run folder: config.yaml, transfer.log, units per source; a changed setting
is refused (every change listed, exit 2), another source or metric only adds work, config.yaml
always matches the tables, and a killed run resumes to the same outputs with no temporary file left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from transferability.features import logme, sfda

ROOT = Path(__file__).resolve().parents[2]
A, B, C = "random:test_resnet", "random:resnet10t", "random:resnet18"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medbench.data.synthetic import write_cxr_dataset

    folder = tmp_path_factory.mktemp("target") / "tinycxr"
    write_cxr_dataset(folder, 24, size=32, seed=1)
    return folder


def _args(target: Path, out: Path, *extra: str) -> list[str]:
    return ["transfer", "--manifest", str(target / "labels.csv"), "--size", "32", "--batch-size", "8",
            "--out", str(out), *extra]


def _cli_main(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    from medbench.cli import main

    monkeypatch.setattr(sys, "argv", ["medbench", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0)


def _units(out: Path) -> dict[str, int]:
    return {json.loads(p.read_text())["unit"]: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}


def _config_matches_tables(out: Path) -> dict:
    """config.yaml names exactly the sources and metrics of scores.csv, table.csv and metrics.json, and
    the scores are the metrics of the cached features (computed here from their formulas' code)."""
    config = yaml.safe_load((out / "config.yaml").read_text())
    resolved = config["resolved"]
    scores = pd.read_csv(out / "scores.csv")
    assert sorted(set(scores.source)) == sorted(resolved["sources"])
    assert sorted(set(scores.metric)) == sorted(resolved["metrics"])
    assert list(pd.read_csv(out / "table.csv").source) == resolved["sources"]
    assert json.loads((out / "metrics.json").read_text())["sources"] == resolved["sources"]
    assert set(scores.target) == {resolved["target"]}
    reference = {"logme": logme, "sfda": sfda}
    for row in scores.itertuples():
        with np.load(out / "features" / f"{row.source.replace(':', '_')}.npz") as z:
            assert z["features"].shape[0] == config["settings"]["data"]["n_images"]
            assert row.score == pytest.approx(reference[row.metric](z["features"], z["labels"]), rel=1e-10)
    return config


@pytest.mark.slow  # about 7-12 s of CPU: three CLI runs with their reports
def test_transfer_refuses_changed_settings_and_adds_sources(
        target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert _cli_main(monkeypatch, _args(target, out, "-s", A, "--metric", "logme")) == 0
    first = _config_matches_tables(out)
    assert first["workflow"] == "transfer" and (out / "transfer.log").is_file()
    units = _units(out)
    assert list(units) == ["features-random_test_resnet"]
    capsys.readouterr()

    # image size and fine-tuning seed changed: refused before any work, every change listed, exit 2
    code = _cli_main(monkeypatch, [*_args(target, out, "-s", A, "--metric", "logme"), "--seed", "1", "--size", "40"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "2 changed" in err and "finetune.seed: 0 -> 1" in err and "size: 32 -> 40" in err and "--restart" in err
    assert yaml.safe_load((out / "config.yaml").read_text()) == first

    # another source and metric: only the new source's features are computed
    assert _cli_main(monkeypatch, _args(target, out, "-s", A, "-s", B, "--metric", "logme", "--metric", "sfda")) == 0
    config = _config_matches_tables(out)
    assert config["resolved"]["sources"] == [A, B] and config["resolved"]["metrics"] == ["logme", "sfda"]
    after = _units(out)
    assert after["features-random_test_resnet"] == units["features-random_test_resnet"]
    assert set(after) == {"features-random_test_resnet", "features-random_resnet10t"}
    # --restart discards the run and recomputes at the new size
    assert _cli_main(monkeypatch, [*_args(target, out, "-s", B, "--metric", "sfda"), "--size", "40",
                                   "--restart"]) == 0
    config = _config_matches_tables(out)
    assert config["settings"]["size"] == 40 and list(_units(out)) == ["features-random_resnet10t"]
    assert not (out / "features" / "random_test_resnet.npz").exists()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.mark.slow
def test_killed_transfer_resumes_to_the_uninterrupted_outputs(target: Path, tmp_path: Path) -> None:
    from medbench.train.experiment import read_table
    from transferability.pipeline import run_transfer

    ref, out = tmp_path / "ref", tmp_path / "killed"

    def cmd(folder: Path) -> list[str]:
        return [sys.executable, "-m", "medbench", *_args(target, folder, "-s", A, "-s", B, "-s", C, "--metric", "logme")]

    victim = subprocess.Popen(cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _units_if_any(out) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the transfer run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = _units(out)
    assert 1 <= len(done) < 3 and not (out / "scores.csv").exists()  # killed mid-run, after the first source
    resumed = subprocess.Popen(cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # the uninterrupted run, meanwhile, in this process (the CLI's defaults spelled out)
    run_transfer(read_table(target / "labels.csv"), ref, sources=[A, B, C], metrics=["logme"], target=target.name,
                 size=32, batch_size=8, device="cpu")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr.decode()
    assert {u: t for u, t in _units(out).items() if u in done} == done  # finished sources were not redone
    log = (out / "transfer.log").read_text()
    assert all(f"source {s}: features" in log for s in (A, B, C) if f"features-{s.replace(':', '_')}" not in done)

    for name in ("scores.csv", "table.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(ref / name))
    for npz in (ref / "features").glob("*.npz"):
        with np.load(npz) as a, np.load(out / "features" / npz.name) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    assert (out / "config.yaml").read_text() == (ref / "config.yaml").read_text()
    assert not list(out.rglob(".*.tmp"))


def _units_if_any(out: Path) -> list[str]:
    try:
        return list(_units(out))
    except (OSError, json.JSONDecodeError):
        return []


@pytest.mark.slow
def test_transfer_killed_mid_finetune_resumes_to_the_uninterrupted_outputs(target: Path, tmp_path: Path,
                                                                            kill_at) -> None:
    """SIGKILL once the fine-tuning unit wrote its first engine checkpoint (epoch 1 of 4), the same
    command again: the fine-tuning resumes inside its engine run folder and every output equals an
    uninterrupted run's (CPU, one thread, fixed seed), with no temporary file left."""
    from typer.testing import CliRunner

    from medbench.cli import app

    def args(folder: Path) -> list[str]:
        return _args(target, folder, "-s", A, "--metric", "logme", "--finetune", "--epochs", "4")

    ref, out = tmp_path / "ref", tmp_path / "killed"
    fine = Path("finetune") / A.replace(":", "_")
    killed, watcher = kill_at(args(out), out / fine / "checkpoints" / "last.pt")
    first = CliRunner().invoke(app, args(ref))  # the uninterrupted run, meanwhile, in this process
    assert first.exit_code == 0, first.output + repr(first.exception)
    watcher.join()
    assert killed.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert "features-random_test_resnet" in _units(out) and "finetune-random_test_resnet" not in _units(out)
    assert not (out / "scores.csv").exists() and not (out / fine / "predictions.parquet").exists()
    again = CliRunner().invoke(app, args(out))
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert "resumed " in (out / fine / "train.log").read_text()  # the engine continued from last.pt

    for name in ("scores.csv", "table.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(ref / name))
    assert pd.read_csv(out / "table.csv")["auc"].notna().all()  # the fine-tuned AUC is in the table
    pd.testing.assert_frame_equal(pd.read_parquet(out / fine / "predictions.parquet"),
                                  pd.read_parquet(ref / fine / "predictions.parquet"))
    pd.testing.assert_frame_equal(pd.read_csv(out / fine / "history.csv").drop(columns=["time_s"]),
                                  pd.read_csv(ref / fine / "history.csv").drop(columns=["time_s"]))
    assert json.loads((out / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text())
    assert (out / "config.yaml").read_text() == (ref / "config.yaml").read_text()
    assert not list(out.rglob(".*.tmp"))
