"""GDCE on the embedded synthetic vendors: AUC recovery, curve accuracy, baselines, and its limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harmonization.xray.baselines import create_harmonizer
from harmonization.xray.curves import apply_curve, fit_curve_to_map
from harmonization.xray.evaluate import PerVendorGDCE, evaluate_methods, predict_proba
from harmonization.xray.features import random_conv_features
from harmonization.xray.gdce import GDCEConfig, fit_gdce
from medbench.data.synthetic import make_cxr
from medbench.data.vendors import VENDOR_INVERSES, VENDORS
from medbench.eval.metrics import auc

SIZE = 48
SOURCES = ("VendorPow", "VendorLog", "VendorInvS")
pytestmark = pytest.mark.xdist_group("gdce_synthetic")  # one worker builds the shared setup


def _tiny_cnn_trained(x: np.ndarray, y: np.ndarray, seed: int = 0) -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        xt, yt = torch.tensor(x[:, None]), torch.tensor(y)
        for _ in range(15):
            net.train()
            for idx in torch.randperm(len(xt), generator=gen).split(32):
                loss = F.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def setup():
    xr, mr = make_cxr(600, size=SIZE, seed=11, vendor="RefVendor", uid_prefix="ref")
    clf = _tiny_cnn_trained(xr, mr["label"].to_numpy())
    test = {}
    for v in (*SOURCES, "VendorSig", "RefVendor"):  # the same test patients in every vendor's look
        x, m = make_cxr(200, size=SIZE, seed=4, vendor=v, uid_prefix="test")
        test[v] = (x, m["label"].to_numpy())
    fits = {}
    for v in (*SOURCES, "VendorSig"):
        xs, ms = make_cxr(150, size=SIZE, seed=3, vendor=v, uid_prefix=f"train-{v}")
        # lambda_feat 30: the frozen classifier's cross-entropy alone rewards curves that sharpen the
        # lesion beyond the reference look (at lambda_feat 1 the inverse-S fit drifts to RMSE
        # 0.0105-0.0123 from the inverse over GDCE seeds 0-2 while its AUC stays within 0.002); the
        # feature-statistics term is what pins the reference look
        cfg = GDCEConfig(steps=40, lr=1e-3, input_size=SIZE, widths=(8, 16, 32, 64, 128), val_every=20,
                         lambda_feat=30.0)
        fits[v] = fit_gdce(clf, random_conv_features(), xs, ms["label"].to_numpy(), xr, mr["label"].to_numpy(),
                           cfg=cfg, progress=False)
    return clf, (xr, mr["label"].to_numpy()), test, fits


def _auc(clf: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return auc(y, predict_proba(clf, x))


#: Margins of the recovery test, set outside the spread measured across numerics (see the test).
AUC_MARGIN, MIN_RECOVERED, RMSE_MAX = 0.025, 0.75, 0.03


@pytest.mark.slow
def test_gdce_recovers_reference_auc_and_inverts_the_vendor_curve(setup):
    """GDCE on the three fixed-point vendor looks: AUC back near the reference, curve near the inverse.

    Spread across numerics, measured on one machine by re-running this setup with oneDNN on and
    off, 1 and 2 torch threads, ``ATEN_CPU_CAPABILITY=default`` and classifier/GDCE seeds 0-2
    (six runs): ``after - reference`` AUC ranged -0.011..+0.0005 and the curve RMSE to the inverse
    0.004..0.0195 (the 40-step fit is short: on the oneDNN path the kept step is a noisier one).
    The margins sit outside that spread and still catch a GDCE that does nothing:
    - ``after >= reference - 0.025`` and at least 75% of the vendor's AUC gap recovered (measured
      minimum 0.96; a no-op recovers 0%, and on the mild inverse-S look the gap is only 0.02-0.05,
      which is why the relative criterion is needed);
    - curve RMSE < 0.03 and below half the RMSE of the identity curve (a no-op), which is 0.146,
      0.208 and 0.033 for the power, log and inverse-S looks.
    """
    clf, _, test, fits = setup
    ref_auc = _auc(clf, *test["RefVendor"])
    assert ref_auc > 0.9
    for v in SOURCES:
        x, y = test[v]
        before = _auc(clf, x, y)
        with torch.no_grad():
            a = fits[v].predictor(torch.tensor(x[:, None]))
            after = _auc(clf, fits[v].predictor.harmonize(torch.tensor(x[:, None]))[:, 0].numpy(), y)
        pix = x[:40].reshape(40, -1)[:, ::3].astype(np.float64)
        fitted = apply_curve(torch.tensor(pix), a[:40].double()).numpy()
        inverse = VENDOR_INVERSES[VENDORS[v].curve](pix)
        rmse = float(np.sqrt(np.mean((fitted - inverse) ** 2)))
        rmse_noop = float(np.sqrt(np.mean((pix - inverse) ** 2)))
        assert ref_auc - before > 0.01, f"{v}: the vendor look should cost AUC ({before:.4f} vs {ref_auc:.4f})"
        recovered = (after - before) / (ref_auc - before)
        assert after >= ref_auc - AUC_MARGIN and recovered >= MIN_RECOVERED, \
            f"{v}: AUC {before:.4f} -> {after:.4f}, reference {ref_auc:.4f} ({recovered:.0%} of the gap)"
        assert rmse < min(RMSE_MAX, 0.5 * rmse_noop), \
            f"{v}: fitted curve RMSE {rmse:.4f} from the inverse vendor curve (no-op {rmse_noop:.4f})"
    drops = [ref_auc - _auc(clf, *test[v]) for v in ("VendorPow", "VendorLog")]
    assert min(drops) > 0.1  # the strong looks really hurt the reference classifier


@pytest.mark.slow
def test_gdce_beats_zscore_and_histogram_equalisation(setup):
    clf, ref_train, test, fits = setup
    methods = {"gdce": PerVendorGDCE({v: fits[v].predictor for v in SOURCES}),
               "zscore": create_harmonizer("zscore"), "histeq": create_harmonizer("histeq")}
    res = evaluate_methods(clf, ref_train, test["RefVendor"], {v: test[v] for v in SOURCES}, methods,
                           retrain=lambda x, y, name: _tiny_cnn_trained(x, y))
    mean_auc = res[res["vendor"].isin(SOURCES)].groupby("method")["auc"].mean()
    assert mean_auc["gdce"] > mean_auc["zscore"] and mean_auc["gdce"] > mean_auc["histeq"]
    assert mean_auc["gdce"] > mean_auc["none"] + 0.05
    assert set(res.loc[res["method"] != "none", "retrained"]) == {True, False}


@pytest.mark.slow
def test_sigmoid_vendor_is_beyond_gdce_but_histogram_matching_handles_it(setup):
    """Documented limit: the sigmoid look maps [0, 1] onto [0.1, 0.9]; GDCE curves fix 0 and 1."""
    clf, (xr, _), test, fits = setup
    x, y = test["VendorSig"]
    pix = x[:40].reshape(40, -1)[:, ::3].astype(np.float64)
    with torch.no_grad():
        a = fits["VendorSig"].predictor(torch.tensor(x[:40, None]))
    fitted = apply_curve(torch.tensor(pix), a.double()).numpy()
    rmse = float(np.sqrt(np.mean((fitted - VENDOR_INVERSES["sigmoid"](pix)) ** 2)))
    assert rmse > 0.02, f"GDCE unexpectedly inverted the sigmoid (RMSE {rmse:.4f})"
    # the limit is the family's, not the training's: even the best curve fitted to the inverse itself misses
    sub = pix.ravel()[::11]
    _, best = fit_curve_to_map(sub, VENDOR_INVERSES["sigmoid"](sub), steps=600)
    assert best > 0.05, f"the curve family can invert the sigmoid to RMSE {best:.4f}"
    matched = create_harmonizer("histmatch").fit(xr).transform(x[:40]).reshape(40, -1)[:, ::3]
    rmse_hm = float(np.sqrt(np.mean((matched - VENDOR_INVERSES["sigmoid"](pix)) ** 2)))
    assert rmse_hm < min(best, rmse), f"histogram matching {rmse_hm:.4f} vs GDCE {rmse:.4f} (family best {best:.4f})"
