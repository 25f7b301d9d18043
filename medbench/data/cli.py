"""``medbench synth``: write the embedded synthetic dataset (DICOM radiographs, optional CT series)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""

    @app.command("synth")
    def synth(
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (resumes when it already holds part of the dataset)."),
        n: int = typer.Option(200, "--n", min=0, help="Number of chest radiographs."),
        size: int = typer.Option(256, "--size", min=16, help="Image height and width in pixels."),
        seed: int = typer.Option(0, "--seed", help="Seed: same seed, same files."),
        ct_series: int = typer.Option(0, "--ct-series", min=0, help="Also write this many CT phantom series under OUT/ct."),
        ct_slices: int = typer.Option(8, "--ct-slices", min=1, help="Slices per CT series."),
        ct_size: int = typer.Option(128, "--ct-size", min=32, help="CT slice size in pixels."),
        monochrome1: float = typer.Option(0.15, "--monochrome1-fraction", min=0.0, max=1.0, help="Share of radiographs stored as MONOCHROME1."),
        lesion_prob: float = typer.Option(0.5, "--lesion-prob", min=0.0, max=1.0, help="Share of patients with the lesion (label 1)."),
        vendor: list[str] = typer.Option(None, "--vendor", help="Restrict to these Manufacturers (repeatable): RefVendor, VendorPow, VendorLog, VendorInvS, VendorSig."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    ) -> None:
        """Write synthetic chest radiographs (DX/CR DICOM + labels.csv) and CT phantom series.

        Images show a body, lungs, ribs, heart and texture; label 1 = a lesion (nodule or opacity)
        in a lung. Manufacturers differ by intensity curve; patients may have several
        images, so split by patient_id. Example: medbench synth --out data/synth --n 300 --ct-series 2
        """
        from medbench.data.synthetic import write_ct_series_dataset, write_cxr_dataset

        df = write_cxr_dataset(
            out, n, size=size, seed=seed, monochrome1_fraction=monochrome1,
            vendors=list(vendor) if vendor else None, lesion_prob=lesion_prob, progress=progress,
        )
        typer.echo(f"wrote {len(df)} radiographs of {df['patient_id'].nunique() if len(df) else 0} patients; labels: {Path(out) / 'labels.csv'}")
        if len(df):
            for col in ("vendor", "label", "sex", "photometric"):
                counts = df[col].value_counts().sort_index()
                typer.echo(f"  {col:<11} " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
            typer.echo(f"  age         {int(df['age'].min())}-{int(df['age'].max())} (median {df['age'].median():.0f})")
        if ct_series:
            ct = write_ct_series_dataset(Path(out) / "ct", ct_series, n_slices=ct_slices, size=ct_size, seed=seed, progress=progress)
            typer.echo(f"wrote {ct['series_uid'].nunique()} CT series ({len(ct)} slices) under {Path(out) / 'ct'}; index: {Path(out) / 'ct' / 'ct_series.csv'}")
