"""Resume or refuse: a run folder only ever describes what was computed in it.

A workflow states the settings that determine its results (a nested dict of plain values). The
first run writes them to ``settings.yaml``; a re-run with identical settings resumes; a re-run
with any changed setting is refused before work starts, with every changed setting listed and the
flag that starts over. ``restart_run`` clears the folder's own outputs for that flag.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from medbench.errors import InputError
from medbench.utils.files import write_text_atomic

logger = logging.getLogger(__name__)

#: The settings a run folder was computed with (written once, by the first run).
SETTINGS_FILE = "settings.yaml"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, tuple):
        data = list(data)
    return {prefix[:-1]: data}


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted setting whose value differs between ``old`` and ``new`` (missing = ``None``)."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_settings(out_dir: str | Path, settings: dict[str, Any], *, flag: str = "--restart") -> bool:
    """Record ``settings`` in a new run folder, or check them against the recorded ones.

    Returns:
        True when the folder already held a run with these settings (the caller resumes).

    Raises:
        InputError: The folder holds a run with other settings; the message lists every change.
    """
    out = Path(out_dir)
    path = out / SETTINGS_FILE
    plain = yaml.safe_load(yaml.safe_dump(settings, sort_keys=True))  # tuples -> lists, as stored
    if path.is_file():
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        diff = changed_settings(old, plain)
        if diff:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise InputError(
                f"{out} holds a run computed with other settings ({len(diff)} changed: {listed}); "
                f"re-run with {flag} to discard it and start over, or choose a new --out"
            )
        return True
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(plain, sort_keys=True))
    return False


def restart_run(out_dir: str | Path, outputs: list[str]) -> None:
    """Delete a run folder's own ``outputs`` (files or folders, relative names) and its settings.

    Only the named entries go: anything else a user put in the folder stays.
    """
    out = Path(out_dir)
    for name in [*outputs, SETTINGS_FILE]:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    logger.info("restarting %s: removed its previous outputs", out)
