# %% [markdown]
# # 3. Cross-vendor X-ray harmonization with GDCE
#
# Each X-ray vendor maps detector signal to grey values with its own monotone curve. A classifier
# trained on one vendor (the **reference**) can lose much of its AUC on another. GDCE (Lu et al. 2025)
# learns, per image, an 8-step intensity curve `x <- x + a_i x (1 - x)` (parameters `a_i` in
# [-1, 1] from a small CNN) that maps a new vendor's images onto the reference look, trained through
# the frozen reference classifier (cross-entropy) plus an early-feature statistics loss.
#
# This notebook uses the synthetic vendor looks of `medbench.data.vendors` (48 px, small n, a tiny
# classifier and a short GDCE run, so that it runs on a CPU in about a minute) and compares GDCE with
# classical baselines by the reference classifier's AUC on the vendor's held-out images.

# %%
# %matplotlib inline
import json
import logging
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

warnings.filterwarnings("ignore", category=UserWarning)
logging.basicConfig(level=logging.WARNING)
for handler in logging.getLogger().handlers:  # run folders log INFO to their files only
    handler.setLevel(logging.WARNING)
T0 = time.perf_counter()

# %%
from harmonization.xray.baselines import create_harmonizer
from harmonization.xray.curves import curve_values, fit_curve_to_map
from harmonization.xray.evaluate import (
    PerVendorGDCE,
    curves_figure,
    evaluate_methods,
    gdce_transform,
    histograms_figure,
    predict_proba,
    train_classifier,
)
from harmonization.xray.features import random_conv_features
from harmonization.xray.gdce import GDCEConfig, fit_gdce
from medbench.data.synthetic import make_cxr
from medbench.data.vendors import VENDOR_CURVES, VENDOR_INVERSES, VENDORS
from medbench.eval.metrics import auc

SIZE = 48
ref_x, ref_meta = make_cxr(600, size=SIZE, seed=0, vendor="RefVendor", uid_prefix="ref")
ref_y = ref_meta["label"].to_numpy()
ref_train, ref_test = (ref_x[:480], ref_y[:480]), (ref_x[480:], ref_y[480:])
vendors = {}  # vendor -> (train images, labels, test images, labels): 100 + 100 images each
for v in ["VendorPow", "VendorLog", "VendorInvS", "VendorSig"]:
    x, m = make_cxr(200, size=SIZE, seed=1, vendor=v, uid_prefix=v)
    y = m["label"].to_numpy()
    vendors[v] = (x[:100], y[:100], x[100:], y[100:])
print({v: VENDORS[v] for v in ["RefVendor", *vendors]})

# %% [markdown]
# ## The vendor looks
#
# One linear image (with its detector noise) through each vendor's curve, and the curves themselves.

# %%
fig, ax = plt.subplots(1, len(vendors) + 2, figsize=(2.2 * (len(vendors) + 2), 2.6))
for a, v in zip(ax, ["RefVendor", *vendors]):
    img, _ = make_cxr(1, size=SIZE, seed=5, vendor=v)
    a.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    a.set_title(v, fontsize=9)
    a.axis("off")
grid = np.linspace(0, 1, 101)
for v in ["RefVendor", *vendors]:
    ax[-1].plot(grid, VENDOR_CURVES[VENDORS[v].curve](grid), label=VENDORS[v].curve)
ax[-1].set_title("vendor curves", fontsize=9)
ax[-1].legend(fontsize=6)
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# ## Reference classifier and the AUC drop per vendor
#
# A small CNN trained on reference-vendor images only, then tested on every vendor's held-out images.

# %%
torch.manual_seed(0)  # the classifier's initial weights
clf = train_classifier(*ref_train, "reference_classifier", arch="test_resnet", epochs=8, lr=3e-3)
before = {"RefVendor": auc(ref_test[1], predict_proba(clf, ref_test[0]))}
before.update({v: auc(yte, predict_proba(clf, xte)) for v, (_, _, xte, yte) in vendors.items()})
display(pd.Series(before, name="AUC before harmonization").round(3).to_frame())
worst = min(vendors, key=before.get)
print("worst vendor:", worst, f"(curve {VENDORS[worst].curve})")

# %% [markdown]
# ## Fit GDCE for the worst vendor
#
# Unpaired, class-balanced batches of the vendor's training images and of reference images; training
# starts from the GDCE curve that best maps the vendor's pooled intensity quantiles onto the
# reference ones (`GDCEConfig(init="histogram")`, medbench's default) and the kept model has the best
# worst-class recall of the reference classifier on held-out vendor images (20% of them, not used for
# training; step 0 is the starting curve). This is medbench's CPU recipe; `paper_config()` with
# `vgg16_conv2_2(weights)` is the paper's loss. One curve predictor per
# source vendor; reference images pass unchanged (`PerVendorGDCE`). The
# feature loss uses a fixed random conv net (`random_conv_features`, no weights needed);
# `feature_network_from_source("efficientnet-lite0-imagenet")` is the pretrained alternative.
# A real run uses input 256, the paper's widths and a few thousand steps.

# %%
xs, ys, xt, yt = vendors[worst]
gcfg = GDCEConfig(steps=200, lr=3e-3, lambda_feat=10.0, input_size=32, widths=(8, 16, 32, 32, 32),
                  val_every=20, seed=0)
fit = fit_gdce(clf, random_conv_features(), xs, ys, *ref_train, cfg=gcfg, progress=False)
print(f"best step {fit.best_step}, worst-class recall {fit.best_worst_recall:.3f}")
display(pd.DataFrame(fit.history).round(3).tail(4))


# %% [markdown]
# ## AUC before and after: GDCE against the baselines
#
# `histmatch` and `zscore` (to the reference statistics) map onto the reference look and use the
# reference classifier as it is; `histeq` changes every image, the reference ones too, so it gets a
# classifier retrained on equalised reference images.

# %%
def retrain(x, y, name):
    torch.manual_seed(0)
    return train_classifier(x, y, f"classifier_{name}", arch="test_resnet", epochs=8, lr=3e-3)


methods = {"gdce": PerVendorGDCE({worst: fit.predictor}), "histmatch": create_harmonizer("histmatch"),
           "zscore": create_harmonizer("zscore", to_reference=True), "histeq": create_harmonizer("histeq")}
results = evaluate_methods(clf, ref_train, ref_test, {worst: (xt, yt)}, methods, retrain=retrain)
table = results.pivot_table(index="method", columns="vendor", values="auc")
display(table.round(3))
print("vendor-classifier accuracy (lower = harder to tell the vendors apart):",
      results.drop_duplicates("method").set_index("method")["vendor_accuracy"].round(3).to_dict())

# %% [markdown]
# ## What did GDCE learn?
#
# The mean fitted curve on the vendor's test images against the exact inverse of the vendor curve,
# and the best curve of the GDCE family fitted directly to that inverse (what the family can
# represent at all). GDCE curves fix 0 and 1, so a look that moves the end points (the `sigmoid`
# vendor) cannot be undone; histogram matching can.

# %%
with torch.no_grad():
    a_mean = fit.predictor(torch.as_tensor(xt[:, None])).mean(0).numpy()
inverse = VENDOR_INVERSES[VENDORS[worst].curve]
a_best, rmse_best = fit_curve_to_map(VENDOR_CURVES[VENDORS[worst].curve](grid), grid, steps=300)
fig = curves_figure({f"GDCE mean curve ({worst})": (grid, curve_values(a_mean, len(grid))),
                     f"inverse vendor curve ({VENDORS[worst].curve})": (grid, inverse(grid)),
                     f"best GDCE-family fit (RMSE {rmse_best:.3f})": (grid, curve_values(a_best, len(grid)))})
display(fig)
plt.close(fig)
harmonised = gdce_transform(fit.predictor)(xt)
fig = histograms_figure({"reference": ref_test[0], worst: xt, f"{worst} after GDCE": harmonised})
display(fig)
plt.close(fig)

# %%
out = {"notebook": "03_harmonization", "worst_vendor": worst,
       "auc_before": {k: float(v) for k, v in before.items()},
       "auc": {m: float(table.loc[m, worst]) for m in table.index},
       "auc_reference": {m: float(table.loc[m, "reference"]) for m in table.index},
       "gdce_best_step": int(fit.best_step),
       "curve_rmse_to_inverse": float(np.sqrt(np.mean((curve_values(a_mean, len(grid)) - inverse(grid)) ** 2))),
       "seconds": round(time.perf_counter() - T0, 1)}
results = out
print(json.dumps(results, indent=1))
