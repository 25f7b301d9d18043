"""The shared run folder: config/log/units/metrics, resume, refuse listing every change, restart,
stale temporary files removed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medbench.errors import InputError
from medbench.runs import open_run, settings_hash


def test_settings_hash_is_stable_and_sensitive() -> None:
    a = {"b": 1, "a": (1, 2), "p": Path("/x")}
    assert settings_hash(a) == settings_hash({"a": [1, 2], "p": "/x", "b": 1})
    assert settings_hash(a) != settings_hash({**a, "b": 2})
    assert len(settings_hash(a)) == 16


def test_open_run_writes_config_log_units_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = {"seed": 0, "folds": 3, "data": Path("/data/x.csv")}
    stale = out / "sub" / ".table.csv.abcd1234.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("half")
    with open_run(out, "audit", settings, outputs=["table.csv"]) as run:
        assert not stale.exists()  # a killed run's temporary file is gone before work starts
        assert not run.resumed
        logging.getLogger("confounders.audit").info("fold 0 done")
        run.write_table("table.csv", pd.DataFrame({"x": [1, 2]}))
        run.mark_unit("fold0", {"k": 0})
        run.write_metrics({"auc": 0.5})
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["workflow"] == "audit" and config["settings"]["data"] == "/data/x.csv"
    assert "fold 0 done" in (out / "audit.log").read_text()
    assert json.loads((out / "metrics.json").read_text()) == {"auc": 0.5}
    with open_run(out, "audit", dict(settings)) as run:
        assert run.resumed
        assert run.unit_done("fold0", {"k": 0}) and run.units() == ["fold0"]
        assert not run.unit_done("fold0", {"k": 1})  # same unit, other settings: recompute
        assert not run.unit_done("fold0", {"k": 0}, outputs=["missing.parquet"])
        assert not run.unit_done("fold1", {"k": 1})


def test_open_run_refuses_listing_every_change_then_restarts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with open_run(out, "transfer", {"seed": 0, "n": 5, "metric": "logme"}, outputs=["scores.csv"]) as run:
        run.write_table("scores.csv", pd.DataFrame({"s": [1.0]}))
        run.mark_unit("a")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"2 changed: metric: 'logme' -> 'leep'; seed: 0 -> 1.*--restart"), \
            open_run(out, "transfer", {"seed": 1, "n": 5, "metric": "leep"}):
        pass
    assert (out / "scores.csv").exists()  # refused: nothing touched
    with open_run(out, "transfer", {"seed": 1, "n": 5, "metric": "leep"}, outputs=["scores.csv"],
                  restart=True) as run:
        assert not run.resumed and run.units() == [] and not (out / "scores.csv").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert yaml.safe_load((out / "config.yaml").read_text())["settings"]["seed"] == 1


def test_a_run_that_fails_before_any_unit_leaves_no_settings(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(InputError, match="bad vendor"), open_run(out, "harmonize", {"vendor": "x"}):
        raise InputError("bad vendor")
    assert not (out / "settings.yaml").exists() and not (out / "config.yaml").exists()
    with open_run(out, "harmonize", {"vendor": "y"}) as run:  # the corrected re-run is not refused
        run.mark_unit("a/b.dcm")
        run.mark_unit("a_b.dcm")
        assert sorted(run.units()) == ["a/b.dcm", "a_b.dcm"]  # distinct records
    with pytest.raises(RuntimeError), open_run(out, "harmonize", {"vendor": "y"}):
        raise RuntimeError("killed mid-run")
    assert (out / "settings.yaml").exists()  # units were computed: the record stays
