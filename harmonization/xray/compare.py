"""Does the image-conditioned curve predictor earn its place?

GDCE predicts one curve per image. That only helps if it beats simpler global curves: its own
starting curve (step 0 of training) and the best single global curve. Here the global candidates
are the starting curve and the mean of the predictor's curve parameters over the training source
images; the best of them is the one with the higher validation AUC. The predictor is kept only
when its validation AUC is strictly higher than that best global curve's; otherwise the global
curve replaces it, and the report says so. Test-set AUCs get patient-level bootstrap CIs.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from harmonization.xray.evaluate import gdce_transform, predict_proba
from harmonization.xray.predictor import CurvePredictor
from medbench.eval.metrics import auc, bootstrap_auc_ci

log = logging.getLogger(__name__)

PREDICTOR, START, MEAN = "image-conditioned predictor", "starting curve (step 0)", "mean predicted curve (global)"


def constant_predictor(like: CurvePredictor, params: np.ndarray) -> CurvePredictor:
    """A predictor that gives every image the curve ``params`` (a global curve)."""
    out = copy.deepcopy(like).eval()
    a = torch.as_tensor(np.asarray(params, np.float64)).clamp(-0.999999, 0.999999)
    with torch.no_grad():
        out.head[-1].weight.zero_()
        out.head[-1].bias.copy_(torch.atanh(a).float())
    return out


@torch.no_grad()
def predicted_params(predictor: CurvePredictor, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Curve parameters ``(N, n)`` the predictor gives each image."""
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    return torch.cat([predictor(x[i : i + batch]) for i in range(0, len(x), batch)]).double().numpy()


@dataclass
class PredictorComparison:
    table: pd.DataFrame  # curve, val_auc, test_auc, test_auc_lo, test_auc_hi
    keep_predictor: bool
    best_global: str
    param_spread: float  # mean over parameters of the SD across test images (0 = one global curve)
    verdict: str


def compare_with_global_curves(classifier: nn.Module, predictor: CurvePredictor, start_params: np.ndarray,
                               train_images: np.ndarray, val: tuple[np.ndarray, np.ndarray],
                               test: tuple[np.ndarray, np.ndarray], test_groups: np.ndarray | None = None,
                               *, n_boot: int = 1000, seed: int = 0) -> PredictorComparison:
    """Validation and test AUC of the predictor, its starting curve and the mean predicted curve.

    Args:
        classifier: The frozen reference classifier.
        predictor: The trained predictor.
        start_params: Its step-0 curve parameters.
        train_images: Source images it was trained on (for the mean predicted curve).
        val: Held-out source images and labels used for the keep/replace decision.
        test: Held-out source test images and labels (reported with CIs, not used to decide).
        test_groups: Patient ids of ``test`` (patient-level bootstrap).
    """
    candidates = {PREDICTOR: predictor, START: constant_predictor(predictor, start_params),
                  MEAN: constant_predictor(predictor, predicted_params(predictor, train_images).mean(0))}
    rows = []
    for name, model in candidates.items():
        run = gdce_transform(model)
        v_auc = auc(val[1], predict_proba(classifier, run(val[0])))
        ci = bootstrap_auc_ci(test[1], predict_proba(classifier, run(test[0])), groups=test_groups,
                              n_boot=n_boot, seed=seed)
        rows.append({"curve": name, "val_auc": v_auc, "test_auc": ci.auc, "test_auc_lo": ci.lo,
                     "test_auc_hi": ci.hi, "resampled_by": ci.resampled_by})
    table = pd.DataFrame(rows)
    by = table.set_index("curve")
    best_global = max((START, MEAN), key=lambda k: by.loc[k, "val_auc"])
    keep = bool(by.loc[PREDICTOR, "val_auc"] > by.loc[best_global, "val_auc"])
    spread = float(predicted_params(predictor, test[0]).std(0).mean())
    beats_start = by.loc[PREDICTOR, "test_auc"] > by.loc[START, "test_auc"]
    verdict = (f"The image-conditioned predictor {'beats' if beats_start else 'does not beat'} its starting "
               f"curve on held-out test images (AUC {by.loc[PREDICTOR, 'test_auc']:.3f} vs "
               f"{by.loc[START, 'test_auc']:.3f}). On validation images it is "
               f"{'better than' if keep else 'not better than'} the best single global curve ({best_global}): "
               + ("the predictor is kept." if keep else f"the predictor is NOT kept; the saved model applies the "
                  f"{best_global} to every image."))
    return PredictorComparison(table, keep, best_global, spread, verdict)
