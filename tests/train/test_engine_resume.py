"""Interrupted runs resume from their last checkpoint and end bit-identical to uninterrupted ones."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from medbench.train.checkpoint import load_checkpoint
from medbench.train.engine import TrainConfig, fit
from medbench.train.hooks import TrainHook

_spec = importlib.util.spec_from_file_location("engine_helpers", Path(__file__).with_name("test_engine_helpers.py"))
H = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(H)  # type: ignore[union-attr]


class Interrupted(BaseException):
    """Stands in for KeyboardInterrupt (not an Exception, like it)."""


class CrashAt(TrainHook):
    """Raises after optimizer step ``at`` (never when ``at`` is None); same name in every run."""

    name = "crash"

    def __init__(self, at: int | None) -> None:
        self.at = at

    def after_step(self, model, optimizer, step):
        if step == self.at:
            raise Interrupted(f"killed at step {step}")


def _run(out: Path, crash_at: int | None, **cfg_kw):
    data = H.blob_data(70, seed=11)
    cfg = TrainConfig(epochs=4, batch_size=8, lr=2e-2, progress=False, device="cpu", seed=3,
                      schedule_interval="step", **cfg_kw)
    return fit(H.TinyNet(seed=1), data[:44], data[44:], cfg, out, hooks=[CrashAt(crash_at)])


def _assert_same_run(a, b) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    cols = [c for c in a.history.columns if c != "time_s"]
    pd.testing.assert_frame_equal(a.history[cols], b.history[cols], check_exact=True)
    pd.testing.assert_frame_equal(a.predictions, b.predictions, check_exact=True)


@pytest.mark.parametrize(("every", "order"), [(4, "rr"), (0, "rr"), (4, "so")])
def test_resume_after_interrupt_matches_uninterrupted(tmp_path: Path, every: int, order: str) -> None:
    # 44 examples / batch 8 -> 6 steps per epoch; a crash after step 9 is mid epoch 1
    opts = {"order": order}
    full = _run(tmp_path / "full", None, checkpoint_every=every, **opts)
    with pytest.raises(Interrupted):
        _run(tmp_path / "cut", 9, checkpoint_every=every, **opts)
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    # mid-epoch checkpoint at step 8 (epoch 1, batch 2) or the end of epoch 0
    assert state["progress"]["epoch"] == 1 and state["progress"]["batch"] == (2 if every else 0)
    assert not state["progress"]["finished"]
    resumed = _run(tmp_path / "cut", None, checkpoint_every=every, **opts)
    _assert_same_run(full, resumed)
    assert resumed.summary["steps"] == full.summary["steps"] == 24


SCRIPT = """
import os, signal, sys, importlib.util
import torch
torch.set_num_threads(1)
from medbench.train.engine import TrainConfig, fit
from medbench.train.hooks import TrainHook
spec = importlib.util.spec_from_file_location("h", {helpers!r})
H = importlib.util.module_from_spec(spec); spec.loader.exec_module(H)

class Kill(TrainHook):
    name = "kill"
    def __init__(self, at): self.at = at
    def after_step(self, model, optimizer, step):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

kill_at = int(sys.argv[2]) if len(sys.argv) > 2 else -1
data = H.blob_data(70, seed=11)
cfg = TrainConfig(epochs=3, batch_size=8, lr=2e-2, progress=False, device="cpu", seed=3, checkpoint_every=4)
res = fit(H.TinyNet(seed=1), data[:44], data[44:], cfg, sys.argv[1], hooks=[Kill(kill_at)])
torch.save(res.model.state_dict(), os.path.join(sys.argv[1], "final.pt"))
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_same_command(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT.format(helpers=str(Path(__file__).with_name("test_engine_helpers.py")))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    py = sys.executable
    subprocess.run([py, str(script), str(tmp_path / "full")], check=True, env=env, timeout=300)
    killed = subprocess.run([py, str(script), str(tmp_path / "cut"), "8"], env=env, timeout=300)
    assert killed.returncode == -9  # really killed, during the 9th step (epoch 1)
    progress = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["progress"]
    assert (progress["step"], progress["epoch"], progress["batch"]) == (8, 1, 2)  # mid-epoch checkpoint
    subprocess.run([py, str(script), str(tmp_path / "cut")], check=True, env=env, timeout=300)
    a = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = pd.read_csv(tmp_path / "full" / "history.csv").drop(columns="time_s")
    hb = pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="time_s")
    pd.testing.assert_frame_equal(ha, hb)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "full" / "predictions.parquet"),
                                  pd.read_parquet(tmp_path / "cut" / "predictions.parquet"))
