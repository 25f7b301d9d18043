"""GDCE's curve optimisation checkpoints through medbench.runs.checkpoint and resumes mid-run to the
result of an uninterrupted run: in process after a crash, and through `medbench harmonize fit`
after a SIGKILL (no temporary file left)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from harmonization.xray.features import random_conv_features
from harmonization.xray.gdce import GDCEConfig, fit_gdce
from medbench.errors import InputError


class _Crash(RuntimeError):
    pass


class _Classifier(nn.Module):
    """A fixed tiny linear classifier that raises on its ``crash_at``-th forward call (a simulated kill)."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.linear = nn.Linear(16 * 16, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(2, 256, generator=gen) * 0.1)
            self.linear.bias.zero_()
        self.calls, self.crash_at = 0, crash_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.crash_at:
            raise _Crash(f"killed at forward call {self.calls}")
        return self.linear(x.flatten(1))


def _data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    xs, xr = rng.random((24, 16, 16)).astype(np.float32) ** 2, rng.random((16, 16, 16)).astype(np.float32)
    ys, yr = np.tile([0, 1], 12), np.tile([0, 1], 8)
    xv, yv = rng.random((6, 16, 16)).astype(np.float32) ** 2, np.tile([0, 1], 3)
    return xs, ys, xr, yr, xv, yv


# 24 source images, 2 per class per batch: an "epoch" is 6 steps; validation every 5 steps
CFG = GDCEConfig(steps=12, batch_per_class=2, lr=1e-2, input_size=16, widths=(4, 4), val_every=5,
                 init="identity", flip=True, seed=0)


def _fit(classifier: nn.Module, checkpoint: Path | None, cfg: GDCEConfig = CFG):
    xs, ys, xr, yr, xv, yv = _data()
    return fit_gdce(classifier, random_conv_features(width=4), xs, ys, xr, yr, val_images=xv, val_labels=yv,
                    cfg=cfg, checkpoint=checkpoint, progress=False)


def test_gdce_crashed_mid_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    ref = _fit(_Classifier(), None)
    ckpt = tmp_path / "gdce.pt"
    # forward calls: 1 initial validation, 2 per step, 1 per validation (steps 5, 10, 12):
    # call 17 is the first of step 8, after the epoch checkpoint of step 6
    with pytest.raises(_Crash):
        _fit(_Classifier(crash_at=17), ckpt)
    saved = torch.load(ckpt, weights_only=True)  # a weights-only file, as every medbench checkpoint
    assert saved["step"] == 6 and [h["step"] for h in saved["history"]] == [0, 5]
    assert not list(tmp_path.glob(".*.tmp"))
    resumed_clf = _Classifier()
    res = _fit(resumed_clf, ckpt)
    assert resumed_clf.calls == 2 * (12 - 6) + 2  # only steps 7..12 and their validations recomputed
    assert res.best_step == ref.best_step and res.history == ref.history
    np.testing.assert_array_equal(res.start_params, ref.start_params)
    a, b = ref.predictor.state_dict(), res.predictor.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the finished file resumes to the same result without any training step
    again = _Classifier()
    done = _fit(again, ckpt)
    assert again.calls == 0 and done.history == ref.history


def test_a_checkpoint_from_other_settings_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "gdce.pt"
    _fit(_Classifier(crash_at=None), ckpt)
    other = GDCEConfig(**{**CFG.__dict__, "lr": 5e-3})
    with pytest.raises(InputError, match="other settings or images.*--restart"):
        _fit(_Classifier(), ckpt, other)


@pytest.mark.slow
def test_harmonize_fit_killed_mid_gdce_resumes_to_the_uninterrupted_outputs(tmp_path: Path, kill_at) -> None:
    """SIGKILL once GDCE wrote its first checkpoint, the same command again: the model, tables and
    metrics of an uninterrupted run, exactly (CPU, one thread, fixed seeds), no temporary file."""
    from harmonization.xray.gdce import load_predictors
    from medbench.cli import app
    from medbench.data.synthetic import write_cxr_dataset

    data = tmp_path / "data"
    write_cxr_dataset(data, 80, size=32, seed=1, vendors={"RefVendor": 0.6, "VendorLog": 0.4},
                      monochrome1_fraction=0.2, progress=False)

    def command(out: Path) -> list[str]:
        return ["harmonize", "fit", "--manifest", str(data / "labels.csv"), "--reference", "RefVendor",
                "--out", str(out), "--size", "32", "--steps", "8", "--epochs", "2", "--feature-source",
                "random", "--baselines", "none"]

    run, ref = tmp_path / "run", tmp_path / "ref"
    killed, watcher = kill_at(command(run), run / "checkpoints" / "gdce_pooled.pt")
    first = CliRunner().invoke(app, command(ref))  # the uninterrupted reference, meanwhile, in this process
    assert first.exit_code == 0, first.output + repr(first.exception)
    watcher.join()
    assert killed.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert not (run / "model.pt").exists()  # killed mid-optimisation
    step = torch.load(run / "checkpoints" / "gdce_pooled.pt", weights_only=True)["step"]
    assert 1 <= step < 8
    again = CliRunner().invoke(app, command(run))
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert f"GDCE: resumed from {run / 'checkpoints' / 'gdce_pooled.pt'} at step" in (run / "harmonize.log").read_text()
    (pa, ra), (pb, rb) = load_predictors(ref / "model.pt"), load_predictors(run / "model.pt")
    assert ra == rb and pa.keys() == pb.keys()
    for v in pa:
        sa, sb = pa[v].state_dict(), pb[v].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), v
    for name in ("results.csv", "predictor_vs_global.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(ref / name), pd.read_csv(run / name))
    assert json.loads((ref / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())
    assert not [p for p in run.rglob(".*.tmp")]
