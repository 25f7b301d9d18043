"""GDCE's paper recipe, held-out model selection, the predictor-vs-global-curve check and
`harmonize apply` of a model fitted on synthetic vendors to a real radiograph (RG1)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from typer.testing import CliRunner

from harmonization.xray.compare import PREDICTOR, START, compare_with_global_curves
from harmonization.xray.features import VGG16_CONV2_2, random_conv_features, vgg16_conv2_2
from harmonization.xray.gdce import (
    GDCEConfig,
    fit_gdce,
    holdout_split,
    paper_config,
    paper_feature_loss,
    paper_weighting,
    save_predictor,
)
from medbench.cli import app
from medbench.data.synthetic import make_cxr
from medbench.errors import InputError

SIZE = 32
WIDTHS = (4, 8, 8, 16, 16)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised torchvision VGG16 saved as a state dict: the "weights file"."""
    from torchvision.models import vgg16

    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = vgg16(weights=None)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(model.state_dict(), path)
    return path


def _conv22_by_hand(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """conv1_1, ReLU, conv1_2, ReLU, 2x2 max pool, conv2_1, ReLU, conv2_2 (no ReLU), written out."""
    h = x.repeat(1, 3, 1, 1)
    for i, relu in ((0, True), (2, True), ("pool", None), (5, True), (7, False)):
        if i == "pool":
            h = F.max_pool2d(h, 2)
            continue
        h = F.conv2d(h, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
        h = F.relu(h) if relu else h
    return h


def test_paper_loss_matches_an_independent_computation(vgg_file: Path) -> None:
    sd = torch.load(vgg_file, weights_only=True)
    feat = vgg16_conv2_2(str(vgg_file))
    assert VGG16_CONV2_2 == 7 and len(feat.body) == 8  # features[:8]: up to conv2_2, before its ReLU
    g = torch.Generator().manual_seed(0)
    hs, hr, ref = (torch.rand(4, 1, 24, 24, generator=g) for _ in range(3))
    by_hand = _conv22_by_hand(sd, hs)
    assert torch.allclose(feat(hs), by_hand, atol=1e-5)
    assert (by_hand < 0).any()  # pre-ReLU features: a ReLU output could not be negative
    pool = [(_conv22_by_hand(sd, t)).mean(dim=(2, 3)) for t in (hs, hr, ref)]
    expected = float((pool[0] - pool[2]).abs().mean() + (pool[1] - pool[2]).abs().mean())
    got = paper_feature_loss(feat, hs, hr, ref)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # lambda * floor(CE / VGG) * VGG + (1 - lambda) * CE, the ratio a constant (no gradient through it)
    ce, vgg = torch.tensor(0.93, requires_grad=True), torch.tensor(0.041, requires_grad=True)
    for lam in (0.5, 0.95):
        total = paper_weighting(ce, vgg, lam)
        assert float(total.detach()) == pytest.approx(lam * math.floor(0.93 / 0.041) * 0.041 + (1 - lam) * 0.93, rel=1e-6)
        gc, gv = torch.autograd.grad(total, (ce, vgg))
        assert float(gc) == pytest.approx(1 - lam) and float(gv) == pytest.approx(lam * math.floor(0.93 / 0.041))


def test_paper_recipe_needs_the_weights_file(tmp_path: Path, synthetic_cxr_dir: Path) -> None:
    with pytest.raises(InputError, match="--vgg-weights"):
        vgg16_conv2_2(None)
    with pytest.raises(InputError, match="not found"):
        vgg16_conv2_2(str(tmp_path / "missing.pth"))
    torch.save({"foo": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not a VGG16"):
        vgg16_conv2_2(str(tmp_path / "bad.pth"))
    res = CliRunner().invoke(app, ["harmonize", "fit", "--manifest", str(synthetic_cxr_dir / "labels.csv"),
                                   "--reference", "RefVendor", "--out", str(tmp_path / "run"), "--recipe", "paper"])
    assert res.exit_code != 0 and "--vgg-weights" in str(res.output) + str(res.exception)
    assert not (tmp_path / "run").exists()  # failed before any training


def test_paper_config_is_the_authors_schedule() -> None:
    cfg = paper_config()
    assert (cfg.recipe, cfg.lr, 2 * cfg.batch_per_class, cfg.flip, cfg.init) == ("paper", 1e-4, 12, True, "identity")
    assert cfg.loss_lambda in (0.5, 0.95)


def test_holdout_split_is_stratified_and_disjoint() -> None:
    y = torch.tensor([0] * 30 + [1] * 10)
    tr, va = holdout_split(y, 0.2, seed=0)
    assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == 40
    assert (y[va] == 0).sum() == 6 and (y[va] == 1).sum() == 2


def _tiny_classifier(x: np.ndarray, y: np.ndarray) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 2))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        xt, yt = torch.tensor(x[:, None]), torch.tensor(y)
        gen = torch.Generator().manual_seed(0)
        for _ in range(8):
            net.train()
            for idx in torch.randperm(len(xt), generator=gen).split(32):
                loss = F.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, vgg_file: Path):
    """GDCE (paper recipe, random-weight VGG) fitted on two synthetic source vendors pooled."""
    xr, mr = make_cxr(300, size=SIZE, seed=11, vendor="RefVendor", uid_prefix="ref")
    clf = _tiny_classifier(xr, mr["label"].to_numpy())
    parts = [make_cxr(80, size=SIZE, seed=3 + k, vendor=v, uid_prefix=f"tr-{v}") for k, v in
             enumerate(("VendorLog", "VendorPow"))]
    xs = np.concatenate([p[0] for p in parts])
    ys = np.concatenate([p[1]["label"].to_numpy() for p in parts])
    cfg = paper_config(steps=12, val_every=4, input_size=SIZE, widths=WIDTHS, lr=1e-3, feature_network="test vgg")
    res = fit_gdce(clf, vgg16_conv2_2(str(vgg_file)), xs, ys, xr, mr["label"].to_numpy(), cfg=cfg, progress=False)
    model = save_predictor(res.predictor, tmp_path_factory.mktemp("gdce") / "model.pt", cfg, reference="RefVendor")
    tests = [make_cxr(60, size=SIZE, seed=40 + k, vendor=v, uid_prefix=f"te-{v}") for k, v in
             enumerate(("VendorLog", "VendorPow"))]
    test = (np.concatenate([t[0] for t in tests]), np.concatenate([t[1]["label"].to_numpy() for t in tests]),
            np.concatenate([t[1]["patient_id"].to_numpy() for t in tests]))
    val = make_cxr(60, size=SIZE, seed=77, vendor="VendorLog", uid_prefix="va")
    return clf, res, model, xs, (val[0], val[1]["label"].to_numpy()), test


def test_fitted_model_records_recipe_and_kept_step(fitted) -> None:
    _, res, model, *_ = fitted
    cfg = torch.load(model, weights_only=True)["config"]
    assert cfg["recipe"] == "paper" and cfg["feature_network"] == "test vgg" and cfg["flip"] is True
    assert res.kept_start == (res.best_step == 0)
    assert res.history[0]["step"] == 0 and res.start_params is not None
    np.testing.assert_allclose(res.start_params, 0.0)  # the paper starts at the identity curve


def _curve(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    out = x.astype(np.float64)
    for ai in np.atleast_2d(a).T:
        out = out + ai.reshape(-1, 1, 1) * out * (1 - out)
    return out


def test_predictor_beats_its_starting_curve_or_the_report_says_so(fitted) -> None:
    clf, res, _, xs, val, test = fitted
    cmp = compare_with_global_curves(clf, res.predictor, res.start_params, xs, val, test[:2], test[2], n_boot=200)
    with torch.no_grad():  # independent: the curve formula on each image's predicted parameters
        a = res.predictor(torch.tensor(test[0][:, None])).double().numpy()
        prob = lambda ims: clf(torch.tensor(np.clip(ims, 0, 1)[:, None], dtype=torch.float32)).softmax(1)[:, 1]  # noqa: E731
        auc_pred = roc_auc_score(test[1], prob(_curve(test[0], a)).numpy())
        auc_start = roc_auc_score(test[1], prob(_curve(test[0], np.tile(res.start_params, (len(a), 1)))).numpy())
    by = cmp.table.set_index("curve")
    assert by.loc[PREDICTOR, "test_auc"] == pytest.approx(auc_pred, abs=2e-3)
    assert by.loc[START, "test_auc"] == pytest.approx(auc_start, abs=2e-3)
    assert (by["test_auc_lo"] <= by["test_auc"]).all() and (by["test_auc"] <= by["test_auc_hi"]).all()
    assert set(by["resampled_by"]) == {"patient"}
    if auc_pred > auc_start:
        assert "beats its starting curve" in cmp.verdict
    else:
        assert "does not beat its starting curve" in cmp.verdict
    assert ("is kept" in cmp.verdict) == cmp.keep_predictor
    assert cmp.keep_predictor == (by.loc[PREDICTOR, "val_auc"] > by.loc[cmp.best_global, "val_auc"])


def test_model_from_synthetic_vendors_harmonizes_a_real_radiograph(tmp_path: Path, fitted, pydicom_data_dir: Path):
    """RG1_UNCR (Philips CR, MONOCHROME1): vendor-free apply, one MONOCHROME2 output, monotone."""
    import SimpleITK as sitk

    from medbench.io import read_dicom

    _, _, model, *_ = fitted
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pydicom_data_dir / "RG1_UNCR.dcm", src / "RG1_UNCR.dcm")
    res = CliRunner().invoke(app, ["harmonize", "apply", str(src), "--model", str(model), "--out",
                                   str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    outs = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(outs) == 1
    ds = pydicom.dcmread(outs[0])  # a proper Part 10 file
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.PresentationLUTShape == "IDENTITY"
    assert ds.ImageType[0] == "DERIVED" and ds.SeriesDescription == "GDCE harmonized (medbench)"
    stored = ds.pixel_array
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(outs[0]))).reshape(stored.shape)
    np.testing.assert_array_equal(itk, stored)
    x_in = read_dicom(src / "RG1_UNCR.dcm").pixels.ravel()
    x_out = read_dicom(outs[0]).pixels.ravel()
    order = np.argsort(x_in, kind="stable")
    assert np.all(np.diff(x_out[order]) >= 0)  # monotone in the input (brighter stays brighter)


def test_medbench_recipe_still_runs_and_records_itself(tmp_path: Path) -> None:
    x, m = make_cxr(40, size=SIZE, seed=5, vendor="VendorLog", uid_prefix="a")
    xr, mr = make_cxr(40, size=SIZE, seed=6, vendor="RefVendor", uid_prefix="b")
    clf = _tiny_classifier(xr, mr["label"].to_numpy())
    cfg = GDCEConfig(steps=2, val_every=1, input_size=SIZE, widths=WIDTHS)
    res = fit_gdce(clf, random_conv_features(), x, m["label"].to_numpy(), xr, mr["label"].to_numpy(), cfg=cfg,
                   out_path=tmp_path / "m.pt", progress=False)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["config"]["recipe"] == "medbench"
    assert len(res.history) == 3
    with pytest.raises(InputError, match="recipe"):
        fit_gdce(clf, random_conv_features(), x, m["label"].to_numpy(), xr, mr["label"].to_numpy(),
                 cfg=GDCEConfig(recipe="nope"), progress=False)


def test_window_baseline_uses_each_files_dicom_window(synthetic_cxr_dir: Path) -> None:
    from harmonization.xray.baselines import create_harmonizer
    from harmonization.xray.pipeline import load_images

    paths = sorted(str(p) for p in (synthetic_cxr_dir / "images").glob("*.dcm"))[:6]
    size = int(pydicom.dcmread(paths[0], stop_before_pixels=True).Rows)
    images, hows = load_images(paths, size, with_how=True)
    assert hows == ["DICOM window"] * len(paths)
    out = create_harmonizer("window", dicom=True).fit(images).transform(images)
    for p, got in zip(paths, out, strict=True):
        ds = pydicom.dcmread(p)
        v = ds.pixel_array.astype(np.float64)
        center, width, top = float(ds.WindowCenter), float(ds.WindowWidth), 2.0 ** int(ds.BitsStored) - 1
        if ds.PhotometricInterpretation == "MONOCHROME1":  # shown inverted: mirror pixels and window
            v, center = top - v, top - center
        expected = np.clip((v - (center - width / 2)) / width, 0, 1)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_report_warns_on_a_chance_level_reference_and_tiny_sets() -> None:
    import pandas as pd

    from harmonization.xray.fit_job import MIN_PER_CLASS, _warnings

    def results(lo: float) -> pd.DataFrame:
        return pd.DataFrame([{"method": "none", "vendor": "reference", "auc": 0.547, "auc_lo": lo, "auc_hi": 0.7}])

    big = (None, np.repeat([0, 1], 50))
    tiny = (None, np.array([0] * (MIN_PER_CLASS - 1) + [1] * 40))
    assert _warnings(results(0.55), {"V": big}, big) == []
    chance = _warnings(results(0.41), {"V": big}, big)
    assert len(chance) == 1 and "at chance" in chance[0] and "0.547" in chance[0]
    small = _warnings(results(0.55), {"V": tiny}, big)
    assert len(small) == 1 and "Tiny test set for V" in small[0]
