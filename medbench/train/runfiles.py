"""The engine's own files of a run folder besides checkpoints: history.csv and summary.json.

config.yaml, settings.yaml and train.log belong to the run layer (:mod:`medbench.runs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medbench.utils.files import atomic_path, write_json_atomic


def write_history(out_dir: Path, history: pd.DataFrame) -> Path:
    """``history.csv``, one row per finished epoch."""
    with atomic_path(out_dir / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    return out_dir / "history.csv"


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    """``summary.json``."""
    return write_json_atomic(out_dir / "summary.json", summary)
