"""The engine learns the embedded synthetic lesion task: test AUC > 0.9 with a small CNN at 48 px."""

from __future__ import annotations

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
    synthetic = pytest.importorskip("medbench.data.synthetic")
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


@pytest.mark.slow
def test_bootstrap_ci_of_the_trained_model_covers_the_population_auc(tmp_path_factory) -> None:
    """Calibration of the patient bootstrap CI: 50 fresh synthetic test sets of 120 images each;
    the "true" AUC is measured on 3000 further fresh images. At 95% nominal, >= 90% must cover.

    The model is trained briefly (3 epochs) so that its AUC is well below 1: at AUC ~ 1 small test
    sets are often perfectly separated and any percentile bootstrap CI collapses to [1, 1].
    """
    from medbench.data.dataset import ArrayDataset
    from medbench.data.synthetic import make_cxr
    from medbench.eval.metrics import bootstrap_auc_ci
    from medbench.train.predict import predict

    res, _ = _fit(tmp_path_factory, epochs=3, lr=3e-3)
    model = res.model.eval()

    def scored(n: int, prefix: str):
        x, m = make_cxr(n, size=48, seed=7, uid_prefix=prefix)
        pred = predict(model, ArrayDataset(x, m["label"].to_numpy(), m), batch_size=256)
        return m["label"].to_numpy(), pred["prob"].to_numpy(), m["patient_id"].to_numpy()

    y_big, p_big, _ = scored(3000, "population")
    true_auc = roc_auc_score(y_big, p_big)
    assert 0.6 < true_auc < 0.97, true_auc  # a regime where the CI is informative
    covered = 0
    for k in range(50):
        y, p, groups = scored(120, f"draw{k}")
        ci = bootstrap_auc_ci(y, p, groups=groups, n_boot=400, seed=k)
        covered += ci.lo <= true_auc <= ci.hi
    assert covered >= 45, f"{covered}/50 CIs cover the population AUC {true_auc:.3f}"


@pytest.mark.slow
def test_engine_reaches_auc_above_0_9_on_synthetic_cxr(trained) -> None:
    res, ds = trained
    test = res.predictions[res.predictions["split"] == "test"]
    assert len(test) == len(ds["test"]) and test["label"].nunique() == 2
    auc = roc_auc_score(test["label"], test["prob"])  # independent of the engine's own metrics
    assert auc > 0.9, (auc, res.history)
