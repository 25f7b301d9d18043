"""Experiment tracking: send a run's metrics, config and report to TensorBoard or MLflow.

Every long-running command (``train``, ``audit``, ``transfer``, ``harmonize fit``,
``denoise train``) takes ``--tracker tensorboard|mlflow|none``. A tracker logs

- per-epoch metrics (``log_metrics(row, step=epoch)``),
- the final metrics (``log_metrics(final)`` without a step, or ``step=-1`` folded to the last),
- the resolved configuration (``log_config``), and
- the report and other files as artifacts (``log_artifact``).

TensorBoard event files go to ``RUN/tensorboard/``. MLflow uses ``MLFLOW_TRACKING_URI`` when set,
else a local file store ``file:RUN/mlruns``. Both packages are optional (``pip install
'medbench[track]'``); asking for a missing one raises :class:`MissingDependencyError`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from medbench.errors import InputError
from medbench.registry import Registry
from medbench.utils.optional import optional_import

logger = logging.getLogger(__name__)
_MLFLOW_BAD = re.compile(r"[^\w\-. :/]")

TRACKER_HELP = "Experiment tracker: none, tensorboard (event files in OUT/tensorboard) or mlflow (OUT/mlruns or $MLFLOW_TRACKING_URI)."


class Tracker(Protocol):
    """What a tracker backend does; all methods must be cheap and never raise on odd values."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the resolved configuration (nested dicts are flattened with dots)."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record the numeric entries of ``metrics`` at ``step`` (None: final metrics)."""

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (report, config) to the run; missing files are skipped."""

    def close(self) -> None:
        """Flush and end the run."""


#: Entries are classes built as ``entry(run_dir=..., name=...)``; their instances satisfy :class:`Tracker`.
TRACKERS: Registry[Callable[..., Tracker]] = Registry("tracker", protocol=Tracker, entry="class")


def numeric_items(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) mapping, keys joined with ``/`` (list items by index).

    Bools, strings, None and NaNs are dropped.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_items(value, prefix=f"{name}/"))
        elif isinstance(value, (list, tuple)):
            out.update(numeric_items(dict(enumerate(value)), prefix=f"{name}/"))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, (int, float)) or hasattr(value, "__float__"):
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                out[name] = v
    return out


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested config dicts to ``a.b`` keys with string values (for MLflow params)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, prefix=f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


@TRACKERS.register("none")
class NullTracker:
    """Tracks nothing (the default)."""

    def __init__(self, run_dir: str | Path | None = None, *, name: str = "") -> None:
        pass

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def close(self) -> None:
        pass


@TRACKERS.register("tensorboard")
class TensorBoardTracker:
    """Writes TensorBoard event files to ``run_dir/tensorboard`` (scalars, config and report as text).

    Final metrics (``step=None``) are written under ``final/`` at the step after the last epoch.
    """

    def __init__(self, run_dir: str | Path, *, name: str = "") -> None:
        optional_import("tensorboard", extra="track", purpose="--tracker tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self._last_step = -1

    def log_config(self, config: Mapping[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in flatten_config(config).items())
        self.writer.add_text("config", text)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        prefix = "final/" if step is None else ""
        at = self._last_step + 1 if step is None else int(step)
        self._last_step = max(self._last_step, at if step is not None else self._last_step)
        for key, value in numeric_items(metrics, prefix).items():
            self.writer.add_scalar(key, value, global_step=at)

    def log_artifact(self, path: str | Path) -> None:
        p = Path(path)
        if not p.is_file():
            return
        # TensorBoard has no artifact store: record where the file is, and small text files inline.
        body = p.read_text(errors="replace") if p.suffix in {".json", ".yaml", ".yml", ".txt", ".csv"} \
            and p.stat().st_size < 200_000 else ""
        self.writer.add_text(f"artifact/{p.name}", f"{p.resolve()}\n\n{body}".strip())

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


@TRACKERS.register("mlflow")
class MLflowTracker:
    """Logs to MLflow: ``MLFLOW_TRACKING_URI`` if set, else the local file store ``run_dir/mlruns``.

    The experiment is named ``medbench`` and the run after the command and run folder.
    """

    def __init__(self, run_dir: str | Path, *, name: str = "") -> None:
        mlflow = optional_import("mlflow", extra="track", purpose="--tracker mlflow")
        self.mlflow = mlflow
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir).resolve() / "mlruns").as_uri()
        if self.uri.startswith("file:"):
            # MLflow >= 3.7 refuses file stores unless opted in; the issue asks for a plain local store
            # that needs no database, so opt in for this process (a user's own setting wins).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.tracking.MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name("medbench")
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment("medbench")
        run_name = name or Path(run_dir).name
        self.run_id = self.client.create_run(exp_id, run_name=run_name,
                                             tags={"medbench.run_dir": str(Path(run_dir).resolve())}).info.run_id
        self._last_step = -1

    def log_config(self, config: Mapping[str, Any]) -> None:
        for key, value in flatten_config(config).items():
            self.client.log_param(self.run_id, mlflow_name(key)[:250], value[:6000])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        at = self._last_step + 1 if step is None else int(step)
        if step is not None:
            self._last_step = max(self._last_step, at)
        prefix = "final/" if step is None else ""
        for key, value in numeric_items(metrics, prefix).items():
            self.client.log_metric(self.run_id, mlflow_name(key), value, step=at)

    def log_artifact(self, path: str | Path) -> None:
        if Path(path).is_file():
            self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def mlflow_name(key: str) -> str:
    """``key`` with the characters MLflow refuses in metric/param names replaced by ``_``."""
    return _MLFLOW_BAD.sub("_", key)


def make_tracker(kind: str | None, run_dir: str | Path, *, name: str = "") -> Tracker:
    """Create the tracker ``kind`` ("none", "tensorboard", "mlflow") for ``run_dir``."""
    kind = (kind or "none").lower()
    if kind not in TRACKERS:
        raise InputError(f"unknown tracker {kind!r}: use --tracker none, tensorboard or mlflow")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return TRACKERS.create(kind, run_dir=run_dir, name=name)


@contextmanager
def tracking(kind: str | None, run_dir: str | Path, *, name: str = "",
             config: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
    """Context manager: a tracker that logs ``config`` at start and is closed at exit."""
    tracker = make_tracker(kind, run_dir, name=name)
    try:
        if config:
            tracker.log_config(config)
        yield tracker
    finally:
        tracker.close()


def log_run_folder(tracker: Tracker, run_dir: str | Path, *, final: Mapping[str, Any] | None = None,
                   history: str | None = "history.csv") -> None:
    """Log a finished run folder: per-epoch rows of ``history.csv``, final metrics, config and report.

    Used by commands whose work happens in library code without a per-epoch callback, and by
    ``train`` when it returns an already finished run. ``history=None`` skips the per-epoch rows
    (when they were logged live).
    """
    run = Path(run_dir)
    hist = run / history if history else None
    if hist is not None and hist.is_file():
        import pandas as pd

        for row in pd.read_csv(hist).to_dict("records"):
            step = int(row.get("epoch", 0))
            tracker.log_metrics(row, step=step)
    metrics = dict(final or {})
    if not metrics and (run / "metrics.json").is_file():
        metrics = json.loads((run / "metrics.json").read_text())
    if metrics:
        tracker.log_metrics(metrics)
    for name in ("config.yaml", "config.json", "metrics.json", "report.html", "summary.json"):
        tracker.log_artifact(run / name)


def table_metrics(df: Any, keys: list[str], values: list[str]) -> dict[str, float]:
    """Metrics named ``key1:v1/key2:v2/value`` from a results table (audit, transfer, harmonize)."""
    out: dict[str, float] = {}
    keys = [k for k in keys if k in df.columns]
    for row in df.to_dict("records"):
        stem = "/".join(f"{k}:{row[k]}" for k in keys)
        out.update(numeric_items({v: row[v] for v in values if v in row}, prefix=f"{stem}/" if stem else ""))
    return out


def track_finished(kind: str | None, run_dir: str | Path, *, name: str, config: Mapping[str, Any],
                   final: Mapping[str, Any] | None = None,
                   epochs: list[Mapping[str, Any]] | None = None,
                   artifacts: tuple[str | Path, ...] = ()) -> None:
    """Log a command's finished run in one go: config, per-epoch rows, final metrics, artifacts.

    For commands whose epochs run inside library code without a callback (``harmonize fit``,
    ``denoise train``) or that have no epochs (``audit``, ``transfer``). Does nothing for "none".
    """
    if (kind or "none").lower() == "none":
        return
    with tracking(kind, run_dir, name=name, config=config) as tracker:
        for i, row in enumerate(epochs or []):
            tracker.log_metrics(row, step=int(row.get("epoch", i)))
        if final:
            tracker.log_metrics(final)
        for path in artifacts:
            tracker.log_artifact(path)
