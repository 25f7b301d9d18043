"""The audit's HTML report: AUC-vs-p curves (one panel per confounder), example images, tables and a
plain-language summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from confounders.audit_stats import PREVALENCE, with_prevalence

if TYPE_CHECKING:  # pragma: no cover
    from confounders.audit import AuditConfig, AuditResult
    from confounders.audit_data import AuditData

logger = logging.getLogger(__name__)

CURVES = (("auc_iid", "i.i.d.", "-", "o"), ("auc_ood", "o.o.d.", "--", "s"), ("auc_clean", "clean", ":", "^"))
#: o.o.d. AUC drop (lowest-p to highest-p) above which the summary says the source learned the artifact.
LEARNED_DROP = 0.1
#: i.i.d. AUC below which a level o.o.d. curve is reported as "learned little", not as robustness.
WEAK_IID = 0.7
#: Title of the report's box for sources at chance on clean data.
CHANCE_TITLE = "At chance: these shortcut numbers mean nothing"
#: What the tables' ``prevalence`` column is (it was ``p``, easily read as a p-value).
PREVALENCE_NOTE = ("prevalence: the confounder strength p, the share of positives carrying the artifact "
                   "(or drawn from the sampled group); not a p-value.")


def auc_vs_p_figure(summary: pd.DataFrame) -> Any:
    """The paper's figure: i.i.d., o.o.d. and clean AUC vs p, one panel per confounder, one colour
    per source (error bars: sd over splits)."""
    import matplotlib.pyplot as plt

    summary = with_prevalence(summary)
    confs = list(dict.fromkeys(summary["confounder"]))
    sources = list(dict.fromkeys(summary["source"]))
    fig, axes = plt.subplots(1, len(confs), figsize=(4.2 * len(confs), 3.6), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, conf in zip(axes[0], confs):
        for j, src in enumerate(sources):
            g = summary[(summary.confounder == conf) & (summary.source == src)].sort_values(PREVALENCE)
            for col, name, ls, mk in CURVES:
                sd = g.get(f"{col}_sd")
                ax.errorbar(g[PREVALENCE], g[col], yerr=None if sd is None else sd.fillna(0), ls=ls, marker=mk,
                            color=colours[j % len(colours)], capsize=2, ms=4, label=f"{src} {name}")
        ax.axhline(0.5, color="grey", lw=0.7)
        ax.set_title(conf)
        ax.set_xlabel("prevalence p (share of positives with the confounder)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("AUC")
    axes[0][-1].legend(fontsize=7, loc="lower left", ncol=1)
    fig.tight_layout()
    return fig


def examples_figure(data: AuditData, cfg: AuditConfig, n: int = 2) -> Any:
    """Example images without and with each confounder (same images, first positives of the data)."""
    import matplotlib.pyplot as plt

    from confounders.specs import build_confounder, is_sampled, spec_label

    pos = np.flatnonzero(data.meta["label"].to_numpy() == 1)[:n]
    if len(pos) == 0:
        pos = np.arange(min(n, len(data.meta)))
    imgs = data.images[pos]
    uids = data.meta["uid"].astype(str).iloc[pos].tolist()
    from confounders.injection import inject

    every = np.ones(len(pos), dtype=bool)
    scale = getattr(cfg, "artifact_scale", "native")
    cols = [("clean", imgs)] + [(spec_label(c), inject(build_confounder(c, seed=cfg.seed), imgs, uids, every, scale=scale))
                                for c in cfg.confounders if not is_sampled(c)]
    fig, axes = plt.subplots(len(pos), len(cols), figsize=(2.2 * len(cols), 2.2 * len(pos)), squeeze=False)
    for j, (title, batch) in enumerate(cols):
        for i in range(len(pos)):
            ax = axes[i][j]
            ax.imshow(batch[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plain_summary(summary: pd.DataFrame, at_chance: set[tuple[str, str]] | None = None) -> list[str]:
    """One sentence per source and confounder on how its o.o.d. AUC moves with the prevalence p;
    ``(source, confounder)`` pairs in ``at_chance`` get "not interpretable" instead of a verdict."""
    lines = []
    summary = with_prevalence(summary)
    for (src, conf), g in summary.groupby(["source", "confounder"], sort=False):
        g = g.sort_values(PREVALENCE).rename(columns={PREVALENCE: "p"})
        if (src, conf) in (at_chance or set()):
            lo, hi = g.iloc[0], g.iloc[-1]
            lines.append(f"{src} / {conf}: at chance on clean data, so it did not learn the task, and its "
                         f"o.o.d. AUC ({lo.auc_ood:.2f} at p = {lo.p:g}, {hi.auc_ood:.2f} at p = {hi.p:g}) says "
                         "nothing about shortcuts (see the warning above).")
            continue
        if len(g) < 2:
            r = g.iloc[0]
            lines.append(f"{src} / {conf}: at p = {r.p:g}, i.i.d. AUC {r.auc_iid:.2f}, o.o.d. AUC "
                         f"{r.auc_ood:.2f}, clean AUC {r.auc_clean:.2f}.")
            continue
        lo, hi = g.iloc[0], g.iloc[-1]
        drop = lo.auc_ood - hi.auc_ood
        if drop > LEARNED_DROP:
            verdict = f"it learned the {conf} as a shortcut"
            if hi.auc_ood < 0.5:
                verdict += " (below chance: the artifact now points to the wrong class)"
        elif drop < -LEARNED_DROP:
            verdict = "it rises, so the artifact did not act as a shortcut here"
        elif hi.auc_iid < WEAK_IID:
            verdict = (f"it stays about level, but its i.i.d. AUC at p = {hi.p:g} is only {hi.auc_iid:.2f}: "
                       "it learned little of anything with this training budget, so this says nothing about robustness")
        else:
            verdict = "it stays about level, so it did not rely on the artifact"
        lines.append(
            f"{src}'s o.o.d. AUC goes from {lo.auc_ood:.2f} to {hi.auc_ood:.2f} as p rises from {lo.p:g} "
            f"to {hi.p:g} ({conf}): {verdict}. Its i.i.d. AUC goes from {lo.auc_iid:.2f} to "
            f"{hi.auc_iid:.2f}; clean AUC from {lo.auc_clean:.2f} to {hi.auc_clean:.2f}."
        )
    return lines


def comparison_sentences(comparisons: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """One sentence per source comparison (headline: the unpaired permutation t-test)."""
    from medbench.eval.metrics import format_p

    out = []
    if comparisons.empty or "p_perm" not in comparisons:
        return out
    comparisons = with_prevalence(comparisons).rename(columns={PREVALENCE: "prevalence_p"})
    for _, r in comparisons.dropna(subset=["p_perm"]).iterrows():
        better = ("equal means" if r.mean_diff == 0 else
                  f"{r.source_a if r.mean_diff > 0 else r.source_b} higher")
        sig = "significant" if r.p_perm < alpha else "not significant"
        p_txt = format_p(r.p_perm, r.get("p_perm_min"), exact=bool(r.get("p_perm_exact", False)))
        line = (f"{r.confounder}, prevalence {r.prevalence_p:g}: o.o.d. AUC {r.source_a} {r.mean_a:.2f} vs {r.source_b} "
                f"{r.mean_b:.2f} ({better}; unpaired permutation t-test over {int(r.n_a)} vs "
                f"{int(r.n_b)} splits p = {p_txt}, {sig} at alpha = {alpha:g}")
        if "p_paired" in r and pd.notna(r.p_paired):
            line += f"; paired sign-flip test p = {format_p(r.p_paired)}"
        out.append(line + ").")
    return out


def floor_warnings(comparisons: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """Warnings for comparisons whose smallest reachable p is not below ``alpha``."""
    if comparisons.empty or "floor_above_alpha" not in comparisons:
        return []
    bad = with_prevalence(comparisons)
    bad = bad[bad["floor_above_alpha"].fillna(False).astype(bool)]
    return [f"{r.confounder}, prevalence {r.prevalence:g}, {r.source_a} vs {r.source_b}: with {int(r.n_a)} vs {int(r.n_b)} "
            f"splits the smallest p the test can give is {r.p_perm_min:.4f}, not below alpha = {alpha:g}; "
            "'not significant' here means nothing. Run more splits." for r in bad.itertuples()]


def write_report(result: AuditResult, cfg: AuditConfig, data: AuditData, path: str | Path) -> Path:
    """Write the audit's ``report.html``."""
    from medbench.eval.report import HtmlReport

    rep = HtmlReport("Robustness audit", subtitle=f"data: {data.name}, {len(data.meta)} images, "
                     f"{data.images.shape[-1]} px; {result.results['split'].nunique()} split(s)")
    rep.heading("Summary")
    warnings = getattr(result, "warnings", None)
    at_chance: set[tuple[str, str]] = set()
    if warnings is not None and not warnings.empty:
        chance = warnings[warnings["kind"] == "chance"]
        at_chance = set(zip(chance["source"], chance["confounder"]))
        rep.warning([f"{m}." for m in chance["message"]], title=CHANCE_TITLE)
        rep.warning([f"{m}." for m in warnings.loc[warnings["kind"] != "chance", "message"]])
    rep.bullets(plain_summary(result.summary, at_chance) or ["no finished units"])
    rep.text("Protocol: the artifact is put on a fraction p of the positives of the training, validation "
             "and i.i.d. test sets; the o.o.d. test set has it on every negative and no positive; the "
             "clean test set has none. A model that learned the artifact scores high i.i.d. and low "
             "o.o.d. AUC.", css_class="note")
    if getattr(cfg, "preset", None) == "source-matters":
        from confounders.audit_presets import paper_comparison

        paper = paper_comparison(result.summary)
        rep.heading("Beside the paper (Source Matters, NIH ChestX-ray14, tag)")
        if paper.empty:
            rep.text("No unit matches the paper's figure values (paper-tag at p = 0.5 and 0.8 with sources "
                     "labelled ImageNet, RadImageNet, random).", css_class="note")
        else:
            rep.table(paper, caption="paper_auc_ood: o.o.d. AUC read off the paper's figure (Keras one-hot "
                      "AUC); auc_ood: yours (mean over splits), auc_ood_keras: yours the paper's way.")
    rep.heading("AUC vs prevalence p")
    rep.figure(auc_vs_p_figure(result.summary), caption="Mean over splits (error bars: sd). Solid i.i.d., "
               "dashed o.o.d., dotted clean; grey line: chance. " + PREVALENCE_NOTE)
    rep.heading("Examples")
    rep.figure(examples_figure(data, cfg), caption="The same images without and with each artifact.")
    if not result.comparisons.empty:
        rep.heading("Source comparison (o.o.d. AUC)")
        alpha = getattr(cfg, "alpha", 0.05)
        rep.warning(floor_warnings(result.comparisons, alpha))
        rep.bullets(comparison_sentences(result.comparisons, alpha) or ["fewer than 2 splits: no test"])
        rep.table(with_prevalence(result.comparisons), caption=PREVALENCE_NOTE + " p_perm (headline, as the authors): unpaired Student t-test "
                  "over splits, p from permutations of the source labels (exact enumeration when there are "
                  "at most n_perm relabellings, else (k+1)/(B+1)); p_perm_min: the smallest p the design "
                  "can reach. p_paired (medbench's extra): exact sign-flip test over matching splits; "
                  "p_ttest: paired t-test.")
    rep.heading("Summary table")
    rep.table(with_prevalence(result.summary), caption=PREVALENCE_NOTE + " Means and sd over splits.")
    rep.heading("All units")
    results = with_prevalence(result.results)
    cols = [c for c in results.columns if c not in ("settings_hash", "unit")]
    rep.table(results[cols], caption=PREVALENCE_NOTE)
    rep.config(cfg.to_dict())
    out = rep.save(path)
    logger.info("report written to %s", out)
    return out
