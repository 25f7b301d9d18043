"""The ``medbench transfer`` workflow: features per source (cached), scores, optional ground truth.

One run folder (:func:`medbench.runs.open_run`) holds ``config.yaml``, ``transfer.log``,
``features/<source>.npz`` (features, source logits where the source has a head, labels and uids),
``scores.csv`` (long: target, source, metric, score, auc), ``table.csv`` (wide: one row per source),
``metrics.json`` and ``report.html``; with fine-tuning, ``finetune/<source>/`` is each
``medbench train``-style run. Each source's features and each fine-tuning run are units
(``units/features-<source>.json``, ``units/finetune-<source>.json``, with their settings hash): a
resumed run skips the finished ones.

Settings fall in three groups (see :func:`transfer_settings`):

* the data (images, labels, patient groups), label column, image size, batch size, weights, and
  fine-tuning epochs and seed change every unit: a re-run with any of them changed is refused,
  listing every change, unless ``--restart`` discards the folder's outputs;
* other sources or ``--finetune`` only add units;
* the metrics, target name, backend and device are applied to the cached features on every run.

``scores.csv``, ``table.csv``, ``metrics.json`` and ``report.html`` always describe exactly the
sources and metrics of the current ``config.yaml`` (they are removed before a config that differs
is recorded, so a killed run leaves no mix).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medbench.errors import InputError
from medbench.runs import METRICS_FILE, Run, open_run
from medbench.utils.files import atomic_path, write_json_atomic
from transferability.report_text import metric_note

log = logging.getLogger(__name__)

FU_IMAGES = 256  # gradient metrics (FU) see the first images (see cached_features)
#: Files rebuilt at the end of every run from the units (they describe the current config).
SUMMARY_OUTPUTS = ("scores.csv", "table.csv", "report.html", METRICS_FILE)
#: Everything the workflow writes besides units/, config and log (removed by ``--restart``).
TRANSFER_OUTPUTS = ("features", "finetune", *SUMMARY_OUTPUTS)


@dataclass
class TransferResult:
    """Outcome of :func:`run_transfer`."""

    out_dir: Path
    scores: pd.DataFrame
    table: pd.DataFrame
    report: Path
    warnings: list[str] = field(default_factory=list)


def parse_source(spec: str) -> tuple[str, str | None]:
    """"name" or "name:arch" (e.g. "random:resnet18") -> (name, arch)."""
    name, _, arch = spec.strip().partition(":")
    if not name:
        raise InputError(f"empty source name in {spec!r}; use e.g. --sources random:resnet18,imagenet:resnet18")
    return name, (arch or None)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _load_model(name: str, arch: str | None, weights: str | None, with_head: bool) -> tuple[Any, bool]:
    from medbench.sources import create_source

    if with_head:
        try:
            return create_source(name, arch=arch, num_classes=None, in_chans=1, weights=weights), True
        except Exception as exc:  # noqa: BLE001 - a source without a pretrained head is fine
            log.info("source %s has no pretrained head (%s): no logits", name, exc)
    return create_source(name, arch=arch, num_classes=0, in_chans=1, weights=weights), False


def extract_features(model: Any, dataset: Any, *, batch_size: int = 32, device: str = "cpu",
                     logits: bool = False) -> dict[str, np.ndarray]:
    """Pooled features (and logits) of ``model`` over an ``(image, label, meta)`` dataset."""
    import torch
    from torch.utils.data import DataLoader

    model.to(device).eval()
    feats, outs, labels, uids = [], [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda items: items)
    with torch.no_grad():
        for items in loader:
            x = torch.stack([it[0] for it in items]).to(device)
            f = model.features(x)
            feats.append(f.float().cpu().numpy())
            if logits:  # the head applied to the pooled features (eval mode: no dropout)
                outs.append(model.classifier(f).float().cpu().numpy())
            labels += [int(it[1]) for it in items]
            uids += [str(it[2].get("uid", "")) for it in items]
    out = {"features": np.concatenate(feats), "labels": np.asarray(labels, dtype=np.int64),
           "uids": np.asarray(uids)}
    if logits:
        out["logits"] = np.concatenate(outs)
    return out


def cached_features(run_dir: Path, spec: str, dataset: Any, *, size: int, weights: str | None = None,
                    batch_size: int = 32, device: str = "cpu", gradient: Sequence[str] = (),
                    fu_images: int | None = FU_IMAGES) -> dict[str, np.ndarray]:
    """Features of source ``spec`` on ``dataset``, from ``features/<spec>.npz`` when it matches.

    ``gradient`` names registered ``kind="gradient"`` metrics (FU) computed on the source model
    and cached beside the features (``<name>`` and ``<name>_recipe``; recomputed when the recipe
    changes). They see the first ``fu_images`` images in dataset order (None: all of them, as
    the authors do with the target's training set; on CPU that costs a backward pass over every
    image). When one is undefined for the source (FU: every triplet already satisfies the
    margin) its value is NaN and ``<name>_error`` says why.
    """
    from transferability.metrics import METRICS

    grads = {m: METRICS.get(m) for m in gradient}
    path = run_dir / "features" / f"{_slug(spec)}.npz"
    uids = np.asarray([str(m.get("uid", "")) for m in dataset.meta.to_dict("records")])
    out: dict[str, np.ndarray] | None = None
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            cached = {k: z[k] for k in z.files}
        same = (int(cached.get("size", -1)) == size and np.array_equal(cached["uids"], uids)
                and np.array_equal(cached["labels"], np.asarray(dataset.labels)))
        missing = [m for m, g in grads.items() if m not in cached or str(cached.get(f"{m}_recipe", "")) != g.recipe]
        if same and not missing:
            log.info("features of %s: reusing %s", spec, path)
            return cached
        if same:  # only gradient metrics are missing: keep the cached features, compute them alone
            out = cached
            grads = {m: grads[m] for m in missing}
    name, arch = parse_source(spec)
    model, has_head = _load_model(name, arch, weights, with_head=True)
    if out is None:
        out = extract_features(model, dataset, batch_size=batch_size, device=device, logits=has_head)
        out["size"] = np.asarray(size)
    if grads:
        import torch

        n = len(dataset) if fu_images is None else min(len(dataset), fu_images)
        x = torch.stack([dataset[i][0] for i in range(n)])
        for m, g in grads.items():
            out[f"{m}_recipe"] = np.asarray(g.recipe)
            out.pop(f"{m}_error", None)
            try:
                out[m] = np.asarray(g(model, x, out["labels"][:n], device=device))
            except InputError as exc:  # one source's undefined score must not abort the whole run
                out[m], out[f"{m}_error"] = np.asarray(np.nan), np.asarray(str(exc))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **out)
    return out


def _finetune_auc(table: pd.DataFrame, run_dir: Path, spec: str, *, label: str, size: int, epochs: int,
                  batch_size: int, device: str, seed: int, weights: str | None) -> float:
    from medbench.train.config import TrainConfig
    from medbench.train.experiment import run_experiment

    name, arch = parse_source(spec)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, device=device, seed=seed, progress=False)
    res = run_experiment(table, run_dir / "finetune" / _slug(spec), label=label, source=name, arch=arch,
                         size=size, cfg=cfg, weights=weights)
    return _test_auc(res.fit.predictions)


def _test_auc(pred: pd.DataFrame) -> float:
    """Test-split AUC of a fine-tuning run's predictions (binary, or macro one-vs-rest)."""
    from medbench.eval.metrics import auc

    test = pred[pred["split"] == "test"]
    probs = test["prob"] if "prob" in test.columns else test[[c for c in test.columns if c.startswith("prob_")]]
    return auc(test["label"].to_numpy(), probs.to_numpy())


def transfer_settings(df: pd.DataFrame, *, label: str, size: int, batch_size: int, epochs: int, seed: int,
                      weights: str | None) -> dict[str, Any]:
    """The settings that change every unit (checked by ``open_run``: a change is refused).

    The data enter as their size and a hash of ``uid``, label and patient group per row.
    """
    rows = df[["uid", label, "patient_hash"]].astype(str)
    digest = hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()[:16]
    return {"data": {"n_images": len(df), "hash": digest}, "label": label, "size": size,
            "batch_size": batch_size, "weights": weights, "finetune": {"epochs": epochs, "seed": seed}}


def _record_config(run: Run, resolved: dict[str, Any]) -> None:
    """``config.yaml`` for ``resolved``; the summary files go first when the recorded config differs."""
    run.record_resolved(resolved, SUMMARY_OUTPUTS)


def _source_features(run: Run, spec: str, ds: Any, *, size: int, weights: str | None, batch_size: int,
                     device: str, gradient: Sequence[str]) -> dict[str, np.ndarray]:
    """The features unit of ``spec``: loaded when recorded with these settings, else computed."""
    from transferability.metrics import METRICS

    unit = f"features-{_slug(spec)}"
    recipes = {g: METRICS.get(g).recipe for g in gradient}  # gradient metrics (FU) and their recipes
    settings = {"source": spec, "gradient": recipes or None, "fu_images": FU_IMAGES if gradient else None}
    path = run.out / "features" / f"{_slug(spec)}.npz"
    if run.unit_done(unit, settings, outputs=[path]):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    data = cached_features(run.out, spec, ds, size=size, weights=weights, batch_size=batch_size,
                           device=device, gradient=gradient)
    run.mark_unit(unit, settings)
    log.info("source %s: features of %d images (%d dims)%s", spec, *data["features"].shape,
             "".join(f", {g} {float(data[g]):.4g}" for g in gradient))
    return data


def _source_finetune(run: Run, df: pd.DataFrame, spec: str, **kw: Any) -> float:
    """The fine-tuning unit of ``spec``: its test AUC, from the recorded run's predictions when finished."""
    unit = f"finetune-{_slug(spec)}"
    pred = run.out / "finetune" / _slug(spec) / "predictions.parquet"
    if run.unit_done(unit, {"source": spec}, outputs=[pred]):
        return _test_auc(pd.read_parquet(pred))
    value = _finetune_auc(df, run.out, spec, **kw)
    run.mark_unit(unit, {"source": spec}, auc=value)
    log.info("source %s: fine-tuned, test AUC %.4f", spec, value)
    return value


def run_transfer(table: pd.DataFrame, out_dir: str | Path, *, sources: Sequence[str],
                 metrics: Sequence[str] | None = None, label: str = "label", target: str = "target",
                 size: int = 224, batch_size: int = 32, device: str = "cpu", backend: str = "numpy",
                 finetune: bool = False, epochs: int = 5, seed: int = 0,
                 weights: str | None = None, restart: bool = False) -> TransferResult:
    """Score every source on the target table; optionally fine-tune each for its test AUC.

    Args:
        table: Rows with ``path`` and ``label`` (a manifest joined with labels, or labels.csv).
        out_dir: Run folder.
        sources: Source specs "name" or "name:arch".
        metrics: Registered metric names (any kind: feature metrics, "fu", "lp_x_fu"); None = all
            feature metrics. What each needs comes from its registry spec.
        label: Label column.
        target: Name of the target dataset in the tables.
        size: Image size fed to the sources.
        batch_size: Feature-extraction (and fine-tuning) batch size.
        device: Torch device.
        backend: "numpy" or "torch" for the metrics that support it.
        finetune: Fine-tune every source (``medbench.train``) for ground-truth AUC.
        epochs: Fine-tuning epochs.
        seed: Seed of the fine-tuning runs.
        weights: Local weights file for sources that need one.
        restart: Discard the folder's outputs when its settings differ, instead of refusing.

    NCTI is combined across the sources as the authors do (:func:`ncti_combine`: each term
    min-max scaled across the candidate sources, then summed), so its scores rank the sources of
    this run only. Metrics that are degenerate for the data's shape (H-score with D >= N - 1) and
    sources whose FU is undefined are reported in ``TransferResult.warnings``, ``metrics.json``
    and the report.

    Raises:
        InputError: ``out_dir`` holds a run with other settings (every change listed) and ``restart``
            is False.
    """
    from medbench.data.dataset import ImageDataset
    from medbench.eval.report import HtmlReport
    from medbench.train.experiment import prepare_table
    from transferability.features import METRICS, compute_metric, list_metrics

    if not sources:
        raise InputError("no sources: pass --sources a,b,c")
    names = list(metrics) if metrics else list_metrics()
    specs = {m: METRICS.get(m) for m in names}  # unknown names raise with "did you mean"
    per_source = list(dict.fromkeys(p for m in names for p in (specs[m].parts or (m,))))  # what to score per source
    specs.update({p: METRICS.get(p) for p in per_source})
    grads = [m for m in per_source if specs[m].kind == "gradient"]
    df = prepare_table(table, label)
    settings = transfer_settings(df, label=label, size=size, batch_size=batch_size, epochs=epochs, seed=seed,
                                 weights=weights)
    with open_run(out_dir, "transfer", settings, outputs=TRANSFER_OUTPUTS, restart=restart) as run:
        out = run.out
        _record_config(run, {"target": target, "sources": list(sources), "metrics": names, "finetune": finetune,
                             "backend": backend, "device": device})
        ds = ImageDataset(df, label_column=label, size=size, channels=1)
        rows: list[dict[str, Any]] = []
        values: dict[str, dict[str, float]] = {m: {} for m in per_source}  # metric -> source -> score
        terms: dict[str, dict[str, Any]] = {m: {} for m in per_source}  # relative metrics' per-source terms
        warnings: list[str] = []
        for spec in sources:
            data = _source_features(run, spec, ds, size=size, weights=weights, batch_size=batch_size,
                                    device=device, gradient=grads)
            logits = data.get("logits")
            n, d = data["features"].shape
            n_classes = len(np.unique(data["labels"]))
            for m in per_source:
                ms = specs[m]
                if ms.kind == "gradient":
                    if not np.isfinite(float(data[m])):
                        reason = str(data[f"{m}_error"]) if f"{m}_error" in data else "not finite"
                        users = [m] + [c for c in names if m in specs[c].parts]
                        warnings.append(f"{spec}: {m.upper() if m == 'fu' else m} undefined, left out of "
                                        f"{' and '.join(users)} ({reason})")
                    else:
                        values[m][spec] = float(data[m])
                    continue
                if ms.needs_logits and logits is None:
                    log.warning("%s needs source logits; %s has no pretrained head: skipped", m, spec)
                    continue
                msg = ms.warning_for(n, d, n_classes)
                if msg and m in names:
                    warnings.append(f"{spec}: {msg}")
                if ms.part is not None:  # relative across the sources: combined below
                    terms[m][spec] = ms.part(data["features"], data["labels"])
                    continue
                values[m][spec] = compute_metric(m, data["features"], data["labels"], logits=logits, backend=backend,
                                                 device=device)
        for m in names:
            ms = specs[m]
            if ms.kind == "combined":  # sources that have every part
                common = [s for s in sources if all(s in values[p] for p in ms.parts)]
                got = ms.combine(*({s: values[p][s] for s in common} for p in ms.parts)) if common else {}
            elif ms.part is not None:
                got = ms.combine(terms[m]) if terms[m] else {}
            else:
                got = values[m]
            rows += [{"target": target, "source": s, "metric": m, "score": v} for s, v in got.items()]
        scores = pd.DataFrame(rows)
        if finetune:
            aucs = {spec: _source_finetune(run, df, spec, label=label, size=size, epochs=epochs,
                                           batch_size=batch_size, device=device, seed=seed, weights=weights)
                    for spec in sources}
            scores["auc"] = scores["source"].map(aucs)
        else:
            scores["auc"] = np.nan
        run.write_table("scores.csv", scores)
        wide = scores.pivot(index="source", columns="metric", values="score").reindex(list(sources))
        wide.insert(0, "auc", scores.groupby("source")["auc"].first().reindex(wide.index))
        wide = wide.reset_index()
        run.write_table("table.csv", wide)
        for w in warnings:
            log.warning(w)
        config = {"target": target, "sources": list(sources), "metrics": names, "label": label, "size": size,
                  "batch_size": batch_size, "device": device, "backend": backend, "finetune": finetune,
                  "epochs": epochs, "seed": seed, "weights": weights, "n_images": len(df)}
        report = _report(out, scores, wide, target, finetune, HtmlReport, warnings, config=config)
        log.info("transfer: %d source(s) x %d metric(s) scored on %d images", len(sources), len(names), len(df))
    return TransferResult(out, scores, wide, report, warnings)


def _scores_figure(scores: pd.DataFrame, wide: pd.DataFrame) -> Any:
    """One small panel per metric: raw score per source on the metric's own axis, labelled with its rank."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    metrics = list(scores["metric"].unique())
    if wide["auc"].notna().any():
        metrics = ["auc", *metrics]
    ncols = min(4, max(1, len(metrics)))
    nrows = -(-len(metrics) // ncols)
    sources = wide["source"].tolist()
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 1.5, 0.8 + (0.35 * len(sources) + 0.9) * nrows),
                             sharey=True, squeeze=False)
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    table = wide.set_index("source")
    y = np.arange(len(sources))
    for ax, m in zip(axes.ravel(), metrics):
        vals = table[m].reindex(sources).to_numpy(float)
        rank = pd.Series(vals).rank(ascending=False, method="min").to_numpy()
        ok = np.isfinite(vals)
        # dots, not bars: a bar's length would depend on an arbitrary baseline for scores like LogME < 0
        ax.hlines(y[ok], np.nanmin(vals) if ok.any() else 0, vals[ok], color="#ccd", lw=1)
        ax.plot(vals[ok], y[ok], "o", color="#58a")
        for yi, v, r in zip(y, vals, rank):
            if np.isfinite(v):
                ax.annotate(f"{v:.4g}  #{int(r)}", (v, yi), xytext=(0, 7), textcoords="offset points",
                            ha="center", fontsize=7)
        ax.set_yticks(y, sources, fontsize=8)
        ax.set_ylim(len(sources) - 0.4, -0.6)
        ax.set_title(m + (" (relative)" if m in relative_metrics() else ""), fontsize=9)
        ax.margins(x=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.4g"))
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def relative_metrics() -> list[str]:
    """Registered metrics scored relative to the candidate sources of one run (their spec's ``relative``)."""
    from transferability.metrics import METRICS

    return [name for name in METRICS.names() if METRICS.get(name).relative]


def _report(out: Path, scores: pd.DataFrame, wide: pd.DataFrame, target: str, finetune: bool,
            report_cls: Any, warnings: Sequence[str] = (), config: dict[str, Any] | None = None) -> Path:
    from transferability.ranking import rank_correlations

    wide = wide.rename_axis(columns=None)  # the pivot's "metric" axis name would add an empty column
    rep = report_cls(f"Transferability to {target}", subtitle=f"{len(wide)} sources")
    rep.warning(list(warnings))
    rep.heading("Scores").table(wide, caption="raw scores; higher is better for every metric; auc = fine-tuned "
                                "test AUC (explanations below)")
    metrics_json: dict[str, Any] = {"target": target, "sources": wide["source"].tolist(),
                                    "warnings": list(warnings)}
    if finetune and len(wide) >= 2:
        corr = rank_correlations(scores)
        rep.heading("Rank correlation with fine-tuned AUC").table(corr)
        metrics_json["rank_correlations"] = corr.to_dict("records")
    ranks = wide.set_index("source").rank(ascending=False, method="min")  # 1 = best; ties share a rank
    rep.heading("Ranks").table(ranks.reset_index(), float_format="{:.0f}",
                               caption="1 = best source for that column (ties share the best rank)")
    rep.figure(_scores_figure(scores, wide), caption="Raw scores per metric, each on its own scale; the label is "
               "the rank among sources. Relative metrics (" + ", ".join(relative_metrics()) + ") are min-max scaled "
               "across the sources, so with two sources they read 0 or 1 by construction.")
    rep.heading("What the metrics measure").bullets([metric_note(m) for m in ["auc", *sorted(scores["metric"].unique())]
                                                     if m != "auc" or finetune])
    rep.config(config)
    metrics_json["scores"] = scores.to_dict("records")
    write_json_atomic(out / "metrics.json", metrics_json)
    return rep.save(out / "report.html")
