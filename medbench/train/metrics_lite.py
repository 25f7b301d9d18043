"""Per-epoch validation figures for the history table (AUC for binary tasks, accuracy)."""

from __future__ import annotations

import numpy as np
import torch

from medbench.train.predict import probabilities


def epoch_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``val_acc`` always; ``val_auc`` (ROC AUC of P(class 1)) for binary tasks with both classes.

    Rows with a negative (unknown) label are ignored.
    """
    keep = labels >= 0
    probs = probabilities(logits[keep]).numpy()
    y = labels[keep].numpy()
    if len(y) == 0:
        return {}
    pred = (probs[:, -1] >= 0.5).astype(int) if probs.shape[1] <= 2 else probs.argmax(1)
    out = {"val_acc": float(np.mean(pred == y))}
    if probs.shape[1] <= 2:
        from sklearn.metrics import roc_auc_score

        out["val_auc"] = float(roc_auc_score(y, probs[:, -1])) if len(np.unique(y)) == 2 else float("nan")
    return out
