"""``medbench ingest``: scan a folder into RUN_DIR/manifest.parquet + quarantine tables."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command to ``app``."""

    @app.command("ingest")
    def ingest(
        folder: Path = typer.Argument(..., help="Folder of DICOM (and PNG/JPEG/TIFF) files, searched recursively."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder for manifest.parquet, quarantine.csv/.parquet."),
        workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Worker processes (default: CPU count)."),  # noqa: UP045
        executor: str = typer.Option("local", "--executor", help="'local' process pool or 'dask'."),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (with --executor dask)."),  # noqa: UP045
        decode: bool = typer.Option(False, "--decode/--no-decode", help="Also decode every image (slower, catches corrupt compressed data)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Reuse rows of an earlier scan in --out for unchanged files."),
        pixel_budget: Optional[float] = typer.Option(  # noqa: UP045
            None, "--pixel-budget", help="Largest declared pixel size in GiB (rows x cols x frames x samples x bytes); "
            "larger files are quarantined before decoding. Default 2, or $MEDBENCH_PIXEL_BUDGET (bytes).",
        ),
        modality: Optional[list[str]] = typer.Option(None, "--modality", help="Keep only this modality, e.g. --modality CR --modality DX (repeat); others are listed as skipped."),  # noqa: UP045
        hash_uids: bool = typer.Option(False, "--hash-uids", help="Write keyed hashes (uidh-..., keyed with the project secret) instead of the SOP/Series/Study UIDs in the manifest and quarantine, so predictions and splits built from them hold no raw UID."),
        body_part: Optional[list[str]] = typer.Option(None, "--body-part", help="Keep only this BodyPartExamined, e.g. --body-part CHEST (repeat, case-insensitive); others are listed as skipped."),  # noqa: UP045
    ) -> None:
        """Scan FOLDER: usable images go to the manifest, unusable files to the quarantine with a reason.

        Header-only reads in parallel; input files are never modified. Re-running on an unchanged folder writes an identical manifest.
        An --out inside FOLDER is left out of the scan; --out equal to FOLDER is refused.
        """
        from medbench.errors import InputError
        from medbench.io.manifest import scan
        from medbench.parallel import check_executor
        from medbench.utils.files import output_inside_input, remove_stale_temps

        check_executor(executor)  # before any work: one line, exit 2
        inside = output_inside_input(folder, out)  # out == folder: refused; out inside folder: not scanned
        remove_stale_temps(out)
        if pixel_budget is not None and not pixel_budget > 0:
            raise InputError(f"--pixel-budget {pixel_budget} must be a positive number of GiB")
        # MedbenchError (missing/empty folder) propagates: medbench.cli.main prints it, exits 2.
        result = scan(
            folder, workers=workers, executor=executor, scheduler=scheduler, progress=progress, decode=decode,
            resume_from=out if resume else None, modality=modality, body_part=body_part,
            pixel_budget=None if pixel_budget is None else int(pixel_budget * 2**30), exclude=inside,
            hash_uids=hash_uids,
        )
        paths = result.save(out)
        _print_summary(result.summary())
        typer.echo(f"manifest: {paths['manifest']} ({len(result.manifest)} files)")
        skipped = int((result.quarantine["status"] == "skipped").sum())
        extra = f", {skipped} of them skipped by --modality/--body-part" if skipped else ""
        typer.echo(f"quarantine: {paths['quarantine_csv']} ({len(result.quarantine)} files{extra})")


def _print_summary(summary: dict[str, dict[str, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=100)
    titles = {
        "status": "Status",
        "modality": "Modality",
        "manufacturer": "Manufacturer",
        "format": "Format",
        "reason": "Quarantine reasons",
    }
    for key, title in titles.items():
        counts = summary.get(key) or {}
        if not counts:
            continue
        table = Table(title=title, show_header=True)
        table.add_column(key)
        table.add_column("files", justify="right")
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(name, str(n))
        console.print(table)
