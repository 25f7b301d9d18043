"""benchmarks/gpu_check.py: clean exit without CUDA, and the goals it judges from the figures."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_exits_cleanly_without_cuda(tmp_path: Path) -> None:
    """CUDA hidden: exit 0, summary.json says so, gpu.py measured nothing and wrote no figures."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--small", "--steps", "gpu"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["environment"]["cuda_available"] is False and summary["ok"] is True
    assert "no CUDA" in summary["note"] and set(summary["steps"]) == {"gpu"}
    gpu = summary["steps"]["gpu"]
    assert gpu["rc"] == 0 and not gpu["timed_out"] and "no CUDA" in gpu["skipped"]
    assert not (tmp_path / "gpu_bench.json").exists()
    assert "no CUDA GPU" in (tmp_path / "steps.log").read_text()


def test_unknown_step_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--steps", "gpu,bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "bogus" in proc.stderr


def test_goals_are_judged_from_the_figures() -> None:
    mod = _module()
    rates = {mod.PLAIN: 1000.0, "engine + amp bf16": 1400.0, mod.ALL_ON: 1500.0}
    judged = mod.judge_engine(rates)
    assert judged["vs_plain_fp32"] == {mod.PLAIN: 1.0, "engine + amp bf16": 1.4, mod.ALL_ON: 1.5}
    assert judged["goal_met"] is True  # exactly 1.5x meets ">= 1.5x"
    assert mod.judge_engine({**rates, mod.ALL_ON: 1499.0})["goal_met"] is False
    assert mod.judge_engine({"engine + amp bf16": 1.0}) == {}  # no baseline: nothing to judge
    rows = [{"artifact": "tag", "speedup": 25.0}, {"artifact": "jpeg", "speedup": 19.9}]
    conf = mod.judge_confounders(rows)
    assert conf["speedup"] == {"tag": 25.0, "jpeg": 19.9} and conf["goal_met"] is False
    assert mod.judge_confounders(rows[:1])["goal_met"] is True
    assert mod.judge_confounders([])["goal_met"] is False


@pytest.mark.parametrize("value, expected", [(float("nan"), None), (float("inf"), None), (1.5, 1.5)])
def test_summary_json_is_strict(value: float, expected: float | None) -> None:
    mod = _module()
    assert mod._clean({"a": [value, {"b": value}]}) == {"a": [expected, {"b": expected}]}
