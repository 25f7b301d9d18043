"""The engine learns the embedded synthetic lesion task: test AUC > 0.9 with a small CNN at 48 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from medbench.train.engine import TrainConfig, fit


def _block(i: int, o: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
        nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """VGG-style blocks, global max pooling (a lesion is a local bright spot), per-image standardising."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(1, 16), _block(16, 32), _block(32, 32), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-3)
        return self.classifier(self.features(x))


def _fit(tmp_path_factory: pytest.TempPathFactory, epochs: int, lr: float):
    import medbench.data.synthetic as synthetic
    from medbench.data.dataset import ArrayDataset

    images, meta = synthetic.make_cxr(1000, size=48, seed=0)
    # patient-grouped split: the generator gives consecutive images of a patient consecutive rows
    patients = meta["patient_id"].drop_duplicates().tolist()
    split = {p: ("train" if i % 20 < 14 else "val" if i % 20 < 17 else "test") for i, p in enumerate(patients)}
    part = meta["patient_id"].map(split)
    ds = {s: ArrayDataset(images[(part == s).to_numpy()], meta.label[part == s].to_numpy(),
                          meta[part == s].reset_index(drop=True)) for s in ("train", "val", "test")}
    assert set(meta.patient_id[part == "train"]).isdisjoint(meta.patient_id[part == "test"])
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=32, patience=None, device="cpu", progress=False, seed=0)
    res = fit(SmallCNN(), ds["train"], ds["val"], cfg, tmp_path_factory.mktemp("engine"), test_ds=ds["test"])
    return res, ds


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """The engine's fine-tuned SmallCNN on 1000 synthetic images, with its held-out predictions."""
    return _fit(tmp_path_factory, epochs=12, lr=3e-3)


#: Coverage study: draws of ~70 patients (~105 images) from a pool of 4000 fresh images.
COVERAGE_DRAWS, COVERAGE_PATIENTS, COVERAGE_POOL = 200, 70, 4000


@pytest.mark.slow
def test_bootstrap_ci_of_the_trained_model_covers_the_population_auc(tmp_path_factory) -> None:
    """Calibration of the patient bootstrap CI on the engine's model (95% nominal).

    The population is a pool of 4000 fresh synthetic images scored once; its AUC is the truth.
    Each of 200 draws takes 70 patients at random (without replacement, ~105 images; two draws
    share ~1 patient, so coverage events are nearly independent) and asks whether their patient
    bootstrap CI covers the pool AUC.

    Threshold, from the sampling distribution of the count: at the nominal 95% coverage the
    number covered is Binomial(200, 0.95); we fail below its 0.1% quantile (179). Measured on this
    study (1000 draws from a 6000-image pool): grouped 95% CIs covered 95.3%, so a correct method
    fails with probability ~0.1% whatever the machine's model. A broken method still fails: 80%
    CIs (too narrow) covered 80.6% of the same draws, P(count >= 179 | 0.806) = 5e-4.

    The model is trained briefly (3 epochs) so that its AUC is well below 1: at AUC ~ 1 small test
    sets are often perfectly separated and any percentile bootstrap CI collapses to [1, 1].
    """
    from scipy.stats import binom

    from medbench.data.dataset import ArrayDataset
    from medbench.data.synthetic import make_cxr
    from medbench.eval.metrics import bootstrap_auc_ci
    from medbench.train.predict import predict

    res, _ = _fit(tmp_path_factory, epochs=3, lr=3e-3)
    x, m = make_cxr(COVERAGE_POOL, size=48, seed=7, uid_prefix="population")
    pred = predict(res.model.eval(), ArrayDataset(x, m["label"].to_numpy(), m), batch_size=256)
    y, p, pid = m["label"].to_numpy(), pred["prob"].to_numpy(), m["patient_id"].to_numpy()
    true_auc = roc_auc_score(y, p)
    assert 0.6 < true_auc < 0.97, true_auc  # a regime where the CI is informative
    patients = np.unique(pid)
    rng = np.random.default_rng(0)
    covered = 0
    for k in range(COVERAGE_DRAWS):
        rows = np.isin(pid, rng.choice(patients, size=COVERAGE_PATIENTS, replace=False))
        ci = bootstrap_auc_ci(y[rows], p[rows], groups=pid[rows], n_boot=400, seed=k)
        covered += ci.lo <= true_auc <= ci.hi
    threshold = int(binom.ppf(0.001, COVERAGE_DRAWS, 0.95))
    assert covered >= threshold, f"{covered}/{COVERAGE_DRAWS} CIs cover the population AUC {true_auc:.3f} (need {threshold})"


@pytest.mark.slow
def test_engine_reaches_auc_above_0_9_on_synthetic_cxr(trained) -> None:
    res, ds = trained
    test = res.predictions[res.predictions["split"] == "test"]
    assert len(test) == len(ds["test"]) and test["label"].nunique() == 2
    auc = roc_auc_score(test["label"], test["prob"])  # independent of the engine's own metrics
    assert auc > 0.9, (auc, res.history)
