# %% [markdown]
# # 5. Real DICOM: ingest -> train -> report (and why this AUC means nothing)
#
# The other notebooks use synthetic images. This one runs medbench on **real DICOM files**: the
# test files bundled with pydicom and those of the `pydicom-data` package (CT, MR, CR, US, NM,
# RT objects, DICOMDIRs, and files that are broken on purpose: truncated, no pixel data, bad
# headers). It shows the three steps a study starts with:
#
# 1. `ingest`: usable images go to the **manifest**, everything else to the **quarantine** with
#    a reason;
# 2. a small training run on the usable CT and MR images, with the label read from their headers
#    (CT = 0, MR = 1);
# 3. the **report**, and what it says about the result.
#
# **Read this first:** there are only a few dozen usable CT/MR images here, many of them copies
# of the same image in different transfer syntaxes, from about a dozen patients. No model can
# learn anything meaningful from that, and CT vs MR is a toy label (it is written in the header;
# the two differ in image size and contrast in ways that answer no clinical question). The point
# of the notebook is the pipeline, and that medbench's metrics and report **say plainly** that
# the result cannot be trusted.

# %%
# %matplotlib inline
import json
import logging
import time
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

warnings.filterwarnings("ignore", category=UserWarning)
logging.basicConfig(level=logging.WARNING)
for handler in logging.getLogger().handlers:  # run folders log INFO to their files only
    handler.setLevel(logging.WARNING)
T0 = time.perf_counter()

# %%
import html
import re
import shutil
from pathlib import Path

import data_store  # the pydicom-data package (`pip install pydicom-data`, in medbench's dev extra)
import pydicom.data

from medbench import api
from medbench.eval.doubts import auc_doubts
from medbench.io.images import read_image
from medbench.io.manifest import scan
from medbench.train.config import TrainConfig
from medbench.train.experiment import run_experiment

logging.getLogger("pydicom").setLevel(logging.ERROR)  # the broken test files are broken on purpose

# ingest reads one folder: copy both collections side by side (the originals stay untouched)
FOLDERS = {"pydicom": Path(pydicom.data.__file__).parent / "test_files",
           "pydicom-data": Path(data_store.__file__).parent / "data"}
for name, folder in FOLDERS.items():
    if not Path("dicom_in", name).exists():
        shutil.copytree(folder, Path("dicom_in", name))
n_files = sum(p.is_file() for p in Path("dicom_in").rglob("*"))
print(n_files, "files under dicom_in/")

# %% [markdown]
# ## 1. Ingest
#
# `scan` is what `medbench ingest dicom_in --out ingest_run --modality CT --modality MR` runs: a
# header-only read of every file (add `decode=True` / `--decode` to also decode every image;
# here that takes about half a minute, because each file is decoded in an isolated process). The
# modality filter keeps CT and MR; other usable images (CR, US, NM, ...) are listed in the
# quarantine as *skipped* ("filtered") rather than silently accepted.

# %%
scanned = scan("dicom_in", workers=2, progress=False, modality=["CT", "MR"])
scanned.save("ingest_run")
manifest = api.load_manifest("ingest_run")
quarantine = api.load_manifest("ingest_run", quarantine=True)
manifest["file"] = manifest["path"].map(lambda p: str(Path(p).relative_to(Path("dicom_in").resolve())))
print(f"manifest: {len(manifest)} images; quarantine: {len(quarantine)} files")
display(manifest.modality.value_counts().rename("images").to_frame())
cols = ["file", "modality", "manufacturer", "rows", "columns", "frames", "transfer_syntax_name"]
display(manifest[cols].head(12))

# %% [markdown]
# The quarantine, one row per reason (with one example message each). *skipped* rows are usable
# images of another modality; *quarantined* ones cannot be used at all.

# %%
reasons = (quarantine.groupby(["status", "reason"])
           .agg(files=("path", "size"), example=("message", "first"))
           .reset_index().sort_values("files", ascending=False))
with pd.option_context("display.max_colwidth", 90):
    display(reasons)

# %% [markdown]
# How many distinct patients and images are there really? The same image appears in up to
# eight transfer syntaxes (uncompressed, RLE, JPEG-LS, JPEG 2000, big endian, ...).

# %%
no_id = manifest.patient_hash.fillna("").eq("")
distinct = {"images": len(manifest), "patients": manifest.patient_hash[~no_id].nunique(),
            "images without a patient ID": int(no_id.sum()),
            "distinct SOP instances": manifest.sop_uid.nunique(),
            "distinct series": manifest.series_uid.nunique()}
print(distinct)
fig, ax = plt.subplots(1, 6, figsize=(11, 2.2))
examples = pd.concat([manifest[manifest.modality == m].drop_duplicates("series_uid").head(3) for m in ("CT", "MR")])
for a, row in zip(ax, examples.itertuples()):
    a.imshow(read_image(row.path), cmap="gray")
    a.set_title(f"{row.modality} {row.rows}x{row.columns}", fontsize=8)
    a.axis("off")
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# ## 2. Train
#
# The label comes from the header (`Modality`): MR = 1, CT = 0. `run_experiment` is what
# `medbench train` runs: a patient-grouped train/validation/test split (copies of one patient's
# image stay on one side), a small randomly initialised network on 32-px images for three
# epochs, then predictions on the test patients, metrics.json and report.html.
#
# The split groups images by the keyed patient hash, so it depends on this installation's secret
# (`MEDBENCH_SECRET` or `~/.config/medbench/secret`): another machine draws other test patients
# and, with so few of them, may get a very different AUC. That alone says how little it means.

# %%
table = manifest.assign(label=(manifest.modality == "MR").astype(int))
cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-3, device="cpu", progress=False, seed=0)
run = run_experiment(table, "train_run", source="random", arch="test_resnet", size=32, cfg=cfg,
                     title="CT vs MR on pydicom's test files")
splits = pd.read_csv("train_run/splits.csv")
display(splits.groupby("split").agg(images=("uid", "size"), patients=("patient_hash", "nunique")))

# %% [markdown]
# ## 3. The report: what does the result mean?
#
# The test AUC comes with a bootstrap CI that resamples **patients**; with only a handful of test
# patients that CI describes those few patients, not the population (if they happen to be
# separated perfectly, every resample gives 1.000 and the CI collapses to 1.000-1.000: that is not
# certainty, it is the bootstrap redrawing the same few patients). medbench checks every AUC
# for the usual reasons to doubt it (at or below chance, CI wider than 0.2, fewer than 15 test
# images per class) and puts them in a warning box at the top of report.html.

# %%
per = pd.DataFrame(run.metrics["per_source"])
display(per[["source", "auc", "lo", "hi", "n", "n_pos"]].round(3))
r = per.iloc[0]
n_test_patients = splits.loc[splits.split == "test", "patient_hash"].nunique()
print(f"test set: {int(r.n)} images ({int(r.n_pos)} MR, {int(r.n - r.n_pos)} CT) from {n_test_patients} patients")
doubts = auc_doubts("The model", r.auc, r.lo, r.hi, n_pos=int(r.n_pos), n_neg=int(r.n - r.n_pos))
page = run.report.read_text()
box = re.search(r"<div class='warnbox'.*?</div>", page, re.S)
report_warnings = [html.unescape(w) for w in re.findall(r"<li>(.*?)</li>", box.group(0))] if box else []
print("report.html warning box:")
for line in report_warnings:
    print(" -", line)

# %% [markdown]
# **Conclusion.** Whatever the AUC above is, it is not evidence of anything: a few test patients,
# test classes far below 15 images each, duplicated images, and a toy label. medbench says so in
# the report's warning box. What the notebook does
# show is the plumbing on real files: which files are usable, why the others are not, and a run
# folder (`train_run/`) with the usual outputs. For a real study, ingest a real dataset (hundreds
# of patients per class) the same way.

# %%
out = {"notebook": "05_real_dicom", "n_files": n_files,
       "manifest": {f: m for f, m in zip(manifest["file"], manifest["modality"])},
       "quarantine": {str(Path(p).relative_to(Path("dicom_in").resolve())): reason
                      for p, reason in zip(quarantine["path"], quarantine["reason"])},
       "distinct": distinct,
       "split_patients": splits.groupby("split")["patient_hash"].nunique().to_dict(),
       "test": {k: float(r[k]) for k in ("auc", "lo", "hi", "n", "n_pos")},
       "doubts": doubts, "report_warnings": report_warnings,
       "report": bool(run.report and run.report.exists()),
       "seconds": round(time.perf_counter() - T0, 1)}
results = out
print(json.dumps({k: v for k, v in results.items() if k not in ("manifest", "quarantine")}, indent=1))
