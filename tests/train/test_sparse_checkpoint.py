"""The engine keeps and exports only sparse epochs: ASP 1:8 with late pruning on sklearn digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from medbench.data.dataset import ArrayDataset
from medbench.train.engine import TrainConfig, fit


def _digits() -> tuple[ArrayDataset, ArrayDataset]:
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x = (x[order] / 16.0).reshape(-1, 8, 8).astype(np.float32)
    y = y[order]
    return ArrayDataset(x[:1200], y[:1200]), ArrayDataset(x[1200:], y[1200:])


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def _accuracy(model: nn.Module, ds: ArrayDataset) -> float:
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = np.array([int(ds[i][1]) for i in range(len(ds))])
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


def test_asp_late_pruning_exports_best_sparse_epoch(tmp_path: Path) -> None:
    train, val = _digits()
    torch.manual_seed(0)
    # Prune after epoch 9 of 12 (0-based epoch 9 ends with pruning); patience 2 would, counted over
    # dense epochs or right after the pruning spike, stop or select a dense epoch.
    cfg = TrainConfig(epochs=12, lr=3e-3, batch_size=64, patience=2, device="cpu", progress=False, seed=0,
                      sparsity="1:8", sparsity_recipe="asp", sparsity_options={"prune_epoch": 10})
    res = fit(_mlp(), train, val, cfg, tmp_path)
    hist = res.history
    assert len(hist) == 12  # no early stop before or right after pruning
    final = hist[hist["masks_final"].astype(bool)]
    assert list(final["epoch"]) == [10, 11, 12]  # history numbers epochs from 1
    assert not hist.loc[hist["epoch"] < 10, "masks_final"].astype(bool).any()
    # best epoch = the lowest validation loss among the sparse epochs only (here not the dense minimum)
    best = int(final.loc[final["val_loss"].idxmin(), "epoch"])
    assert res.summary["best_epoch"] == best
    assert hist["val_loss"].idxmin() < 9  # a dense epoch had the lowest loss overall: the old bug's trigger
    # the exported layer is exactly 1:8: one non-zero at most in every group of 8 input weights
    w = res.model[3].weight.detach()
    assert int((w.reshape(w.shape[0], -1, 8) != 0).sum(-1).max()) <= 1
    assert abs(float((w != 0).float().mean()) - 1 / 8) < 1e-9
    # exported model = the validated sparse model of the best epoch, and close to the last sparse epoch
    acc = _accuracy(res.model, val)
    assert abs(acc - float(hist.loc[hist["epoch"] == best, "val_acc"].iloc[0])) < 1e-9
    assert acc >= float(hist["val_acc"].iloc[-1]) - 0.02


def test_step_history_records_switch_and_best_is_after_it(tmp_path: Path) -> None:
    train, val = _digits()
    torch.manual_seed(0)
    # 19 steps per epoch; t_min 40 keeps epochs 0-1 dense whatever AutoSwitch says, t_max 80 caps it
    cfg = TrainConfig(epochs=6, lr=3e-3, batch_size=64, patience=None, device="cpu", progress=False, seed=0,
                      sparsity="2:4", sparsity_recipe="step", sparsity_options={"t_min": 40, "t_max": 80})
    res = fit(_mlp(), train, val, cfg, tmp_path)
    hist = res.history
    switch = res.summary["hooks_summary"]["step"]["switch_step"]
    assert 40 <= switch <= 80
    phase2 = hist["step"] >= switch  # the epoch's last step is at or past the switch
    assert list(hist["masks_final"].astype(bool)) == list(phase2)
    assert list(hist["step_phase"]) == [2 if p else 1 for p in phase2]
    assert set(hist.loc[phase2, "step_switch_step"]) == {switch}
    assert set(hist.loc[~phase2, "step_switch_step"]) == {-1}
    assert res.summary["best_epoch"] == int(hist.loc[phase2].loc[hist.loc[phase2, "val_loss"].idxmin(), "epoch"])
    w = res.model[3].weight.detach()
    assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2
