"""``medbench sources`` (a table of the source cards) and ``medbench sources convert-radimagenet``."""

from __future__ import annotations

from pathlib import Path

import typer

sources_app = typer.Typer(
    name="sources",
    help="Pretrained sources: list the cards, convert RadImageNet weights.",
    invoke_without_command=True,
    no_args_is_help=False,
)

_COLUMNS = ("name", "arch", "weights", "input", "mean/std", "grey")
_DETAILS = ("resolution", "licence", "preprocessing", "citation")


@sources_app.callback()
def list_cards(
    ctx: typer.Context,
    details: bool = typer.Option(False, "--details", help="Also show resolution, licence, preprocessing notes and citations."),
) -> None:
    """Show every registered source card."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from medbench.sources import list_sources

    table = Table(title="medbench sources")
    cols = _COLUMNS + (_DETAILS if details else ())
    for col in cols:
        table.add_column(col, overflow="fold", no_wrap=col == "name")
    for card in list_sources():
        row = card.summary()
        # one architecture per line, so the table fits a 100-column terminal
        table.add_row(*("\n".join(str(row[c]).split("|")) if c == "arch" else str(row[c]) for c in cols))
    Console(width=min(Console().width, 200) if details else min(Console().width, 100)).print(table)


@sources_app.command("convert-radimagenet")
def convert_radimagenet_cmd(
    src: Path = typer.Argument(..., help="RadImageNet Keras .h5 file (or a PyTorch port state dict)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors (recommended) or .pt file."),
) -> None:
    """Convert RadImageNet weights to a timm-named state dict (load it with weights=OUT)."""
    from medbench.sources.radimagenet import read_radimagenet, write_radimagenet

    arch, variant, sd = read_radimagenet(src)
    path = write_radimagenet(arch, variant, sd, out, source=src)
    typer.echo(f"wrote {path} ({arch}, {variant} variant): create_source('radimagenet', arch='{arch}', weights='{path}')")


def register(app: typer.Typer) -> None:
    """Add the ``sources`` command group to the ``medbench`` app."""
    app.add_typer(sources_app, name="sources")
