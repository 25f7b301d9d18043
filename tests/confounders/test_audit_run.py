"""The audit's run folder: a changed run setting is refused (every change listed, exit 2), another
p only adds units, config.yaml always matches the tables, and a killed audit resumes to the same
outputs with no temporary file left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from confounders.audit import run_audit

ROOT = Path(__file__).resolve().parents[2]
TINY = ["-s", "random:test_resnet", "--confounder", "tag", "--splits", "1", "--n", "60", "--size", "32",
        "--epochs", "1", "--batch-size", "16", "--n-boot", "10", "--device", "cpu", "--no-progress"]


def _cli_main(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    from medbench.cli import main

    monkeypatch.setattr(sys, "argv", ["medbench", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0)


def _unit_records(out: Path) -> dict[str, int]:
    """Unit name -> modification time of its record ``units/<unit>.json``."""
    return {json.loads(p.read_text())["unit"]: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}


def _with(args: list[str], changes: dict[str, str]) -> list[str]:
    out = list(args)
    for flag, value in changes.items():
        out[out.index(flag) + 1] = value
    return out


def _config_matches_tables(out: Path) -> dict:
    """config.yaml names exactly the units and ps that results.csv/summary.csv/metrics.json hold."""
    config = yaml.safe_load((out / "config.yaml").read_text())
    results = pd.read_csv(out / "results.csv")
    summary = pd.read_csv(out / "summary.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    resolved = config["resolved"]
    assert sorted(results["unit"]) == sorted(resolved["units"])
    assert sorted(results["prevalence"]) == sorted(resolved["ps"]) and sorted(summary["prevalence"]) == sorted(resolved["ps"])
    assert metrics["units"] == len(resolved["units"]) == len(results)
    assert (results["epochs_run"] == config["settings"]["train"]["epochs"]).all()
    for unit in results["unit"]:
        sets = pd.read_parquet(out / "units" / unit / "sets.parquet")
        assert sets["uid"].nunique() <= config["settings"]["data"]["n"] <= sets["uid"].nunique() + 1  # 1 may drop
    return config


@pytest.mark.slow  # about 7-12 s of CPU: three CLI runs with their reports
def test_audit_refuses_changed_settings_and_adds_units_for_a_new_p(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert _cli_main(monkeypatch, ["audit", "-o", str(out), *TINY, "--p", "0", "--p", "1"]) == 0
    first = _config_matches_tables(out)
    results = pd.read_csv(out / "results.csv")
    before = _unit_records(out)
    assert sorted(before) == sorted(results.unit)
    capsys.readouterr()

    # data and training changed: refused before any work, every change listed, one line, exit 2
    changed = _with(TINY, {"--n": "50", "--epochs": "2"})
    code = _cli_main(monkeypatch, ["audit", "-o", str(out), *changed, "--p", "0", "--p", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "2 changed" in err and "data.n: 60 -> 50" in err and "train.epochs: 1 -> 2" in err and "--restart" in err
    assert yaml.safe_load((out / "config.yaml").read_text()) == first  # the folder still describes what it holds

    # another p only adds its unit; the two finished units are reused untouched
    assert _cli_main(monkeypatch, ["audit", "-o", str(out), *TINY, "--p", "0", "--p", "0.5", "--p", "1"]) == 0
    config = _config_matches_tables(out)
    assert config["resolved"]["ps"] == [0.0, 0.5, 1.0]
    after = _unit_records(out)
    assert len(after) == 3 and {u: after[u] for u in before} == before
    # leaving a p out: the tables and config.yaml describe the current units only (the unit stays on disk)
    res = run_audit({**_cfg_dict(), "ps": [0.5]}, out, report=False)
    assert list(res.results.prevalence) == [0.5]
    _config_matches_tables(out)
    # --restart discards the audit and recomputes with the new settings
    assert _cli_main(monkeypatch, ["audit", "-o", str(out), *changed, "--p", "1", "--restart"]) == 0
    config = _config_matches_tables(out)
    assert config["settings"]["data"]["n"] == 50 and list(_unit_records(out)) == config["resolved"]["units"]


def _cfg_dict() -> dict:
    """The config the CLI builds from TINY (read back from a run folder would be circular)."""
    return {"sources": [{"name": "random", "label": "random:test_resnet", "arch": "test_resnet"}],
            "confounders": ["tag"], "splits": 1, "n_boot": 10,
            "data": {"kind": "synthetic", "n": 60, "size": 32, "seed": 0},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu"}}


def _audit_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "medbench", "audit", "-o", str(out), *TINY, "--p", "0", "--p", "1"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.mark.slow
def test_killed_audit_resumes_to_the_uninterrupted_outputs(tmp_path: Path) -> None:
    ref, out = tmp_path / "ref", tmp_path / "killed"
    victim = subprocess.Popen(_audit_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "units").glob("*.json")) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the audit finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert len(list((out / "units").glob("*.json"))) == 1  # killed mid-run, after the first unit
    assert not (out / "results.csv").exists()
    resumed = subprocess.Popen(_audit_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_audit({**_cfg_dict(), "ps": [0.0, 1.0]}, ref)  # the uninterrupted run, meanwhile, in this process
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr.decode()
    assert "audit: 1 units run, 1 already done" in (out / "audit.log").read_text()

    timing = ["seconds"]
    assert (out / "comparisons.csv").read_text() == (ref / "comparisons.csv").read_text()  # one source: empty
    for name in ("results.csv", "summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / name).drop(columns=timing, errors="ignore"),
                                      pd.read_csv(ref / name).drop(columns=timing, errors="ignore"))
    for unit in pd.read_csv(ref / "results.csv")["unit"]:
        for name in ("sets.parquet", "predictions.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(out / "units" / unit / name),
                                          pd.read_parquet(ref / "units" / unit / name))
    assert (out / "config.yaml").read_text() == (ref / "config.yaml").read_text()
    assert not list(out.rglob(".*.tmp")) and not list((out / "runs").glob("*"))
