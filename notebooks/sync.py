"""Write the example notebooks (``notebooks/*.ipynb``) from their jupytext percent scripts.

The source of each notebook is ``notebooks/src/<name>.py`` (``# %%`` code cells, ``# %% [markdown]``
text cells), linted by ruff like any Python file. Edit the script, then run
``python notebooks/sync.py`` and commit both; ``tests/test_notebooks.py`` checks that they match.
The ``.ipynb`` files carry no outputs, execution counts or jupytext metadata, and stable cell ids,
so that regenerating them gives the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"


def sources() -> dict[str, Path]:
    """Map each notebook's file name to its percent script."""
    return {f"{p.stem}.ipynb": p for p in sorted(SRC.glob("*.py"))}


def build(script: Path) -> nbformat.NotebookNode:
    """The notebook for ``script``: its cells' types and sources, nothing else."""
    text = jupytext.read(script, fmt="py:percent")
    make = {"code": new_code_cell, "markdown": new_markdown_cell}
    nb = new_notebook(cells=[make[c.cell_type](c.source) for c in text.cells])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids so that regenerating gives the same files
        cell["id"] = f"cell-{i:02d}"
    return nb


def main(names: list[str]) -> None:
    """Write the notebooks named in ``names`` (all when empty)."""
    for name, script in sources().items():
        if names and name not in names:
            continue
        nbformat.write(build(script), HERE / name)
        sys.stdout.write(f"wrote {HERE / name}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
