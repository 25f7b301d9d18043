"""Engine behaviour on tiny in-memory problems: run folder, predictions, schedules, early stopping,
linear probing, hooks and config handling."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from medbench.errors import InputError
from medbench.train.engine import FitResult, TrainConfig, fit, predict
from medbench.train.hooks import ORDERINGS, SPARSITY, TrainHook

_spec = importlib.util.spec_from_file_location("engine_helpers", Path(__file__).with_name("test_engine_helpers.py"))
H = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(H)  # type: ignore[union-attr]

FAST = dict(batch_size=16, progress=False, device="cpu", seed=0)


def _stack(items):
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])


def test_fit_writes_run_folder_and_predictions_match_model(tmp_path: Path) -> None:
    data = H.blob_data(160, seed=1)
    train, val, test = data[:100], data[100:130], data[130:]
    cfg = TrainConfig(epochs=3, lr=3e-2, **FAST)
    res = fit(H.TinyNet(), train, val, cfg, tmp_path, test_ds=test, keep_meta=["group"])
    assert isinstance(res, FitResult)
    for name in ("config.yaml", "history.csv", "predictions.parquet", "predictions.csv",
                 "summary.json", "train.log", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / name).is_file(), name
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["settings"]["train"]["lr"] == 3e-2 and saved["resolved"]["n_train"] == 100
    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3] and list(hist["step"]) == [7, 14, 21]  # from 1, as the bar
    # predictions: one row per val/test item, prob = softmax(model(x))[:, 1] of the returned model
    pred = pd.read_parquet(tmp_path / "predictions.parquet")
    assert list(pred.columns[:5]) == ["uid", "split", "label", "prob", "pred"] and "group" in pred
    assert (pred["split"] == "val").sum() == 30 and (pred["split"] == "test").sum() == 30
    x, y = _stack(val + test)
    res.model.eval()
    with torch.no_grad():
        expect = torch.softmax(res.model(x), 1)[:, 1].numpy()
    np.testing.assert_allclose(pred["prob"].to_numpy(), expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred["label"].to_numpy(), y.numpy())
    assert pred["uid"].tolist() == [m[2]["uid"] for m in val + test]
    # the easy task is learnt: val AUC of the best model from the predictions
    from sklearn.metrics import roc_auc_score

    v = pred[pred.split == "val"]
    assert roc_auc_score(v.label, v.prob) > 0.9


def test_rerun_of_finished_run_trains_nothing(tmp_path: Path) -> None:
    data = H.blob_data(60, seed=2)
    cfg = TrainConfig(epochs=2, **FAST)
    first = fit(H.TinyNet(), data[:40], data[40:], cfg, tmp_path)
    mtime = (tmp_path / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = fit(H.TinyNet(seed=5), data[:40], data[40:], cfg, tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    pd.testing.assert_frame_equal(first.history, again.history)


def test_early_stopping_keeps_best_val_loss_epoch(tmp_path: Path) -> None:
    # random labels: the model memorises the training set and the val loss rises -> early stop
    data = H.blob_data(96, seed=3, random_labels=True)
    cfg = TrainConfig(epochs=40, lr=5e-2, patience=2, schedule="constant", optimizer="adam", **FAST)
    res = fit(H.TinyNet(width=16), data[:64], data[64:], cfg, tmp_path)
    hist = res.history
    best = int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    assert res.summary["best_epoch"] == best
    assert res.summary["stopped_early"] and len(hist) == best + cfg.patience < cfg.epochs
    # the returned model is the best epoch's: recompute its val loss independently
    x, y = _stack(data[64:])
    res.model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(res.model(x), y).item()
    assert loss == pytest.approx(hist["val_loss"].min(), rel=1e-5)
    assert loss < hist["val_loss"].iloc[-1]


def test_linear_probe_leaves_backbone_unchanged(tmp_path: Path) -> None:
    data = H.blob_data(64, seed=4)
    model = H.TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=2, lr=1e-1, linear_probe=True, **FAST)
    res = fit(model, data[:48], data[48:], cfg, tmp_path)
    after = res.model.state_dict()
    for k, v in before.items():
        if k.startswith("backbone."):  # weights and BatchNorm running stats
            assert torch.equal(v, after[k]), k
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert all(p.requires_grad for p in res.model.parameters())  # flags restored after fit


def test_linear_probe_without_classifier_is_an_input_error(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(InputError, match="classifier"):
        fit(model, H.blob_data(8), None, TrainConfig(epochs=1, linear_probe=True, **FAST), tmp_path)


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_cosine_schedule_follows_formula(tmp_path: Path, interval: str) -> None:
    data = H.blob_data(48, seed=5)
    cfg = TrainConfig(epochs=4, lr=0.02, schedule="cosine", schedule_interval=interval, **FAST)
    res = fit(H.TinyNet(), data[:48], None, cfg, tmp_path)
    # lr at the start of epoch e: lr0 * (1 + cos(pi * e / E)) / 2, whatever the interval
    expect = [0.02 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    np.testing.assert_allclose(res.history["lr"], expect, rtol=1e-9)
    assert math.isnan(res.history["val_loss"].iloc[0])  # no validation set


def test_step_schedule(tmp_path: Path) -> None:
    data = H.blob_data(32, seed=5)
    cfg = TrainConfig(epochs=5, lr=0.1, schedule="step", step_size=2, gamma=0.5, optimizer="sgd", **FAST)
    res = fit(H.TinyNet(), data, None, cfg, tmp_path)
    np.testing.assert_allclose(res.history["lr"], [0.1, 0.1, 0.05, 0.05, 0.025])


def test_multiclass_and_single_logit_predictions(tmp_path: Path) -> None:
    data = H.blob_data(90, n_classes=3, seed=6)
    res = fit(H.TinyNet(n_out=3), data[:60], data[60:], TrainConfig(epochs=2, lr=3e-2, **FAST), tmp_path / "mc")
    pred = res.predictions
    assert [c for c in pred.columns if c.startswith("prob")] == ["prob_0", "prob_1", "prob_2"]
    probs = pred[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(pred["pred"], probs.argmax(1))
    # one output unit: BCE-with-logits training, prob = sigmoid(logit)
    data2 = H.blob_data(60, seed=7)
    res2 = fit(H.TinyNet(n_out=1), data2[:40], data2[40:], TrainConfig(epochs=2, **FAST), tmp_path / "bin")
    x, _ = _stack(data2[40:])
    res2.model.eval()
    with torch.no_grad():
        expect = torch.sigmoid(res2.model(x))[:, 0].numpy()
    np.testing.assert_allclose(res2.predictions["prob"], expect, rtol=1e-5, atol=1e-6)
    # predict() alone on items without meta names rows by index
    df = predict(res2.model, [(it[0], it[1]) for it in data2[:5]], split="extra")
    assert df["uid"].tolist() == ["0", "1", "2", "3", "4"] and set(df["split"]) == {"extra"}


class _Recorder(TrainHook):
    name = "recorder"

    def __init__(self, log: list) -> None:
        self.log = log

    def make_optimizer(self, params, cfg):
        self.log.append("make_optimizer")
        return None

    def on_train_start(self, model, optimizer):
        self.log.append("on_train_start")

    def after_backward(self, model, step):
        assert all(p.grad is not None for p in model.parameters())
        self.log.append(("after_backward", step))

    def after_step(self, model, optimizer, step):
        self.log.append(("after_step", step))

    def on_epoch_end(self, model, epoch):
        self.log.append(("on_epoch_end", epoch))

    def on_train_end(self, model):
        self.log.append("on_train_end")
        return model


class _ObservingSampler(torch.utils.data.Sampler):
    """Records the engine's calls; yields a reversed order to check the engine follows the sampler."""

    log: list = []

    def __init__(self, dataset_size: int, seed: int = 0, tag: str = "") -> None:
        self.n, self.tag = dataset_size, tag

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch):
        self.log.append(("set_epoch", epoch))

    def observe(self, model, loss_fn, inputs, targets, indices):
        per_example = torch.stack([loss_fn(model(inputs[i : i + 1]), targets[i : i + 1]) for i in range(len(indices))])
        assert torch.isfinite(per_example).all()
        self.log.append(("observe", indices.tolist()))

    def end_epoch(self):
        self.log.append("end_epoch")

    def summary(self):
        return {"tag": self.tag}


def test_hooks_and_sampler_are_called_in_documented_order(tmp_path: Path) -> None:
    with ORDERINGS.temporary("test-observing", _ObservingSampler):
        _check_observing_order(tmp_path)


def _check_observing_order(tmp_path: Path) -> None:
    log: list = []
    _ObservingSampler.log = log
    data = H.blob_data(10, seed=8)
    cfg = TrainConfig(epochs=2, batch_size=4, order="test-observing", order_options={"tag": "x"},
                      progress=False, device="cpu")
    res = fit(H.TinyNet(), data, None, cfg, tmp_path, hooks=[_Recorder(log)])
    step_calls = []
    for s in range(3):
        step_calls += [("after_backward", s), ("observe", None), ("after_step", s)]
    expect = ["make_optimizer", "on_train_start", ("set_epoch", 0)]
    expect += step_calls + ["end_epoch", ("on_epoch_end", 0), ("set_epoch", 1)]
    expect += [(n, s + 3 if isinstance(s, int) else s) for n, s in step_calls]
    expect += ["end_epoch", ("on_epoch_end", 1), "on_train_end"]
    got = [(e[0], None) if isinstance(e, tuple) and e[0] == "observe" else e for e in log]
    assert got == expect
    observed = [e[1] for e in log if isinstance(e, tuple) and e[0] == "observe"]
    assert observed[:3] == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]  # the sampler's order, batched
    assert res.summary["sampler"] == {"tag": "x"} and res.summary["hooks"] == ["recorder"]


def test_sparsity_config_creates_hook_from_registry(tmp_path: Path) -> None:
    created: list = []

    class FakeRecipe(TrainHook):
        name = "fake-sparsity"

        def __init__(self, pattern: str, strength: float = 0.0) -> None:
            created.append((pattern, strength))
            self.steps = 0

        def after_step(self, model, optimizer, step):
            self.steps += 1

        def summary(self):
            return {"steps": self.steps}

    cfg = TrainConfig(epochs=1, sparsity="2:4", sparsity_recipe="test-fake", sparsity_options={"strength": 0.5}, **FAST)
    with SPARSITY.temporary("test-fake", FakeRecipe):
        res = fit(H.TinyNet(), H.blob_data(32), None, cfg, tmp_path)
    assert created == [("2:4", 0.5)] and res.summary["hooks_summary"] == {"fake-sparsity": {"steps": 2}}


def test_config_round_trip_and_validation(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=3, order_options={"sketch_dim": 64}, sparsity="2:4")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    with pytest.raises(InputError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(InputError, match="optimizer"):
        TrainConfig(optimizer="adan")
    with pytest.raises(InputError, match="N:M"):
        TrainConfig(sparsity="4:2")
    # resuming a folder with a different training config is refused, listing every changed field
    # (runtime-only fields such as progress do not count); restart=True starts over
    data = H.blob_data(16)
    fit(H.TinyNet(), data, None, TrainConfig(epochs=1, **FAST), tmp_path)
    with pytest.raises(InputError, match=r"2 changed: train\.epochs: 1 -> 2; train\.lr: 0\.001 -> 0\.5.*--restart"):
        fit(H.TinyNet(), data, None, TrainConfig(epochs=2, **{**FAST, "progress": True}, lr=0.5), tmp_path)
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1  # refused: the folder is untouched
    res = fit(H.TinyNet(), data, None, TrainConfig(epochs=2, **FAST, lr=0.5), tmp_path, restart=True)
    assert len(res.history) == 2 and len(pd.read_csv(tmp_path / "history.csv")) == 2
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["settings"]["train"]["epochs"] == 2
    # a checkpoint the run folder does not account for (copied from another run) is never resumed
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "checkpoints", other / "checkpoints")
    with pytest.raises(InputError, match="settings other than"):
        fit(H.TinyNet(), data, None, TrainConfig(epochs=3, **FAST), other)


class _GradNorms(TrainHook):
    name = "grad-norms"

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []

    def after_backward(self, model, step):
        self.before.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))

    def after_step(self, model, optimizer, step):  # .grad is what the optimizer used
        self.after.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_gradient_clipping_and_optimizers(tmp_path: Path, optimizer: str) -> None:
    rec = _GradNorms()
    cfg = TrainConfig(epochs=1, grad_clip=0.05, optimizer=optimizer, lr=0.1, **FAST)
    res = fit(H.TinyNet(), H.blob_data(48, seed=9), None, cfg, tmp_path, hooks=[rec])
    assert res.summary["optimizer_class"] == {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}[optimizer]
    assert len(rec.before) == 3 and max(rec.before) > 0.05  # clipping had work to do
    for b, a in zip(rec.before, rec.after, strict=True):
        assert a == pytest.approx(min(b, 0.05), rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_and_channels_last_on_cuda(tmp_path: Path, amp: str) -> None:
    data = H.blob_data(96, seed=12)
    cfg = TrainConfig(epochs=3, lr=3e-2, batch_size=16, amp=amp, grad_clip=1.0, device="cuda", progress=False)
    res = fit(H.TinyNet(), data[:64], data[64:], cfg, tmp_path)
    assert res.summary["amp_dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[amp]
    assert res.summary["channels_last"] and res.history["train_loss"].map(math.isfinite).all()
    assert res.history["val_loss"].iloc[-1] < res.history["val_loss"].iloc[0]


def test_amp_is_a_no_op_on_cpu(tmp_path: Path) -> None:
    data = H.blob_data(32, seed=13)
    runs = [fit(H.TinyNet(), data, None, TrainConfig(epochs=1, amp=amp, **FAST), tmp_path / amp)
            for amp in ("none", "fp16")]
    assert runs[1].summary["amp_dtype"] == "none" and not runs[1].summary["channels_last"]
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_epochs_are_numbered_from_1_in_bar_log_history_and_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    import re

    from medbench.train import engine

    descs: list[str] = []

    def recording_tqdm(*args, **kw):
        descs.append(kw.get("desc", ""))
        return real_tqdm(*args, **kw)

    real_tqdm = engine.tqdm
    monkeypatch.setattr(engine, "tqdm", recording_tqdm)
    data = H.blob_data(96, seed=3, random_labels=True)
    cfg = TrainConfig(epochs=12, lr=5e-2, patience=2, schedule="constant", optimizer="adam",
                      **{**FAST, "progress": True})
    seen: list[int] = []
    with caplog.at_level("INFO", logger="medbench.train.engine"):
        res = fit(H.TinyNet(width=16), data[:64], data[64:], cfg, tmp_path, on_epoch=lambda r: seen.append(r["epoch"]))
    n = len(res.history)
    assert res.summary["stopped_early"] and n < cfg.epochs  # so "stopped after epoch n" is tested too
    shown = list(range(1, n + 1))
    bars = [int(m) for d in descs for m in re.findall(r"^epoch (\d+)/12$", d)]
    logged = [int(r.getMessage().split("/")[0].split()[-1]) for r in caplog.records
              if re.match(r"epoch \d+/12:", r.getMessage())]
    on_disk = pd.read_csv(tmp_path / "history.csv")["epoch"].tolist()
    assert bars == logged == on_disk == res.history["epoch"].tolist() == seen == shown
    best_row = int(res.history.loc[res.history["val_loss"].idxmin(), "epoch"])
    assert res.summary["best_epoch"] == best_row
    assert f"early stopping after epoch {n} (best epoch {best_row})" in caplog.text
    assert f"best epoch {best_row})" in caplog.text.splitlines()[-1]


def test_a_last_batch_of_one_image_joins_the_previous_batch(tmp_path: Path) -> None:
    """17 images at batch 8 leave one image over; BatchNorm1d cannot train on it alone."""

    class PooledBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 4), nn.BatchNorm1d(4))
            self.classifier = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.backbone(x))

    seen: list[int] = []

    class Sizes(TrainHook):
        def on_batch_end(self, step: int, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
            seen.append(int(targets.shape[0]))

    data = H.blob_data(17)
    fit(PooledBN(), data, None, TrainConfig(epochs=1, **{**FAST, "batch_size": 8}), tmp_path, hooks=[Sizes()])
    assert sorted(seen) == [8, 9]  # every image trained on, no batch of one
