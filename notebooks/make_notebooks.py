"""Write the example notebooks from the cell sources below (outputs empty, execution counts null).

Edit the cells here, then run ``python notebooks/make_notebooks.py``; commit the script and the
``.ipynb`` files together. Each notebook's last cell gathers its key numbers in a ``results`` dict;
``tests/test_notebooks.py`` executes every notebook, reads ``results`` back from the kernel (no
marker line in the notebooks themselves) and checks that no INFO log line reached an output.
jupytext pairing: not set up (jupytext is not installed in this environment).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

def setup(*extra: str) -> str:
    """The first code cell: imports (only the ``extra`` third-party ones a notebook uses), quiet logs."""
    third_party = {"numpy": "import numpy as np", "pandas": "import pandas as pd", "torch": "import torch"}
    lines = ["import matplotlib.pyplot as plt", *(third_party[name] for name in extra),
             "from IPython.display import display"]
    return "\n".join(["%matplotlib inline", "import json", "import logging", "import time", "import warnings",
                      "", *lines, "",
                      'warnings.filterwarnings("ignore", category=UserWarning)',
                      "logging.basicConfig(level=logging.WARNING)",
                      "for handler in logging.getLogger().handlers:  # run folders log INFO to their files only",
                      "    handler.setLevel(logging.WARNING)",
                      "T0 = time.perf_counter()"])


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


# --------------------------------------------------------------------------------------------------
AUDIT = [
    md("""
# 1. Robustness audit: does a source learn a shortcut?

A confounder (here a burned-in text tag, MICCAT: *environment / external*) is put on a fraction
**p** of the **positive** images of the training, validation and i.i.d. test sets (Source Matters,
Juodelyte et al. 2024). Two further test sets tell shortcut learning apart from real learning:

- **o.o.d.**: the tag on *every negative* and on no positive: a model relying on the tag is
  pushed below chance;
- **clean**: no tag at all: what the model learned about the lesion itself.

This notebook runs a small audit on the embedded synthetic chest radiographs (64 px, one patient-grouped
split, a few epochs) with two sources: a randomly initialised tiny ResNet and the genuine ImageNet
EfficientNet-Lite0. The numbers are noisy at this size; the full protocol uses 5 splits and
`ps = [0, .1, .2, .5, .8, 1]` (`medbench audit -c audit.yaml`).
"""),
    code(setup()),
    code("""
from confounders.audit import AuditConfig, load_data, run_audit
from confounders.audit_report import auc_vs_p_figure, examples_figure, plain_summary

TAG = {"name": "tag", "label": "tag-R", "text": "R", "size": 256.0, "position": [120.0, 120.0],
       "font": "sans-bold"}  # an enlarged bold "R": the paper's 64-px glyph is ~4 px at 64 px
SOURCES = [{"name": "random", "arch": "test_resnet", "label": "random-init"},
           {"name": "efficientnet-lite0-imagenet", "label": "imagenet-lite0"}]
cfg = AuditConfig(sources=SOURCES, confounders=[TAG], ps=[0.0, 0.5, 1.0], splits=1,
                  data={"kind": "synthetic", "n": 200, "size": 64, "seed": 0},
                  train={"epochs": 3, "batch_size": 16, "device": "cpu"}, n_boot=100)
data = load_data(cfg.data, splits=cfg.splits, seed=cfg.seed)
print(f"{len(data.meta)} images, {int(data.meta.label.sum())} positive; split 0:",
      {k: len(v) for k, v in data.splits[0].items()})
"""),
    md("""
## The artifact

The same positive images without and with the tag. At p = 1 every positive carries it, so the tag
alone predicts the label perfectly.
"""),
    code("""
fig = examples_figure(data, cfg, n=3)
display(fig)
plt.close(fig)
"""),
    md("""
## Run the audit

One unit = one source fine-tuned on one confounded training set (best validation loss kept), then
AUC on the i.i.d., o.o.d. and clean test sets (bootstrap CIs over patients). Units are resumable:
re-running the cell only re-reports.
"""),
    code("""
result = run_audit(cfg, "audit_run", data=data)
cols = ["source", "prevalence", "auc_iid", "auc_ood", "auc_clean", "gap"]
display(result.summary[cols].round(3))
"""),
    md("""
## AUC vs p (the paper's figure)

Solid: i.i.d., dashed: o.o.d., dotted: clean. A source that learns the tag keeps a high i.i.d. AUC
while its o.o.d. AUC falls with p (below 0.5: the tag now points to the wrong class)
the clean
AUC shows how much of the lesion it learned besides.
"""),
    code("""
fig = auc_vs_p_figure(result.summary)
display(fig)
plt.close(fig)
for line in plain_summary(result.summary):
    print("-", line)
print("HTML report:", result.report_path)
"""),
    md("""
With more splits (`splits=5`) the audit also compares the sources at each p with a paired
permutation t-test over splits (`result.comparisons`), as in the paper.
"""),
    code("""
summ = result.summary.sort_values("prevalence")
out = {"notebook": "01_robustness_audit", "ps": sorted(summ.prevalence.unique().tolist()), "sources": {}}
for src, g in summ.groupby("source"):
    out["sources"][src] = {k: [round(float(v), 4) for v in g[k]] for k in ("auc_iid", "auc_ood", "auc_clean")}
out["report"] = bool(result.report_path and result.report_path.exists())
out["seconds"] = round(time.perf_counter() - T0, 1)
results = out
print(json.dumps(results, indent=1))
"""),
]

# --------------------------------------------------------------------------------------------------
TRANSFER = [
    md("""
# 2. Transferability: which source should I fine-tune?

Transferability metrics score a pretrained source on a target dataset *without* fine-tuning it,
from the source's features (Juodelyte et al. 2024, "On dataset transferability"). Here the target
is the embedded synthetic chest-radiograph task (lesion present or not, 64 px), and the candidates
are three sources:

- `random-resnet18`: ResNet-18, random init;
- `random-lite0`: EfficientNet-Lite0, random init;
- `imagenet-lite0`: EfficientNet-Lite0 with its genuine ImageNet weights.

We compute feature metrics (LogME, H-score, SFDA, PARC, LP, ...), the gradient metric FU and the
paper's score min-max(LP) x min-max(FU)
then fine-tune every source briefly and check how well each
metric ranks the sources (weighted Kendall tau). With three sources and a tiny fine-tuning budget
the ranking is a demonstration, not evidence.
"""),
    code(setup("numpy", "pandas", "torch")),
    code("""
from medbench.data.dataset import ArrayDataset
from medbench.data.synthetic import make_cxr
from medbench.eval.metrics import auc
from medbench.sources import create_source
from medbench.train.config import TrainConfig
from medbench.train.engine import fit
from medbench.train.predict import predict
from transferability.features import compute_metrics
from transferability.gradient import fu_details
from transferability.pipeline import extract_features
from transferability.ranking import add_minmax_product, rank_correlations
from transferability.spectral import input_gradient_spectrum, plot_spectra

images, meta = make_cxr(200, size=64, seed=1)
labels = meta["label"].to_numpy()
target = ArrayDataset(images, labels, meta)
SOURCES = {"random-resnet18": {"name": "random", "arch": "resnet18"},
           "random-lite0": {"name": "random", "arch": "tf_efficientnet_lite0"},
           "imagenet-lite0": {"name": "efficientnet-lite0-imagenet"}}
print(len(target), "target images,", int(labels.sum()), "positive")
"""),
    md("""
## Features, metrics and FU

`extract_features` gives the pooled features (the classifier's input) and, for a source with a
pretrained head, its logits (LEEP and NCE need them, so only `imagenet-lite0` gets those two).
FU feeds triplets through the embedding and compares the gradient norm of an early layer with the
first layer's, without any optimiser step. Note: timm zero-initialises the last BatchNorm of each
residual branch, so a *random* ResNet's FU is exactly 0 (no gradient reaches `layer1.0.conv1`).
"""),
    code("""
x_all = torch.as_tensor(images[:, None])
rows, feats, pre_models = [], {}, {}
for label, spec in SOURCES.items():
    pretrained = spec["name"] != "random"
    torch.manual_seed(0)  # the random-init sources draw their weights from torch's global RNG
    model = create_source(**spec, num_classes=None if pretrained else 0, in_chans=1)
    pre_models[label] = model
    out = extract_features(model, target, batch_size=50, logits=pretrained)
    feats[label] = out
    scores = compute_metrics(out["features"], out["labels"], logits=out.get("logits"))
    fu = fu_details(model, x_all[:128], labels[:128])
    scores["fu"] = fu["fu"]
    for metric, value in scores.items():
        rows.append({"target": "synthetic-cxr", "source": label, "metric": metric, "score": value})
    print(f"{label}: features {out['features'].shape}, FU {fu['fu']:.3f} "
          f"({fu['early_layer']} / {fu['first_layer']})")
scores = pd.DataFrame(rows)
wide = scores.pivot(index="metric", columns="source", values="score")
display(wide.round(3))
scaled = wide.sub(wide.min(axis=1), axis=0).div((wide.max(axis=1) - wide.min(axis=1)).replace(0, 1), axis=0)
fig, ax = plt.subplots(figsize=(8, 3.2))
scaled.plot.bar(ax=ax)
ax.set_ylabel("min-max scaled score")
ax.set_title("which source each metric prefers (1 = best)")
fig.tight_layout()
display(fig)
plt.close(fig)
"""),
    md("""
Metrics are on different scales, so compare sources within a row. With 200 images and 512-1280
feature dimensions some metrics saturate (H-score near 1, SFDA at 1): any such feature space
separates two small classes linearly. More target images make them informative.
"""),
    md("""
## Ground truth: fine-tune every source

A short fine-tuning run per source on a patient-disjoint train/validation/test split (the images
are one per patient here) gives the test AUC each metric should predict.
"""),
    code("""
order = np.random.default_rng(0).permutation(len(target))
parts = {"train": order[:110], "val": order[110:140], "test": order[140:]}
subset = {k: ArrayDataset(images[i], labels[i], meta.iloc[i].reset_index(drop=True)) for k, i in parts.items()}
cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-3, optimizer="adam", device="cpu", patience=None,
                  progress=False, seed=0)
finetuned, aucs = {}, {}
for label, spec in SOURCES.items():
    torch.manual_seed(0)
    model = create_source(**spec, num_classes=2, in_chans=1)
    res = fit(model, subset["train"], subset["val"], cfg, f"finetune/{label}")
    pred = predict(res.model, subset["test"])
    finetuned[label], aucs[label] = res.model, auc(pred["label"], pred["prob"])
    print(f"{label}: fine-tuned test AUC {aucs[label]:.3f}")
"""),
    md("""
## How well does each metric rank the sources?

Weighted Kendall tau between each metric's scores and the fine-tuned AUCs (1 = same order, -1 =
reversed), only over metrics every source has. `lp_x_fu` is the paper's combined score.
"""),
    code("""
scores["auc"] = scores["source"].map(aucs)
common = scores.groupby("metric")["source"].nunique().loc[lambda s: s == len(SOURCES)].index
ranked = add_minmax_product(scores[scores.metric.isin(common)], "lp", "fu")
corr = rank_correlations(ranked)
display(corr.sort_values("weighted_tau", ascending=False).round(3))
"""),
    md("""
## Frequency view

Radially averaged power spectrum of the input gradients of each fine-tuned model (Lu et al. 2024):
where a model is most sensitive. An artifact whose spectrum sits where a source's gradients
concentrate is easier for that source to pick up as a shortcut.
"""),
    code("""
xs, ys = x_all[parts["test"][:32]], labels[parts["test"][:32]]
spectra = {label: input_gradient_spectrum(m, xs, ys) for label, m in finetuned.items()}
fig = plot_spectra(spectra, title="input-gradient spectra of the fine-tuned sources")
display(fig)
plt.close(fig)
centroids = {k: s.centroid() for k, s in spectra.items()}
print({k: round(v, 4) for k, v in centroids.items()})
"""),
    code("""
wide = scores.pivot(index="source", columns="metric", values="score")
out = {"notebook": "02_transferability", "sources": list(SOURCES),
       "scores": {s: {m: float(v) for m, v in wide.loc[s].dropna().items()} for s in wide.index},
       "finetuned_auc": {k: float(v) for k, v in aucs.items()},
       "weighted_tau": {r.metric: float(r.weighted_tau) for r in corr.itertuples()},
       "spectrum_centroid": centroids, "seconds": round(time.perf_counter() - T0, 1)}
results = out
print(json.dumps(results, indent=1))
"""),
]

# --------------------------------------------------------------------------------------------------
HARMONIZATION = [
    md("""
# 3. Cross-vendor X-ray harmonization with GDCE

Each X-ray vendor maps detector signal to grey values with its own monotone curve. A classifier
trained on one vendor (the **reference**) can lose much of its AUC on another. GDCE (Lu et al. 2025)
learns, per image, an 8-step intensity curve `x <- x + a_i x (1 - x)` (parameters `a_i` in
[-1, 1] from a small CNN) that maps a new vendor's images onto the reference look, trained through
the frozen reference classifier (cross-entropy) plus an early-feature statistics loss.

This notebook uses the synthetic vendor looks of `medbench.data.vendors` (48 px, small n, a tiny
classifier and a short GDCE run, so that it runs on a CPU in about a minute) and compares GDCE with
classical baselines by the reference classifier's AUC on the vendor's held-out images.
"""),
    code(setup("numpy", "pandas", "torch")),
    code("""
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
"""),
    md("""
## The vendor looks

One linear image (with its detector noise) through each vendor's curve, and the curves themselves.
"""),
    code("""
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
"""),
    md("""
## Reference classifier and the AUC drop per vendor

A small CNN trained on reference-vendor images only, then tested on every vendor's held-out images.
"""),
    code("""
torch.manual_seed(0)  # the classifier's initial weights
clf = train_classifier(*ref_train, "reference_classifier", arch="test_resnet", epochs=8, lr=3e-3)
before = {"RefVendor": auc(ref_test[1], predict_proba(clf, ref_test[0]))}
before.update({v: auc(yte, predict_proba(clf, xte)) for v, (_, _, xte, yte) in vendors.items()})
display(pd.Series(before, name="AUC before harmonization").round(3).to_frame())
worst = min(vendors, key=before.get)
print("worst vendor:", worst, f"(curve {VENDORS[worst].curve})")
"""),
    md("""
## Fit GDCE for the worst vendor

Unpaired, class-balanced batches of the vendor's training images and of reference images; training
starts from the GDCE curve that best maps the vendor's pooled intensity quantiles onto the
reference ones (`GDCEConfig(init="histogram")`, medbench's default) and the kept model has the best
worst-class recall of the reference classifier on held-out vendor images (20% of them, not used for
training; step 0 is the starting curve). This is medbench's CPU recipe; `paper_config()` with
`vgg16_conv2_2(weights)` is the paper's loss. One curve predictor per
source vendor; reference images pass unchanged (`PerVendorGDCE`). The
feature loss uses a fixed random conv net (`random_conv_features`, no weights needed);
`feature_network_from_source("efficientnet-lite0-imagenet")` is the pretrained alternative.
A real run uses input 256, the paper's widths and a few thousand steps.
"""),
    code("""
xs, ys, xt, yt = vendors[worst]
gcfg = GDCEConfig(steps=200, lr=3e-3, lambda_feat=10.0, input_size=32, widths=(8, 16, 32, 32, 32),
                  val_every=20, seed=0)
fit = fit_gdce(clf, random_conv_features(), xs, ys, *ref_train, cfg=gcfg, progress=False)
print(f"best step {fit.best_step}, worst-class recall {fit.best_worst_recall:.3f}")
display(pd.DataFrame(fit.history).round(3).tail(4))
"""),
    md("""
## AUC before and after: GDCE against the baselines

`histmatch` and `zscore` (to the reference statistics) map onto the reference look and use the
reference classifier as it is; `histeq` changes every image, the reference ones too, so it gets a
classifier retrained on equalised reference images.
"""),
    code("""
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
"""),
    md("""
## What did GDCE learn?

The mean fitted curve on the vendor's test images against the exact inverse of the vendor curve,
and the best curve of the GDCE family fitted directly to that inverse (what the family can
represent at all). GDCE curves fix 0 and 1, so a look that moves the end points (the `sigmoid`
vendor) cannot be undone; histogram matching can.
"""),
    code("""
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
"""),
    code("""
out = {"notebook": "03_harmonization", "worst_vendor": worst,
       "auc_before": {k: float(v) for k, v in before.items()},
       "auc": {m: float(table.loc[m, worst]) for m in table.index},
       "auc_reference": {m: float(table.loc[m, "reference"]) for m in table.index},
       "gdce_best_step": int(fit.best_step),
       "curve_rmse_to_inverse": float(np.sqrt(np.mean((curve_values(a_mean, len(grid)) - inverse(grid)) ** 2))),
       "seconds": round(time.perf_counter() - T0, 1)}
results = out
print(json.dumps(results, indent=1))
"""),
]

# --------------------------------------------------------------------------------------------------
CT = [
    md("""
# 4. Low-dose CT: simulate, denoise, measure

Low-dose noise is Poisson in the **projection domain** (Lu et al. 2023). The simulation goes
HU -> attenuation -> parallel-beam forward projection -> counts ~ Poisson(N0 exp(-p)) -> log ->
filtered back-projection (FBP). We then compare classical denoisers (tuned on a validation phantom
for a fair baseline) with the bundled small RED-CNN and two-stage (projection + image domain)
models, on a held-out phantom: PSNR/SSIM/RMSE in a soft-tissue window, noise SD in flat regions,
and MTF50 at an edge, so that blurring is not mistaken for denoising.
"""),
    code(setup("numpy")),
    code("""
from harmonization.ct.denoisers import create_denoiser
from harmonization.ct.evaluation import Case, compare, comparison_figure, summarise, tune_classical
from harmonization.ct.phantoms import make_phantom_volume
from harmonization.ct.quality import edge_mtf
from harmonization.ct.simulate import simulate_low_dose

N0 = 2.5e4  # photons per detector bin: the bundled models' training dose


def phantom_case(uid: str, n_slices: int = 4, size: int = 64) -> Case:
    # a phantom volume (with its flat and edge ROIs) and its low-dose simulation
    volume, info = make_phantom_volume(n_slices, size=size, seed=0, uid=uid)
    return Case(uid, simulate_low_dose(volume, n0=N0, seed=0, uid=uid), info)


val = [phantom_case("val-2")]    # for tuning the classical denoisers
case = phantom_case("test-1")    # held out (the bundled models were trained on "train-*" phantoms)
test = [case]
sim = case.sim
print("flat ROIs", case.info.flat_rois, "edge ROI", case.info.edge_roi)
print("slices", sim.fd_hu.shape, "sinograms (Z, detectors, views)", sim.sino_ld.shape, sim.geometry)
"""),
    md("""
## The simulated acquisition

Full-dose (noise-free) FBP, the low-dose sinogram and the low-dose FBP of one slice.
"""),
    code("""
z = sim.fd_hu.shape[0] // 2
fig, ax = plt.subplots(1, 3, figsize=(10, 3.4))
ax[0].imshow(sim.fd_hu[z], cmap="gray", vmin=-160, vmax=240)
ax[0].set_title("full-dose FBP")
ax[1].imshow(sim.sino_ld[z], cmap="gray", aspect="auto")
ax[1].set_title("low-dose sinogram")
ax[2].imshow(sim.ld_hu[z], cmap="gray", vmin=-160, vmax=240)
ax[2].set_title(f"low-dose FBP (N0={N0:g})")
for a in ax:
    a.set_xticks([])
    a.set_yticks([])
fig.tight_layout()
display(fig)
plt.close(fig)
"""),
    md("""
## Train a small two-stage model

The two-stage denoiser: a projection-domain network on consecutive views (with the noise-prior
channel), whose residual is reconstructed separately, then an image-domain network on adjacent
slices. Here a deliberately tiny one trains for a few seconds on three training phantoms
(resumable: re-running the cell reuses `ct_quick/`). `medbench denoise train` does the same from
the command line; the bundled checkpoints are the same design trained longer.
"""),
    code("""
from harmonization.ct.learned import load_checkpoint
from harmonization.ct.training import DenoiserTrainConfig, make_training_data, train_two_stage

train_data = make_training_data(3, 4, size=64, n0=N0)  # phantoms "train-0..2": disjoint from val/test
tcfg = DenoiserTrainConfig(epochs=4, iters_per_epoch=30, batch_size=8, patch=32, proj_width=8, proj_depth=3,
                   img_width=12, img_depth=4, lr=2e-3)
quick_path = train_two_stage(train_data, tcfg, "ct_quick", progress=False)
print("L1 per epoch:", np.round(load_checkpoint(quick_path)["meta"]["history"], 4))
"""),
    md("""
## Denoisers

Classical ones are tuned (PSNR on the validation phantom)
the learned ones are the model just
trained and the bundled checkpoints (trained on other phantoms at the same dose). The learned
models receive the low-dose sinograms too.
"""),
    code("""
tuned = tune_classical(["gaussian", "bilateral", "nlm"], val)
denoisers = {"fbp": create_denoiser("fbp"), **tuned,
             "two_stage_quick": create_denoiser("two_stage", checkpoint=quick_path),
             "redcnn": create_denoiser("redcnn"), "two_stage": create_denoiser("two_stage")}
for name, d in tuned.items():
    print(name, d.params())
table = compare(denoisers, test)
summary = summarise(table)
display(summary[["denoiser", "psnr", "ssim", "rmse", "noise_sd", "mtf50", "mtf50_ratio", "seconds"]].round(3))
"""),
    md("""
## Side by side

Top: the slice after each denoiser (soft-tissue window)
bottom: difference to the full-dose image.
Structure in the difference images is lost detail, not noise.
"""),
    code("""
outputs = {name: d(sim.ld_hu, sinograms=sim.sino_ld, n0=sim.n0, pixel_mm=sim.geometry.pixel_mm)
           for name, d in denoisers.items()}
fig = comparison_figure({k: v[z] for k, v in outputs.items()}, sim.fd_hu[z])
display(fig)
plt.close(fig)
"""),
    md("""
## Resolution check: edge MTF

MTF of the edge ROI (averaged over slices). A denoiser that lowers the noise by blurring shifts
this curve to the left (lower MTF50).
"""),
    code("""
r, c, h, w = case.info.edge_roi
fig, ax = plt.subplots(figsize=(5.2, 3.6))
for name, img in {"full dose": sim.fd_hu, **outputs}.items():
    m = edge_mtf(img[:, r:r + h, c:c + w], pixel_mm=sim.geometry.pixel_mm)
    ax.plot(m.freqs, m.mtf, label=f"{name} (MTF50 {m.mtf50:.3f})")
ax.axhline(0.5, color="grey", lw=0.6)
ax.set(xlabel="cycles / mm", ylabel="MTF", ylim=(0, 1.2))
ax.legend(fontsize=7)
fig.tight_layout()
display(fig)
plt.close(fig)
"""),
    code("""
s = summary.set_index("denoiser")
out = {"notebook": "04_lowdose_ct", "n0": N0,
       "metrics": {d: {k: float(s.loc[d, k]) for k in ("psnr", "ssim", "rmse", "mtf50", "mtf50_ratio", "noise_sd")
                       if k in s.columns} for d in s.index},
       "seconds": round(time.perf_counter() - T0, 1)}
results = out
print(json.dumps(results, indent=1))
"""),
]


def build(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids so that regenerating gives the same files
        cell["id"] = f"cell-{i:02d}"
    return nb


def notebooks() -> dict[str, list]:
    return {"01_robustness_audit.ipynb": AUDIT, "02_transferability.ipynb": TRANSFER,
            "03_harmonization.ipynb": HARMONIZATION, "04_lowdose_ct.ipynb": CT}


def main(names: list[str]) -> None:
    for name, cells in notebooks().items():
        if names and name not in names:
            continue
        nbformat.write(build(cells), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main(sys.argv[1:])
