# %% [markdown]
# # 4. Low-dose CT: simulate, denoise, measure
#
# Low-dose noise is Poisson in the **projection domain** (Lu et al. 2023). The simulation goes
# HU -> attenuation -> parallel-beam forward projection -> counts ~ Poisson(N0 exp(-p)) -> log ->
# filtered back-projection (FBP). We then compare classical denoisers (tuned on a validation phantom
# for a fair baseline) with the bundled small RED-CNN and two-stage (projection + image domain)
# models, on a held-out phantom: PSNR/SSIM/RMSE in a soft-tissue window, noise SD in flat regions,
# and MTF50 at an edge, so that blurring is not mistaken for denoising.

# %%
# %matplotlib inline
import json
import logging
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

warnings.filterwarnings("ignore", category=UserWarning)
logging.basicConfig(level=logging.WARNING)
for handler in logging.getLogger().handlers:  # run folders log INFO to their files only
    handler.setLevel(logging.WARNING)
T0 = time.perf_counter()

# %%
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

# %% [markdown]
# ## The simulated acquisition
#
# Full-dose (noise-free) FBP, the low-dose sinogram and the low-dose FBP of one slice.

# %%
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

# %% [markdown]
# ## Train a small two-stage model
#
# The two-stage denoiser: a projection-domain network on consecutive views (with the noise-prior
# channel), whose residual is reconstructed separately, then an image-domain network on adjacent
# slices. Here a deliberately tiny one trains for a few seconds on three training phantoms
# (resumable: re-running the cell reuses `ct_quick/`). `medbench denoise train` does the same from
# the command line; the bundled checkpoints are the same design trained longer.

# %%
from harmonization.ct.learned import load_checkpoint
from harmonization.ct.training import DenoiserTrainConfig, make_training_data, train_two_stage

train_data = make_training_data(3, 4, size=64, n0=N0)  # phantoms "train-0..2": disjoint from val/test
tcfg = DenoiserTrainConfig(epochs=4, iters_per_epoch=30, batch_size=8, patch=32, proj_width=8, proj_depth=3,
                   img_width=12, img_depth=4, lr=2e-3)
quick_path = train_two_stage(train_data, tcfg, "ct_quick", progress=False)
print("L1 per epoch:", np.round(load_checkpoint(quick_path)["meta"]["history"], 4))

# %% [markdown]
# ## Denoisers
#
# Classical ones are tuned (PSNR on the validation phantom)
# the learned ones are the model just
# trained and the bundled checkpoints (trained on other phantoms at the same dose). The learned
# models receive the low-dose sinograms too.

# %%
tuned = tune_classical(["gaussian", "bilateral", "nlm"], val)
denoisers = {"fbp": create_denoiser("fbp"), **tuned,
             "two_stage_quick": create_denoiser("two_stage", checkpoint=quick_path),
             "redcnn": create_denoiser("redcnn"), "two_stage": create_denoiser("two_stage")}
for name, d in tuned.items():
    print(name, d.params())
table = compare(denoisers, test)
summary = summarise(table)
display(summary[["denoiser", "psnr", "ssim", "rmse", "noise_sd", "mtf50", "mtf50_ratio", "seconds"]].round(3))

# %% [markdown]
# ## Side by side
#
# Top: the slice after each denoiser (soft-tissue window)
# bottom: difference to the full-dose image.
# Structure in the difference images is lost detail, not noise.

# %%
outputs = {name: d(sim.ld_hu, sinograms=sim.sino_ld, n0=sim.n0, pixel_mm=sim.geometry.pixel_mm)
           for name, d in denoisers.items()}
fig = comparison_figure({k: v[z] for k, v in outputs.items()}, sim.fd_hu[z])
display(fig)
plt.close(fig)

# %% [markdown]
# ## Resolution check: edge MTF
#
# MTF of the edge ROI (averaged over slices). A denoiser that lowers the noise by blurring shifts
# this curve to the left (lower MTF50).

# %%
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

# %%
s = summary.set_index("denoiser")
out = {"notebook": "04_lowdose_ct", "n0": N0,
       "metrics": {d: {k: float(s.loc[d, k]) for k in ("psnr", "ssim", "rmse", "mtf50", "mtf50_ratio", "noise_sd")
                       if k in s.columns} for d in s.index},
       "seconds": round(time.perf_counter() - T0, 1)}
results = out
print(json.dumps(results, indent=1))
