"""``medbench transfer``: score candidate sources on a target dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medbench.tracking import TRACKER_HELP
from medbench.utils.text import split_list


def register(app: typer.Typer) -> None:
    """Add the ``transfer`` command to ``app``."""

    @app.command("transfer")
    def transfer(
        manifest: Path = typer.Option(..., "--manifest", "-m", help="Target table: manifest.parquet or labels.csv (a folder holding one works too)."),
        sources: list[str] = typer.Option(..., "--source", "--sources", "-s", help="Source 'name' or 'name:arch' (repeat: --source efficientnet-lite0-imagenet --source random:resnet18)."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder (features are cached in OUT/features and reused)."),
        label: str = typer.Option("label", "--label", help="Label column (class ids 0, 1, ...)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV joined onto the manifest on path, sop_uid or uid."),  # noqa: UP045
        metrics: Optional[list[str]] = typer.Option(None, "--metric", "--metrics", help="Metric to compute (repeat: --metric logme --metric ncti; default: all feature metrics; also fu, lp_x_fu)."),  # noqa: UP045
        target: Optional[str] = typer.Option(None, "--target", help="Target name in the tables (default: the manifest's folder name)."),  # noqa: UP045
        size: int = typer.Option(224, "--size", help="Images are resized to SIZE x SIZE."),
        batch_size: int = typer.Option(32, "--batch-size", help="Batch size of feature extraction and fine-tuning."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
        backend: str = typer.Option("numpy", "--backend", help="numpy or torch (on DEVICE) for the heavy metrics."),
        finetune: bool = typer.Option(False, "--finetune", help="Also fine-tune every source for its test AUC (ground truth)."),
        epochs: int = typer.Option(5, "--epochs", help="Fine-tuning epochs."),
        seed: int = typer.Option(0, "--seed", help="Seed of fine-tuning and FU triplets."),
        weights: Optional[str] = typer.Option(None, "--weights", help="Local weights file for sources that need one."),  # noqa: UP045
        tracker: str = typer.Option("none", "--tracker", help=TRACKER_HELP),
        restart: bool = typer.Option(False, "--restart", help="Discard a run in OUT computed on other data or "
                                     "settings, instead of refusing (other sources, metrics or --finetune only add work)."),
    ) -> None:
        """Extract features of each source on the target images, compute transferability metrics,
        optionally fine-tune for ground truth; writes config.yaml, transfer.log, scores.csv, table.csv,
        metrics.json, report.html. A re-run resumes; one with other data or settings is refused."""
        from medbench.train.experiment import join_labels, read_table
        from transferability.pipeline import run_transfer

        table = read_table(manifest)
        if labels is not None:
            table = join_labels(table, read_table(labels))
        srcs = split_list(sources)
        mets = split_list(metrics) or None
        name = target or (manifest.name if manifest.is_dir() else manifest.parent.name) or "target"
        res = run_transfer(table, out, sources=srcs, metrics=mets, label=label, target=name, size=size,
                           batch_size=batch_size, device=device, backend=backend, finetune=finetune,
                           epochs=epochs, seed=seed, weights=weights, restart=restart)
        typer.echo(res.table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        typer.echo(f"table: {res.out_dir / 'table.csv'}")
        typer.echo(f"report: {res.report}")
        from medbench.tracking import table_metrics, track_finished

        track_finished(tracker, out, name=f"transfer {name}",
                       config={"sources": srcs, "metrics": mets, "label": label, "target": name, "size": size,
                               "finetune": finetune, "epochs": epochs, "seed": seed, "backend": backend},
                       final=table_metrics(res.scores, ["source", "metric"], ["score", "value", "auc"]),
                       artifacts=(res.out_dir / "scores.csv", res.out_dir / "table.csv",
                                  res.out_dir / "metrics.json", res.report))

    @app.command("transfer-shortcut")
    def transfer_shortcut(
        sources: list[str] = typer.Option(..., "--source", "--sources", "-s", help="Source 'name' or 'name:arch' (repeat: --source random --source imagenet)."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder for table.csv, curves.csv, report.html."),
        bands: list[str] = typer.Option(["low", "mid", "high"], "--band", "--bands", help="Pattern band: low, mid or high (repeat: --band low --band high)."),
        n_train: int = typer.Option(96, "--n-train", help="Training images."),
        n_val: int = typer.Option(48, "--n-val", help="Validation images (select the kept epoch)."),
        n_test: int = typer.Option(64, "--n-test", help="Images per test set (i.i.d. and o.o.d.)."),
        size: int = typer.Option(64, "--size", help="Image size."),
        epochs: int = typer.Option(3, "--epochs", help="Training epochs per unit."),
        amplitudes: list[str] = typer.Option(["0.02", "0.05", "0.15"], "--amplitude", "--amplitudes", help="Pattern amplitude on [0, 1] images (repeat for the sweep: --amplitude 0.02 --amplitude 0.05)."),
        seeds: list[str] = typer.Option(["0", "1", "2"], "--seed", "--seeds", help="Seed (repeat: --seed 0 --seed 1; each draws data, pattern, initialisation and order; CIs are over seeds)."),
        lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
        loss_threshold: float = typer.Option(0.3, "--loss-threshold", help="Training loss counted as latched on."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
        restart: bool = typer.Option(False, "--restart", help="Discard a run in OUT computed with other settings "
                                     "instead of refusing (other sources, bands, amplitudes or seeds only add work)."),
    ) -> None:
        """Frequency-shortcut experiment: how fast and how strongly each source learns a band-limited
        pattern placed on one class, over an amplitude sweep and several seeds (mean and 95% CI), and whether
        the gradient-PSD alignment predicts which bands are learned. Every (source, band, amplitude, seed)
        is one unit of OUT: a re-run resumes."""
        from medbench.errors import InputError
        from transferability.shortcut import frequency_shortcut_experiment
        from transferability.shortcut_report import shortcut_report

        try:
            amps = [float(a) for a in split_list(amplitudes)]
            seed_list = [int(s) for s in split_list(seeds)]
        except ValueError as exc:
            raise InputError(f"--amplitude takes numbers and --seed integers ({exc})") from None
        res = frequency_shortcut_experiment(
            split_list(sources), bands=split_list(bands), amplitudes=amps, seeds=seed_list, n_train=n_train,
            n_val=n_val, n_test=n_test, size=size, epochs=epochs, lr=lr, loss_threshold=loss_threshold,
            device=device, work_dir=out, restart=restart)
        report = shortcut_report(res, out)
        typer.echo(res.alignment.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        typer.echo(f"table: {out / 'summary.csv'}")
        typer.echo(f"report: {report}")
