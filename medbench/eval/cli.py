"""``medbench report RUN_DIR``: (re)write metrics and the HTML report from a run's predictions."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="A run folder containing predictions.parquet (or .csv)."),
        split: str = typer.Option("test", help="Which split to evaluate ('all' for every row)."),
        n_boot: int = typer.Option(1000, help="Bootstrap resamples for the AUC confidence intervals."),
        seed: int = typer.Option(0, help="Seed of the bootstrap."),
    ) -> None:
        """Evaluate a run's predictions: metrics.json, CSV tables and a self-contained report.html."""
        import pandas as pd

        from medbench.errors import InputError
        from medbench.eval.evaluate import write_evaluation

        for name in ("predictions.parquet", "predictions.csv"):
            path = run_dir / name
            if path.is_file():
                break
        else:
            raise InputError(f"{run_dir} has no predictions.parquet or predictions.csv: "
                             "run `medbench train ... --out RUN_DIR` first")
        pred = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        history = pd.read_csv(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else None
        config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None
        out = write_evaluation(pred, run_dir, split=None if split == "all" else split, n_boot=n_boot,
                               seed=seed, title=f"medbench report: {run_dir.name}", history=history, config=config)
        typer.echo(f"report written to {out}")
