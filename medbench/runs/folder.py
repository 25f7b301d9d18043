"""One run folder per workflow invocation: settings, config, log, units of work, metrics, tables.

Every workflow (train, audit, transfer, harmonize, denoise, demo) opens its output folder through
:func:`open_run`. On entry the folder

1. loses the temporary files a killed run left behind (``atomic_path`` names only),
2. is checked against the settings it was computed with (:func:`~medbench.runs.contract.check_settings`):
   identical settings resume, any change is refused with every changed setting and the restart flag
   listed; ``restart=True`` first removes the run's own outputs,
3. gets a resolved ``config.yaml`` (workflow name, settings, medbench version) and a log file
   ``<workflow>.log`` that receives the ``medbench`` loggers' INFO messages while the run is open.

Units of work (a fold, a source, a dose level, an image) are recorded under ``units/`` with the hash
of the settings they were computed with, so a resumed run skips exactly the units that are done and
recomputes one whose settings differ. Tables and metrics are written atomically.

Example:
    >>> with open_run(out, "audit", settings, outputs=["folds", "report.html"]) as run:  # doctest: +SKIP
    ...     for fold in range(5):
    ...         if run.unit_done(f"fold{fold}", unit_settings):
    ...             continue
    ...         ...  # compute and write the fold's files atomically
    ...         run.mark_unit(f"fold{fold}", unit_settings)
    ...     run.write_metrics({"auc": 0.9})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medbench.runs.contract import SETTINGS_FILE, check_settings, restart_run
from medbench.utils.files import (
    atomic_path,
    remove_stale_temps,
    write_json_atomic,
    write_text_atomic,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
UNITS_DIR = "units"


def settings_hash(settings: Any) -> str:
    """A stable 16-hex hash of plain settings (dict keys sorted, tuples as lists, paths as text)."""
    plain = yaml.safe_load(yaml.safe_dump(_plain(settings), sort_keys=True))
    blob = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        with contextlib.suppress(Exception):
            return value.item()
    return value


@dataclass
class Run:
    """An open run folder (see the module docstring).

    Attributes:
        out: The folder.
        workflow: The workflow's name ("audit", "transfer", ...).
        settings: The result-relevant settings, as checked and recorded.
        resumed: True when the folder already held a run with these settings.
    """

    out: Path
    workflow: str
    settings: dict[str, Any]
    resumed: bool

    # -- units of work -------------------------------------------------------------------------
    def _unit_path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
        if safe != name:  # "a/b.dcm" and "a_b.dcm" must not share a record
            safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        return self.out / UNITS_DIR / f"{safe}.json"

    def unit_done(self, name: str, settings: Any = None, outputs: list[str | Path] | tuple = ()) -> bool:
        """True when unit ``name`` finished with these ``settings`` and its ``outputs`` still exist.

        A unit recorded with other settings is not done (the caller recomputes it and marks it again).
        """
        path = self._unit_path(name)
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        if rec.get("hash") != settings_hash(settings):
            logger.info("unit %s of %s was computed with other settings: recomputing it", name, self.out)
            return False
        return all((self.out / p).exists() for p in outputs)

    def mark_unit(self, name: str, settings: Any = None, **facts: Any) -> None:
        """Record unit ``name`` as finished with ``settings`` (call after its outputs are written)."""
        write_json_atomic(self._unit_path(name), {"unit": name, "hash": settings_hash(settings),
                                                  "settings": _plain(settings), **_plain(facts)})

    def units(self) -> list[str]:
        """Names of the units recorded as finished."""
        folder = self.out / UNITS_DIR
        if not folder.is_dir():
            return []
        names = []
        for p in sorted(folder.glob("*.json")):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                names.append(json.loads(p.read_text(encoding="utf-8"))["unit"])
        return names

    # -- outputs --------------------------------------------------------------------------------
    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """``metrics.json``, atomically."""
        return write_json_atomic(self.out / METRICS_FILE, metrics)

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        """Write ``table`` atomically as ``name`` (``.parquet`` or ``.csv`` by its suffix)."""
        path = self.out / name
        with atomic_path(path) as tmp:
            if path.suffix == ".parquet":
                table.to_parquet(tmp, index=False)
            elif path.suffix in (".csv", ".tsv"):
                table.to_csv(tmp, index=False, sep="\t" if path.suffix == ".tsv" else ",")
            else:
                raise ValueError(f"table name {name!r} must end in .parquet, .csv or .tsv")
        return path

    def write_config(self, resolved: dict[str, Any] | None = None) -> Path:
        """``config.yaml``: workflow, settings and (optionally) what was resolved at run time."""
        from medbench import __version__

        data: dict[str, Any] = {"workflow": self.workflow, "medbench_version": __version__,
                                "settings": _plain(self.settings)}
        if resolved:
            data["resolved"] = _plain(resolved)
        return write_text_atomic(self.out / CONFIG_FILE, yaml.safe_dump(data, sort_keys=False))


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Copy INFO+ messages of the ``medbench`` and plugin loggers into ``path`` while open."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("medbench", "confounders", "transferability", "harmonization")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, level in zip(loggers, old, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


@contextlib.contextmanager
def open_run(
    out: str | os.PathLike[str],
    workflow: str,
    settings: dict[str, Any],
    *,
    outputs: list[str] | tuple[str, ...] = (),
    restart: bool = False,
    flag: str = "--restart",
    log: bool = True,
) -> Iterator[Run]:
    """Open ``out`` as the run folder of ``workflow`` (see the module docstring).

    Args:
        out: The run folder (created if missing).
        workflow: The workflow's name; also names the log file.
        settings: Every setting that changes the results (plain values; paths become text).
        outputs: The run's own files/folders, removed by ``restart`` (``units/``, ``config.yaml``,
            ``metrics.json`` and the log are always included).
        restart: Discard a previous run in ``out`` before starting.
        flag: The CLI flag named in the refusal message.
        log: Write ``<workflow>.log`` while the run is open.

    Raises:
        InputError: ``out`` holds a run with other settings (every change listed).
    """
    folder = Path(out)
    remove_stale_temps(folder)
    own = [*outputs, UNITS_DIR, CONFIG_FILE, METRICS_FILE, f"{workflow}.log"]
    if restart and (folder / SETTINGS_FILE).exists():
        restart_run(folder, own)
    resumed = check_settings(folder, _plain(settings), flag=flag)
    run = Run(out=folder, workflow=workflow, settings=settings, resumed=resumed)
    if not (folder / CONFIG_FILE).is_file() or not resumed:
        run.write_config()
    if resumed:
        logger.info("resuming %s run in %s (%d unit(s) already done)", workflow, folder, len(run.units()))
    ctx = run_log(folder / f"{workflow}.log") if log else contextlib.nullcontext()
    try:
        with ctx:
            yield run
    except BaseException:
        if not resumed and not run.units():
            # nothing was computed: forget the settings, so a corrected re-run is not refused
            for name in (SETTINGS_FILE, CONFIG_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
        raise
    finally:
        remove_stale_temps(folder)
