"""Tables, metrics and HTML report of the frequency-shortcut experiment."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from medbench.utils.files import atomic_path, write_json_atomic
from transferability.shortcut import ShortcutResult
from transferability.shortcut_stats import unlearned_sources
from transferability.spectral import Spectrum

log = logging.getLogger(__name__)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def shortcut_metrics(result: ShortcutResult) -> dict[str, Any]:
    """metrics.json content: the alignment rank correlation per amplitude, the onsets, the counts."""
    t = result.table
    return {"n_units": len(t), "sources": list(dict.fromkeys(t["source"])), "bands": list(dict.fromkeys(t["band"])),
            "amplitudes": sorted(set(t["amplitude"])), "seeds": sorted(set(t["seed"])),
            "alignment_vs_auc_drop": result.alignment.to_dict(orient="records"),
            "onset": result.onset.to_dict(orient="records"),
            "unlearned_sources": unlearned_sources(result.summary)}


def _ci_note(n_seeds: int) -> str:
    if n_seeds < 2:
        return "With one seed no confidence interval is defined (the CI columns are empty)."
    t = stats.t.ppf(0.975, n_seeds - 1)
    return (f"CIs are 95% Student-t intervals over {n_seeds} seeds (mean +- {t:.2f} sd / sqrt(n)); with so few "
            "seeds they are wide, and a difference whose intervals overlap is not established.")


def _sweep_figure(summary: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    bands = list(dict.fromkeys(summary["band"]))
    amps = sorted(float(a) for a in summary["amplitude"].unique())
    fig, axes = plt.subplots(1, len(bands), figsize=(3.2 * len(bands), 3.4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, band in zip(axes[0], bands, strict=True):
        for src, g in summary[summary["band"] == band].groupby("source", sort=False):
            g = g.sort_values("amplitude")
            err = np.vstack([g["auc_drop_mean"] - g["auc_drop_lo"], g["auc_drop_hi"] - g["auc_drop_mean"]])
            ax.errorbar(g["amplitude"], g["auc_drop_mean"], yerr=np.nan_to_num(err), marker="o", capsize=3,
                        label=str(src))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(amps, [f"{a:g}" for a in amps])  # the swept values only, no log-minor labels
        ax.minorticks_off()
        ax.set_xlabel("pattern amplitude")
        ax.set_title(f"{band} band")
    axes[0][0].set_ylabel("auc_drop (iid - ood AUC)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=max(1, len(labels)))  # off the data
    return fig


def _curve_figure(curves: pd.DataFrame, band: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    for (src, amp), h in curves[curves["band"] == band].groupby(["source", "amplitude"], sort=False):
        mean = h.groupby("step")["loss"].mean()
        ax.plot(mean.index, mean.rolling(5, min_periods=1).mean(), label=f"{src}, a={amp:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (running mean)")
    ax.set_title(f"{band} band")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, not on them
    return fig


def shortcut_report(result: ShortcutResult, out_dir: str | Path, *, title: str = "Frequency shortcuts") -> Path:
    """Write table.csv (per unit), curves.csv, summary.csv (mean and CI per source, band,
    amplitude), onset.csv, alignment.csv, metrics.json and report.html into ``out_dir``."""
    from medbench.eval.report import HtmlReport
    from transferability.spectral import plot_spectra

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("table.csv", result.table), ("curves.csv", result.curves), ("summary.csv", result.summary),
                     ("onset.csv", result.onset), ("alignment.csv", result.alignment)):
        _write_csv(out / name, df)
    write_json_atomic(out / "metrics.json", shortcut_metrics(result))
    n_seeds = int(result.table["seed"].nunique())
    rep = HtmlReport(title, subtitle="band-limited pattern on the positives; o.o.d. test moves it to the negatives; "
                                     "the validation split selects the kept epoch")
    rep.text(_ci_note(n_seeds))
    rep.warning([f"{src}: its i.i.d. AUC is not distinguishable from chance (95% CI reaches 0.5) at any band and "
                 "amplitude; it did not learn the task in these epochs, so its auc_drop says nothing about its "
                 "frequency priorities (train longer or at another rate)" for src in unlearned_sources(result.summary)])
    rep.heading("Does the gradient-PSD alignment predict which bands are learned?")
    rep.table(result.alignment, caption="Spearman's rho across (source, band) pairs between the seed-mean alignment "
                                        "of the input-gradient spectrum with the pattern (before training) and the "
                                        "seed-mean auc_drop, per amplitude; 95% percentile bootstrap CI resampling "
                                        "the seeds (few seeds: few distinct resamples, the CI is coarse)")
    rep.heading("Where each source starts using each band")
    rep.table(result.onset, caption="onset_amplitude: smallest amplitude whose auc_drop 95% CI lies above 0 "
                                    "(empty: none of the swept amplitudes, or one seed)")
    rep.figure(_sweep_figure(result.summary), caption="auc_drop against amplitude, mean and 95% t-interval over seeds")
    cols = ["source", "band", "amplitude", "n_seeds"] + [f"{m}_{s}" for m in ("auc_drop", "iid_auc", "ood_auc",
                                                                                "val_auc", "align_before")
                                                          for s in ("mean", "lo", "hi")]
    rep.heading("Mean and 95% CI over seeds")
    rep.table(result.summary[[c for c in cols if c in result.summary]],
              caption="auc_drop = iid_auc - ood_auc (how strongly the pattern is used); the t-interval is not "
                      "bounded by the range of an AUC, so a bound beyond it only says the CI is wide; all columns in "
                      "summary.csv")
    rep.heading("Speed: training curves")
    for band in dict.fromkeys(result.curves["band"]):
        rep.figure(_curve_figure(result.curves, band), caption=f"training loss (mean over seeds), {band}-band shortcut")
    amp_max = max(result.table["amplitude"])
    seed0 = min(result.table["seed"])
    for src in dict.fromkeys(result.table["source"]):
        spectra: dict[str, Spectrum] = {}
        for (s_, band, amp, seed, stage), spec in result.spectra.items():
            if s_ != src or amp != amp_max or seed != seed0:
                continue
            if stage == "before" and "gradients, pre-trained" not in spectra:
                spectra["gradients, pre-trained"] = spec
            elif stage == "after":
                spectra[f"gradients after {band}-band fine-tuning"] = spec
        spectra.update({f"{b}-band pattern": s for (b, sd), s in result.pattern_spectra.items() if sd == seed0})
        rep.figure(plot_spectra(spectra, title=f"{src}: input-gradient spectra"),
                   caption=f"amplitude {amp_max:g}, seed {seed0}: radially averaged power, each curve scaled to unit "
                           "sum (DC omitted)")
    rep.heading("Every unit")
    rep.table(result.table, caption="one row per (source, band, amplitude, seed); steps_to_loss: first step with "
                                    "running training loss below the threshold; best_epoch: kept by validation loss")
    return rep.save(out / "report.html")
