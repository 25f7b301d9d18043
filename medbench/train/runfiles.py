"""Files of a run folder besides checkpoints: config.yaml, history.csv, summary.json, train.log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medbench.train.config import TrainConfig
from medbench.utils.files import atomic_path, write_json_atomic, write_text_atomic


def write_config(out_dir: Path, cfg: TrainConfig, resolved: dict[str, Any],
                 run_info: dict[str, Any] | None = None) -> Path:
    """``config.yaml``: the configuration, what was resolved at run time (device, sizes, ...) and
    the caller's ``run`` facts (data, source, ...)."""
    data: dict[str, Any] = {**cfg.to_dict(), "resolved": resolved}
    if run_info:
        data["run"] = run_info
    return write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(data, sort_keys=False))


def read_config(out_dir: Path) -> dict[str, Any]:
    """Load ``config.yaml`` of a run folder (without its ``resolved`` part)."""
    data = yaml.safe_load((Path(out_dir) / "config.yaml").read_text(encoding="utf-8")) or {}
    data.pop("resolved", None)
    data.pop("run", None)
    return data


def write_history(out_dir: Path, history: pd.DataFrame) -> Path:
    """``history.csv``, one row per finished epoch."""
    with atomic_path(out_dir / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    return out_dir / "history.csv"


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    """``summary.json``."""
    return write_json_atomic(out_dir / "summary.json", summary)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Copy INFO+ messages of the ``medbench`` loggers into ``path`` while the context is open."""
    root = logging.getLogger("medbench")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
