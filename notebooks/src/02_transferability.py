# %% [markdown]
# # 2. Transferability: which source should I fine-tune?
#
# Transferability metrics score a pretrained source on a target dataset *without* fine-tuning it,
# from the source's features (Juodelyte et al. 2024, "On dataset transferability"). Here the target
# is the embedded synthetic chest-radiograph task (lesion present or not, 64 px), and the candidates
# are three sources:
#
# - `random-resnet18`: ResNet-18, random init;
# - `random-lite0`: EfficientNet-Lite0, random init;
# - `imagenet-lite0`: EfficientNet-Lite0 with its genuine ImageNet weights.
#
# We compute feature metrics (LogME, H-score, SFDA, PARC, LP, ...), the gradient metric FU and the
# paper's score min-max(LP) x min-max(FU)
# then fine-tune every source briefly and check how well each
# metric ranks the sources (weighted Kendall tau). With three sources and a tiny fine-tuning budget
# the ranking is a demonstration, not evidence.

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

# %% [markdown]
# ## Features, metrics and FU
#
# `extract_features` gives the pooled features (the classifier's input) and, for a source with a
# pretrained head, its logits (LEEP and NCE need them, so only `imagenet-lite0` gets those two).
# FU feeds triplets through the embedding and compares the gradient norm of an early layer with the
# first layer's, without any optimiser step. Note: timm zero-initialises the last BatchNorm of each
# residual branch, so a *random* ResNet's FU is exactly 0 (no gradient reaches `layer1.0.conv1`).

# %%
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

# %% [markdown]
# Metrics are on different scales, so compare sources within a row. With 200 images and 512-1280
# feature dimensions some metrics saturate (H-score near 1, SFDA at 1): any such feature space
# separates two small classes linearly. More target images make them informative.

# %% [markdown]
# ## Ground truth: fine-tune every source
#
# A short fine-tuning run per source on a patient-disjoint train/validation/test split (the images
# are one per patient here) gives the test AUC each metric should predict.

# %%
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

# %% [markdown]
# ## How well does each metric rank the sources?
#
# Weighted Kendall tau between each metric's scores and the fine-tuned AUCs (1 = same order, -1 =
# reversed), only over metrics every source has. `lp_x_fu` is the paper's combined score.

# %%
scores["auc"] = scores["source"].map(aucs)
common = scores.groupby("metric")["source"].nunique().loc[lambda s: s == len(SOURCES)].index
ranked = add_minmax_product(scores[scores.metric.isin(common)], "lp", "fu")
corr = rank_correlations(ranked)
display(corr.sort_values("weighted_tau", ascending=False).round(3))

# %% [markdown]
# ## Frequency view
#
# Radially averaged power spectrum of the input gradients of each fine-tuned model (Lu et al. 2024):
# where a model is most sensitive. An artifact whose spectrum sits where a source's gradients
# concentrate is easier for that source to pick up as a shortcut.

# %%
xs, ys = x_all[parts["test"][:32]], labels[parts["test"][:32]]
spectra = {label: input_gradient_spectrum(m, xs, ys) for label, m in finetuned.items()}
fig = plot_spectra(spectra, title="input-gradient spectra of the fine-tuned sources")
display(fig)
plt.close(fig)
centroids = {k: s.centroid() for k, s in spectra.items()}
print({k: round(v, 4) for k, v in centroids.items()})

# %%
wide = scores.pivot(index="source", columns="metric", values="score")
out = {"notebook": "02_transferability", "sources": list(SOURCES),
       "scores": {s: {m: float(v) for m, v in wide.loc[s].dropna().items()} for s in wide.index},
       "finetuned_auc": {k: float(v) for k, v in aucs.items()},
       "weighted_tau": {r.metric: float(r.weighted_tau) for r in corr.itertuples()},
       "spectrum_centroid": centroids, "seconds": round(time.perf_counter() - T0, 1)}
results = out
print(json.dumps(results, indent=1))
