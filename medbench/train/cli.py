"""``medbench train``: fine-tune a source on a manifest/label table and evaluate it on a test split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medbench.tracking import TRACKER_HELP


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""

    @app.command("train")
    def train(
        manifest: Path = typer.Option(..., "--manifest", "-m", help="RUN_DIR/manifest.parquet from `medbench ingest`, or labels.csv from `medbench synth` (a folder holding one works too)."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder (re-running the same command resumes it)."),
        label: str = typer.Option("label", "--label", help="Label column (class ids 0, 1, ...)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV joined onto the manifest on path, sop_uid or uid."),  # noqa: UP045
        source: str = typer.Option("random", "--source", help="Source model (see `medbench sources`): random, imagenet, efficientnet-lite0-imagenet, ..."),
        arch: Optional[str] = typer.Option(None, "--arch", help="timm architecture, for sources that take one (e.g. resnet18)."),  # noqa: UP045
        weights: Optional[str] = typer.Option(None, "--weights", help="Local weights file for sources that need one."),  # noqa: UP045
        epochs: int = typer.Option(10, "--epochs", help="Maximum epochs."),
        batch_size: int = typer.Option(32, "--batch-size", help="Training batch size."),
        lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
        optimizer: str = typer.Option("adamw", "--optimizer", help="adamw, adam or sgd."),
        schedule: str = typer.Option("cosine", "--schedule", help="cosine, step or constant."),
        schedule_interval: str = typer.Option("epoch", "--schedule-interval", help="Step the schedule per 'epoch' or per 'step'."),
        patience: int = typer.Option(5, "--patience", help="Early stopping patience in epochs (0 = off)."),
        size: int = typer.Option(224, "--size", help="Images are resized to SIZE x SIZE."),
        seed: int = typer.Option(0, "--seed", help="Seed of the split, initialisation and ordering."),
        split_column: Optional[str] = typer.Option(None, "--split-column", help="Column with train/val/test; default: a patient-grouped split."),  # noqa: UP045
        val_frac: float = typer.Option(0.15, "--val-frac", help="Validation share of patients."),
        test_frac: float = typer.Option(0.2, "--test-frac", help="Test share of patients."),
        order: str = typer.Option("rr", "--order", help="Example ordering: rr (reshuffle each epoch), so (shuffle once), grab, pair, cdgrab (CD-GraB, torchrun)."),
        sparsity: Optional[str] = typer.Option(None, "--sparsity", help="N:M sparsity pattern, e.g. 2:4 (default dense)."),  # noqa: UP045
        sparsity_recipe: str = typer.Option("step", "--sparsity-recipe", help="step, srste or asp."),
        linear_probe: bool = typer.Option(False, "--linear-probe", help="Train only the classifier (frozen backbone)."),
        drop_rate: float = typer.Option(0.0, "--drop-rate", help="Dropout before the head."),
        grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Clip the gradient norm to this value."),  # noqa: UP045
        amp: str = typer.Option("auto", "--amp", help="Mixed precision on CUDA: auto, bf16, fp16, none (ignored on CPU)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
        workers: int = typer.Option(0, "--workers", "-j", help="DataLoader worker processes."),
        checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Also checkpoint every N steps (0: epoch ends only)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        compile_model: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the training forward (CUDA only)."),
        channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="Channels-last memory format (CUDA only)."),
        restart: bool = typer.Option(False, "--restart", help="Discard a previous run in OUT whose settings differ, instead of refusing."),
        tracker: str = typer.Option("none", "--tracker", help=TRACKER_HELP),
        window: Optional[str] = typer.Option(None, "--window", help="Grey-level window: CENTER,WIDTH (DICOM LINEAR, on modality values such as HU; on stored values for PNG/TIFF), minmax (per image), bits (full stored range); default: each DICOM's own VOI window."),  # noqa: UP045
        pad: bool = typer.Option(False, "--pad/--no-pad", help="Resize keeping the aspect ratio (black padding) instead of stretching."),
        augment: Optional[Path] = typer.Option(None, "--augment", help="Training augmentation: 'affine' (MONAI rotation/shift/shear/zoom/flip, seeded per image and epoch) or an Albumentations pipeline saved with albumentations.save(aug, PATH) (.json or .yaml; needs the augment extra)."),  # noqa: UP045
    ) -> None:
        """Fine-tune SOURCE on the labelled images, then predict and evaluate the test split.

        Writes into OUT: config.yaml, splits.csv, checkpoints/, history.csv, predictions.parquet/.csv,
        metrics.json (test AUC with a patient-level bootstrap CI), report.html, train.log, settings.yaml
        and units/. Splits are grouped by patient unless --split-column is given. The same command
        again resumes an interrupted run (a finished one just prints its result); any changed
        setting, an edited table included, is refused listing every change (--restart starts over).
        Runs unchanged under torchrun (DDP); --batch-size is then the global batch.
        """
        from medbench.io.images import parse_window
        from medbench.train.config import TrainConfig
        from medbench.train.experiment import (
            finished_train,
            join_labels,
            read_table,
            train_settings,
        )

        parse_window(window)  # a bad --window fails before any work

        table = read_table(manifest)
        if labels is not None:
            table = join_labels(table, read_table(labels))
        cfg = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
            schedule_interval=schedule_interval, patience=patience or None, seed=seed, device=device,
            amp=amp, linear_probe=linear_probe, grad_clip=grad_clip, order=order, sparsity=sparsity,
            sparsity_recipe=sparsity_recipe, num_workers=workers, checkpoint_every=checkpoint_every,
            progress=progress, compile=compile_model, channels_last=channels_last,
        )
        from medbench.data.augment import load_augmentation

        transform = load_augmentation(augment, seed=seed) if augment is not None else None
        data = {"label": label, "source": source, "arch": arch, "size": size, "split_column": split_column,
                "val_frac": val_frac, "test_frac": test_frac, "drop_rate": drop_rate, "weights": weights,
                "window": window, "pad": pad}
        done = None if restart else finished_train(out, train_settings(table, cfg=cfg, train_transform=transform,
                                                                        **data))
        if done is not None:  # the same command on a finished run: print its result, no torch needed
            if tracker != "none":
                from medbench.tracking import log_run_folder, tracking

                with tracking(tracker, out, name=f"train {source}", config={**data, **cfg.to_dict()}) as track:
                    log_run_folder(track, out)
            _report(source, done["summary"], done["metrics"], out, done["report"])
            return

        from medbench.tracking import NullTracker, log_run_folder, make_tracker
        from medbench.train import dist
        from medbench.train.experiment import run_experiment

        track = make_tracker(tracker, out, name=f"train {source}") if dist.is_main() else NullTracker()
        try:
            track.log_config({"source": source, "arch": arch, "size": size, "label": label, **cfg.to_dict()})
            res = run_experiment(
                table, out, cfg=cfg, train_transform=transform, restart=restart,
                on_epoch=lambda row: track.log_metrics(row, step=int(row["epoch"])), **data,
            )
            log_run_folder(track, out, final=res.metrics, history=None)
        finally:
            track.close()

        if not dist.is_main():  # under torchrun only rank 0 reports
            return
        _report(source, res.fit.summary, res.metrics, res.out_dir, res.report)


def _report(source: str, s: dict, metrics: dict, out_dir: Path, report: Path | None) -> None:
    """Print a train run's outcome (fresh or recorded)."""
    typer.echo(f"trained {source} for {s['epochs_run']} epochs (best epoch {s['best_epoch']}, "
               f"{s['train_images_per_s'] or 0:.0f} images/s)")
    for row in metrics.get("per_source", []):
        typer.echo(f"test AUC {row['auc']:.3f} (95% CI {row['lo']:.3f}-{row['hi']:.3f}, n={row['n']})")
    if "auc_macro_ovr" in metrics:
        typer.echo(f"test macro AUC {metrics['auc_macro_ovr']:.3f}, accuracy {metrics['accuracy']:.3f}")
    typer.echo(f"run folder: {out_dir}")
    if report is not None:
        typer.echo(f"report: {report}")
