"""Recognise a finished ``medbench train`` run without importing torch, so re-running it is instant.

At the end of a successful run the CLI writes ``finished.json`` with a fingerprint of the command's
settings and of the input tables (path, size, modification time). The same command again finds the
same fingerprint and prints the recorded result instead of rebuilding the model and re-evaluating.
Any change (a setting, an edited table, a missing metrics.json/report.html) falls through to the
normal path, which resumes or refuses as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FINISHED = "finished.json"
#: Settings that do not change a run's result and are left out of the fingerprint.
IGNORED = frozenset({"progress", "tracker", "workers", "checkpoint_every", "out"})


def _file_stamp(path: Any) -> Any:
    if path is None:
        return None
    p = Path(path)
    target = p
    if p.is_dir():
        target = next((p / n for n in ("manifest.parquet", "labels.csv") if (p / n).is_file()), p)
    try:
        st = os.stat(target)
    except OSError:
        return str(target)
    return [str(target.resolve()), st.st_size, st.st_mtime_ns]


def fingerprint(settings: dict[str, Any], files: dict[str, Any]) -> str:
    """Hash of the result-relevant ``settings`` and the stamps of the input ``files``."""
    kept = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(settings.items()) if k not in IGNORED}
    stamps = {k: _file_stamp(v) for k, v in sorted(files.items())}
    blob = json.dumps({"settings": kept, "files": stamps}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_finished(out: str | os.PathLike[str], fp: str) -> dict[str, Any] | None:
    """The recorded result of a finished run with fingerprint ``fp`` in ``out``, else None."""
    run = Path(out)
    try:
        rec = json.loads((run / FINISHED).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("fingerprint") != fp:
        return None
    needed = [run / "metrics.json", run / "summary.json"] + ([run / rec["report"]] if rec.get("report") else [])
    if not all(p.is_file() for p in needed):
        return None
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
    except json.JSONDecodeError:
        return None
    return {"metrics": metrics, "summary": summary, "report": (run / rec["report"]) if rec.get("report") else None}


def write_finished(out: str | os.PathLike[str], fp: str, report: str | os.PathLike[str] | None) -> None:
    """Record that the run in ``out`` finished with fingerprint ``fp``."""
    from medbench.utils.files import write_json_atomic

    run = Path(out)
    write_json_atomic(run / FINISHED, {"fingerprint": fp, "report": Path(report).name if report else None})
