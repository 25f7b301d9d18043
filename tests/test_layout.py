"""Repository hygiene that a code review would otherwise have to catch."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = ("medbench", "confounders", "transferability", "harmonization")


def test_tests_never_skip_over_the_projects_own_modules() -> None:
    """A missing project module is a failure, not a skip: ``importorskip`` is for optional extras."""
    pattern = re.compile(r"importorskip\(\s*[\"'](" + "|".join(OWN) + r")\b")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "tests").rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_library_code_logs_instead_of_printing() -> None:
    """``print`` belongs to the CLI layer (typer.echo) and notebooks, never to library modules."""
    offenders = []
    for pkg in OWN:
        for p in (ROOT / pkg).rglob("*.py"):
            if p.name in ("cli.py", "__main__.py"):
                continue
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if re.match(r"\s*print\(", line):
                    offenders.append(f"{p.relative_to(ROOT)}:{i}")
    assert not offenders, offenders
