"""``medbench export nifti|monai``: hand medbench data to NIfTI tools and MONAI pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

export_app = typer.Typer(help="Export to other tools: NIfTI volumes, MONAI datalists.", no_args_is_help=True)


@export_app.command("nifti")
def nifti_cmd(
    series: Path = typer.Argument(..., help="Folder of one CT/MR series (searched recursively) or a multi-frame file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output FILE.nii.gz (or .nii)."),
    series_uid: Optional[str] = typer.Option(None, "--series-uid", help="Which series, when the folder holds several."),  # noqa: UP045
    dtype: str = typer.Option("auto", "--dtype", help="auto (int16 when exact, else float32), int16 or float32."),
) -> None:
    """Write a series as NIfTI: HU (rescale applied), spacing, origin and direction preserved."""
    from medbench.interop.nifti import series_to_nifti

    typer.echo(f"wrote {series_to_nifti(series, out, series_uid=series_uid, dtype=dtype)}")


@export_app.command("monai")
def monai_cmd(
    source: Path = typer.Argument(..., help="A `medbench train` run folder, or a manifest.parquet / labels.csv (or a folder holding one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output datalist.json."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", "-m", help="The table a run folder was trained on (needed for a run folder)."),  # noqa: UP045
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV joined onto the table on path, sop_uid or uid."),  # noqa: UP045
    label: str = typer.Option("label", "--label", help="Label column (class ids)."),
) -> None:
    """Write a MONAI datalist (sections training/validation/test) that `load_decathlon_datalist` reads."""
    from medbench.interop.monai import write_datalist
    from medbench.train.experiment import join_labels, read_table

    table = read_table(manifest) if manifest is not None else None
    if labels is not None:
        table = join_labels(table if table is not None else read_table(source), read_table(labels))
    typer.echo(f"wrote {write_datalist(source, out, table=table, label=label)}")


def register(app: typer.Typer) -> None:
    """Add the ``export`` sub-app to the medbench CLI."""
    app.add_typer(export_app, name="export")
