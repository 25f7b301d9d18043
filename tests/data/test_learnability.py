"""The lesion is learnable by a tiny CNN but not from global intensity statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import nn

from medbench.data.synthetic import make_cxr

SIZE = 64


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr, mtr = make_cxr(600, size=SIZE, seed=11, vendor="RefVendor", uid_prefix="train")
    xte, mte = make_cxr(300, size=SIZE, seed=12, vendor="RefVendor", uid_prefix="test")
    return xtr, mtr["label"].to_numpy(), xte, mte["label"].to_numpy()


def _global_stats(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return np.column_stack([flat.mean(1), flat.std(1), *np.percentile(flat, [5, 25, 50, 75, 95, 99], axis=1)])


def _tiny_cnn() -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 1),
    )


@pytest.mark.slow
def test_tiny_cnn_learns_the_lesion_but_global_stats_do_not() -> None:
    xtr, ytr, xte, yte = _data()
    # sanity: balanced, and global histogram statistics carry little of the label
    assert 0.35 < ytr.mean() < 0.65 and 0.35 < yte.mean() < 0.65
    lr = LogisticRegression(max_iter=2000).fit(_global_stats(xtr), ytr)
    auc_stats = roc_auc_score(yte, lr.predict_proba(_global_stats(xte))[:, 1])
    assert auc_stats < 0.75

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = _tiny_cnn()
        gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.tensor(xtr)[:, None], torch.tensor(ytr, dtype=torch.float32)
    for _epoch in range(8):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(32):
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        scores = net(torch.tensor(xte)[:, None]).squeeze(1).numpy()
    auc = roc_auc_score(yte, scores)
    print(f"tiny CNN AUC {auc:.3f}, global-stats AUC {auc_stats:.3f}")
    assert auc > 0.9, f"tiny CNN AUC {auc:.3f} (global-stats AUC {auc_stats:.3f})"
