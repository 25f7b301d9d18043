"""``medbench harmonize fit|apply``: cross-vendor X-ray harmonization with GDCE."""

from __future__ import annotations

from pathlib import Path

import typer

from medbench.tracking import TRACKER_HELP
from medbench.utils.text import split_list

RESTART_HELP = ("Discard this folder's previous run (its outputs, units and config) and start over; "
                "without it a re-run with other settings is refused and one with the same settings resumes.")
DEFAULT_BASELINES = "histmatch,zscore,histeq,clahe,minmax"  # harmonization.xray.fit_job.BASELINES


def register(app: typer.Typer) -> None:
    harm = typer.Typer(help="Cross-vendor X-ray harmonization (GDCE and classical baselines).",
                       no_args_is_help=True)
    app.add_typer(harm, name="harmonize")

    @harm.command("fit")
    def fit(
        manifest: Path = typer.Option(..., help="manifest.parquet from `medbench ingest` or labels.csv."),
        reference: str = typer.Option(..., help="The reference vendor (value of the vendor column)."),
        out: Path = typer.Option(..., help="Output folder: model.pt, results.csv, report.html."),
        vendor_column: str = typer.Option("Manufacturer", help="Column naming the vendor."),
        label: str = typer.Option("label", help="Label column (class ids) for the downstream task."),
        labels: Path = typer.Option(None, help="Label CSV joined onto the manifest on path/uid."),
        size: int = typer.Option(128, help="Image size used for training and evaluation."),
        steps: int = typer.Option(400, help="GDCE optimisation steps."),
        lr: float = typer.Option(None, help="GDCE Adam learning rate (default: 1e-4 with --recipe paper, "
                                 "1e-3 with the medbench recipe)."),
        recipe: str = typer.Option("medbench", help="'paper': the authors' loss (VGG16 conv2_2 before ReLU "
                                   "from --vgg-weights, per-image L1 with source and reference terms, "
                                   "lambda*floor(CE/VGG)*VGG + (1-lambda)*CE, Adam 1e-4, 12 images per batch, "
                                   "flips); 'medbench': the CPU-budget variant (see the README)."),
        vgg_weights: Path = typer.Option(None, help="torchvision VGG16 state dict for --recipe paper "
                                         "(ImageNet or RadImageNet)."),
        loss_lambda: float = typer.Option(0.5, help="The paper's lambda (0.5 chest X-ray, 0.95 mammography)."),
        per_vendor: bool = typer.Option(False, help="Also fit one predictor per source vendor (the authors' "
                                        "setup); apply then uses the vendor's when the Manufacturer matches."),
        classifier_source: str = typer.Option(None, help="Reference classifier: 'cnn' (a small CNN trained "
                                              "from scratch; the default) or a medbench source name "
                                              "(random, imagenet, radimagenet, ...)."),
        arch: str = typer.Option(None, help="timm architecture of a source classifier (alone: 'random' "
                                 "weights of that architecture)."),
        epochs: int = typer.Option(20, help="Epochs of the reference classifier."),
        baselines: list[str] = typer.Option(DEFAULT_BASELINES.split(","), "--baseline", "--baselines",
                                            help="Classical baseline to compare (repeat: --baseline histmatch "
                                            "--baseline clahe; from histmatch, zscore, histeq, clahe, minmax, "
                                            "window); --baseline none for none."),
        feature_source: str = typer.Option("auto", help="Feature network for the feature loss: a source "
                                           "name, 'auto' (EfficientNet-Lite0 if installed) or 'random'."),
        feature_weight: float = typer.Option(1.0, help="Weight of the feature-statistics loss against the "
                                             "classifier loss (larger holds the curve closer to the reference "
                                             "look; the synthetic vendor test uses 30)."),
        seed: int = typer.Option(0, help="Seed of the split, classifier and GDCE initialisation."),
        tracker: str = typer.Option("none", "--tracker", help=TRACKER_HELP),
        restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
    ) -> None:
        """Train GDCE against a frozen reference-vendor classifier and compare with baselines."""
        from harmonization.xray.fit_job import fit_harmonizer
        from medbench.train.experiment import join_labels, read_table

        table = read_table(manifest)
        if labels is not None:
            table = join_labels(table, read_table(labels))
        names = tuple(b for b in split_list(baselines) if b.lower() != "none")
        res = fit_harmonizer(table, out, vendor_column=vendor_column, reference=reference, label=label,
                             size=size, steps=steps, lr=lr, recipe=recipe, vgg_weights=vgg_weights,
                             loss_lambda=loss_lambda, per_vendor=per_vendor, classifier_source=classifier_source,
                             classifier_arch=arch, classifier_epochs=epochs, feature_source=feature_source,
                             feature_weight=feature_weight,
                             baselines=names, seed=seed, restart=restart)
        r = res["results"]
        r = r.assign(auc=r.apply(lambda x: f"{x['auc']:.3f} [{x['auc_lo']:.3f}, {x['auc_hi']:.3f}]", axis=1))
        typer.echo(r.pivot_table(index="method", columns="vendor", values="auc", aggfunc="first").to_string())
        if res["comparison"] is not None:
            typer.echo(res["comparison"].verdict)
        else:
            typer.echo(f"{out} already holds this fit (same settings): nothing recomputed")
        typer.echo(f"model: {out / 'model.pt'}\nreport: {out / 'report.html'}")
        from medbench.tracking import table_metrics, track_finished

        track_finished(tracker, out, name="harmonize fit",
                       config={"reference": reference, "vendor_column": vendor_column, "label": label,
                               "size": size, "steps": steps, "lr": lr, "classifier_source": classifier_source,
                               "arch": arch, "epochs": epochs, "baselines": list(names),
                               "feature_source": feature_source, "feature_weight": feature_weight, "seed": seed},
                       final=table_metrics(res["results"], ["method", "vendor"], ["auc", "lo", "hi"]),
                       artifacts=(out / "results.csv", out / "report.html"))

    @harm.command("apply")
    def apply(
        folder: Path = typer.Argument(..., help="Folder of DICOM X-rays (searched recursively)."),
        model: Path = typer.Option(..., help="model.pt written by `medbench harmonize fit`."),
        out: Path = typer.Option(..., help="Output folder for the harmonised DICOMs (same relative paths)."),
        workers: int = typer.Option(None, help="Worker processes (default: all cores)."),
        executor: str = typer.Option("local", help="'local' processes or 'dask'."),
        scheduler: str = typer.Option(None, help="Dask scheduler address (default: a LocalCluster)."),
        deidentify: bool = typer.Option(False, "--deidentify", help="De-identify the written headers (DICOM "
                                        "PS3.15 Basic Profile, Retain Patient Characteristics; UIDs remapped "
                                        "with the project secret). Default: the source header is kept."),
        restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
    ) -> None:
        """Write harmonised copies (new UIDs, derivation noted); inputs untouched; reruns resume."""
        from harmonization.xray.pipeline import apply_folder

        table = apply_folder(model, folder, out, workers=workers, executor=executor, scheduler=scheduler,
                             deidentify=deidentify, restart=restart)
        counts = table["status"].value_counts().to_dict()
        typer.echo(f"{counts} -> {out}")
        failed = table[table["status"] == "failed"]
        for _, row in failed.head(10).iterrows():
            typer.echo(f"  failed: {row['path']}: {row['error']}", err=True)
        if len(failed):
            raise typer.Exit(1)
