"""Scan a folder into a manifest table; every unusable file goes to a quarantine table.

Each file is sniffed by its first bytes. DICOM files get a header-only read (large values such as
the pixel data stay on disk; common encodings are parsed straight from the first 64 KB by
:mod:`medbench.io.fastscan`, the rest by pydicom) plus cheap checks that the pixel data is present, complete and
decodable with the installed plugins (:func:`medbench.io.dicom.check_pixel_data`); ``decode=True``
also decodes the pixels. PNG/JPEG/TIFF files are listed too, with ``format`` png/jpeg/tiff and
modality "OT" (their size read from the image header). Anything else is quarantined with a reason
code. The scan runs in worker processes, never aborts on a bad file and never writes to the input
folder. Rows are sorted by path and hold no timestamps, so re-scanning an unchanged folder gives an
identical table.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydicom.errors import BytesLengthException
from pydicom.uid import UID

from medbench.errors import InputError
from medbench.io.checks import CHECK_KEYWORDS, check_pixel_fields, parse_frames, stray_bytes_error
from medbench.io.checks import pixel_budget as pixel_budget_of
from medbench.io.dicom import REASONS, DicomReadError, check_pixel_data, read_dicom, read_header
from medbench.io.dicom import _spacing as _dicom_spacing
from medbench.io.fastheader import header_values
from medbench.io.fastscan import CHUNK, parse_header
from medbench.io.header_columns import (
    EXTRA_COLUMNS,
    EXTRA_FLOAT_COLUMNS,
    EXTRA_INT_COLUMNS,
    EXTRA_KEYWORDS,
    blank_columns,
    extra_columns,
)
from medbench.io.sniff import RASTER_FORMATS, sniff_bytes
from medbench.parallel import WORKER_CRASH, Failure, check_executor, map_items
from medbench.utils.files import atomic_path, hash_id

logger = logging.getLogger(__name__)

#: Manifest columns (docs/interfaces.md), then medbench's additions.
MANIFEST_COLUMNS = [
    "path", "sop_uid", "series_uid", "study_uid", "patient_hash", "modality", "manufacturer", "model",
    "sex", "age", "view", "photometric", "rows", "columns", "pixel_spacing", "transfer_syntax", "status",
    "format", "frames", "pixel_spacing_col", *EXTRA_COLUMNS,
]
QUARANTINE_COLUMNS = ["path", "reason", "message", "format", "status"]
#: Quarantine reasons: the DICOM reasons plus "error" (an unexpected failure while scanning).
QUARANTINE_REASONS = (*REASONS, "error", "filtered")
STATE_FILE = "scan_state.parquet"
_DIGEST_KEY = b"medbench_tables_sha256"
_INT_COLUMNS = ("rows", "columns", "frames", *EXTRA_INT_COLUMNS)
_HEADER_KEYWORDS = [
    "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "Modality", "Manufacturer",
    "ManufacturerModelName", "PatientSex", "PatientAge", "ViewPosition", "PixelSpacing", "ImagerPixelSpacing",
    *EXTRA_KEYWORDS,
]
_ROW_KEYWORDS = tuple(dict.fromkeys([*_HEADER_KEYWORDS, *CHECK_KEYWORDS]))
_FLOAT_COLUMNS = ("age", "pixel_spacing", "pixel_spacing_col", *EXTRA_FLOAT_COLUMNS)


UID_COLUMNS = ("sop_uid", "series_uid", "study_uid")
UID_HASH_PREFIX = "uidh-"  # a UID holds only digits and dots, so a hashed value is never mistaken for one


def _is_uid_hash(value: object) -> bool:
    return isinstance(value, str) and value.startswith(UID_HASH_PREFIX)


def hash_uid(value: object) -> str:
    """``uidh-`` + keyed hash of a UID (:func:`medbench.utils.files.hash_id`); idempotent, "" stays ""."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    return text if text == "" or _is_uid_hash(text) else UID_HASH_PREFIX + hash_id(text, salt="uid")


def list_files(folder: str | os.PathLike[str], *, exclude: str | os.PathLike[str] | None = None) -> list[str]:
    """Regular files under ``folder`` (recursive, hidden files and folders skipped), sorted.

    ``exclude``: a folder left out of the listing (a command's output folder inside its input).

    Raises:
        InputError: The folder is missing, not a folder, or holds no files.
    """
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{root}: folder does not exist; pass the folder holding the DICOM/image files")
    if not root.is_dir():
        raise InputError(f"{root}: is a file, not a folder; pass the folder that contains it")
    files: list[str] = []
    skip = os.path.realpath(exclude) if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")
                       and (skip is None or os.path.realpath(os.path.join(dirpath, d)) != skip)]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not name.startswith(".") and os.path.isfile(path):
                files.append(os.path.abspath(path))
    if not files:
        raise InputError(f"{root}: folder holds no files; nothing to ingest")
    return sorted(files)


_AGE_UNITS = {"Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}


def parse_age(value: Any) -> float:
    """DICOM AS (``nnnD``, ``nnnW``, ``nnnM``, ``nnnY``) or a plain number -> years (NaN if invalid).

    AS is exactly three digits and a unit (PS3.5 6.2); ``000Y`` (and any zero AS) is not an age
    and maps to NaN, as do other lengths (``45Y``). A plain number (CSV sources) is taken as years.
    """
    if value is None:
        return math.nan
    if isinstance(value, (int, float, np.number)):
        return float(value) if np.isfinite(value) else math.nan
    text = str(value).strip().upper()
    if not text:
        return math.nan
    unit = text[-1]
    if unit in _AGE_UNITS:
        digits = text[:-1]
        if len(digits) != 3 or not digits.isdigit() or int(digits) == 0:
            return math.nan
        return int(digits) * _AGE_UNITS[unit]
    try:
        number = float(text)
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def normalise_sex(value: Any) -> str:
    """``"M"``, ``"F"``, ``"O"`` or ``""`` from DICOM PatientSex or words like "Male"/"female"."""
    text = str(value or "").strip().upper()
    return text[0] if text and text[0] in "MFO" else ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _dicom_row(
    path: str, decode: bool, fmt: str, head: bytes = b"", size: int = -1, budget: int | None = None
) -> dict[str, Any]:
    fast = parse_header(head, _ROW_KEYWORDS) if fmt == "dicom" and head else None
    if fast is not None:
        v = fast.values
        ts = check_pixel_fields(path, v, fast.pixel_keyword, UID(fast.transfer_syntax), fast.pixel_length,
                                fast.pixel_offset, size, meta_sop_class=fast.meta_sop_class, budget=budget)
    else:  # pydicom's reader: unusual encodings, long headers and broken files
        ds = read_header(path, keywords=_HEADER_KEYWORDS, fmt=fmt)
        v = header_values(ds, _ROW_KEYWORDS)
        ts = check_pixel_data(ds, path, v, budget=budget)
    frames = parse_frames(v["NumberOfFrames"])  # validated by the check above
    if decode:
        pixels = read_dicom(path, budget=budget).pixels
        bad = int(pixels.size - np.count_nonzero(np.isfinite(pixels)))
        if bad:
            raise DicomReadError(path, "non_finite", f"{bad} decoded pixel values are NaN/inf")
    dy, dx = _dicom_spacing(v) or (math.nan, math.nan)
    pid = _text(v["PatientID"])
    return {
        "path": path,
        "sop_uid": _text(v["SOPInstanceUID"]),
        "series_uid": _text(v["SeriesInstanceUID"]),
        "study_uid": _text(v["StudyInstanceUID"]),
        "patient_hash": hash_id(pid) if pid else "",
        "modality": _text(v["Modality"]),
        "manufacturer": _text(v["Manufacturer"]),
        "model": _text(v["ManufacturerModelName"]),
        "sex": normalise_sex(v["PatientSex"]),
        "age": parse_age(v["PatientAge"]),
        "view": _text(v["ViewPosition"]),
        "photometric": _text(v["PhotometricInterpretation"]),
        "rows": int(v["Rows"]),
        "columns": int(v["Columns"]),
        "pixel_spacing": dy,
        "transfer_syntax": str(ts),
        "status": "ok",
        "format": "dicom",
        "frames": frames,
        "pixel_spacing_col": dx,
        **extra_columns(v, str(ts)),
    }


_PIL_PHOTOMETRIC = {"1": "MONOCHROME2", "L": "MONOCHROME2", "I": "MONOCHROME2", "F": "MONOCHROME2",
                    "RGB": "RGB", "RGBA": "RGB", "P": "PALETTE COLOR", "LA": "MONOCHROME2"}


def _raster_row(path: str, fmt: str, decode: bool) -> dict[str, Any]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            mode = img.mode
            frames = int(getattr(img, "n_frames", 1) or 1)
            if decode:
                img.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on broken files
        raise DicomReadError(path, "undecodable", f"{fmt} image cannot be read ({exc})") from None
    photometric = _PIL_PHOTOMETRIC.get(mode, "MONOCHROME2" if mode.startswith("I;16") else mode)
    return {
        "path": path, "sop_uid": "", "series_uid": "", "study_uid": "", "patient_hash": "",
        "modality": "OT", "manufacturer": "", "model": "", "sex": "", "age": math.nan, "view": "",
        "photometric": photometric, "rows": int(height), "columns": int(width),
        "pixel_spacing": math.nan, "transfer_syntax": "", "status": "ok", "format": fmt,
        "frames": frames, "pixel_spacing_col": math.nan, **blank_columns(),
    }


def scan_file(path: str, decode: bool = False, *, fast: bool = True, budget: int | None = None) -> dict[str, Any]:
    """Manifest row for one file, or a quarantine row (``status`` "quarantined", ``reason``).

    Never raises for a bad file.

    Args:
        path: The file.
        decode: Also decode the pixels.
        fast: Parse common DICOM headers directly (:mod:`medbench.io.fastscan`); False always
            uses pydicom's reader (same rows, slower).
        budget: Pixel budget in bytes (:func:`medbench.io.checks.pixel_budget`).
    """
    fmt = "unknown"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(path, "rb") as fh:
                head = fh.read(CHUNK if fast else 132)
                size = os.fstat(fh.fileno()).st_size
            fmt = sniff_bytes(head)
            if fmt in RASTER_FORMATS:
                return _raster_row(path, fmt, decode)
            if fmt in ("dicom", "dicom_raw"):
                return _dicom_row(path, decode, fmt, head if fast else b"", size, budget)
            if fmt == "dicom_shifted":
                raise stray_bytes_error(path)
            raise DicomReadError(path, "not_dicom", f"not DICOM or PNG/JPEG/TIFF (looks like {fmt})")
    except DicomReadError as exc:
        return _quarantine(path, exc.reason, exc.detail, fmt)
    except (NotImplementedError, BytesLengthException) as exc:  # pydicom cannot convert a header value
        reason = "inconsistent" if isinstance(exc, BytesLengthException) or "Value Representation" in str(exc) else "error"
        return _quarantine(path, reason, f"header cannot be parsed ({exc})", fmt)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - the scan never aborts
        return _quarantine(path, "error", f"{type(exc).__name__}: {exc}", fmt)
    except BaseException as exc:  # noqa: BLE001 - a native extension panicked (pyo3 PanicException)
        return _quarantine(path, "decoder_crash", f"{type(exc).__name__}: {exc}", fmt)


def _quarantine(path: str, reason: str, message: str, fmt: str) -> dict[str, Any]:
    fmt = "dicom" if fmt in ("dicom_raw", "dicom_shifted") else fmt
    return {"path": path, "reason": reason, "message": message, "format": fmt, "status": "quarantined"}


@dataclass
class ScanResult:
    """The manifest (usable files) and the quarantine (unusable files with reasons)."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    #: path, size, mtime_ns and decode flag of every scanned file (lets a re-scan resume).
    state: pd.DataFrame | None = None

    def save(self, run_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``manifest.parquet``, ``quarantine.parquet``, ``quarantine.csv`` (and
        ``scan_state.parquet``) atomically.

        The state is written last and records a digest of the manifest and quarantine files it
        belongs to: it is the single commit point of a resumable scan. A run killed between the
        writes leaves a state whose digest does not match, and the next scan ignores it.
        """
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        out = {
            "manifest": run / "manifest.parquet",
            "quarantine": run / "quarantine.parquet",
            "quarantine_csv": run / "quarantine.csv",
        }
        with atomic_path(out["manifest"]) as tmp:
            self.manifest.to_parquet(tmp, index=False)
        with atomic_path(out["quarantine"]) as tmp:
            self.quarantine.to_parquet(tmp, index=False)
        with atomic_path(out["quarantine_csv"]) as tmp:
            self.quarantine.to_csv(tmp, index=False)
        if self.state is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            out["state"] = run / STATE_FILE
            table = pa.Table.from_pandas(self.state, preserve_index=False)
            meta = {**(table.schema.metadata or {}), _DIGEST_KEY: _tables_digest(run).encode()}
            with atomic_path(out["state"]) as tmp:
                pq.write_table(table.replace_schema_metadata(meta), tmp)
        return out

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> ScanResult:
        """Read a saved scan back (the state only when it belongs to these tables)."""
        run = Path(run_dir)
        try:
            manifest, quarantine = pd.read_parquet(run / "manifest.parquet"), pd.read_parquet(run / "quarantine.parquet")
        except FileNotFoundError:
            raise InputError(f"{run}: no manifest.parquet/quarantine.parquet; run `medbench ingest` first") from None
        return cls(manifest, quarantine, _committed_state(run))

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts by modality, manufacturer and status (manifest) and by quarantine reason."""
        m, q = self.manifest, self.quarantine

        def counts(series: pd.Series) -> dict[str, int]:
            filled = series.fillna("").replace("", "(blank)")
            return {str(k): int(v) for k, v in filled.value_counts().sort_index().items()}

        return {
            "modality": counts(m["modality"]),
            "manufacturer": counts(m["manufacturer"]),
            "format": counts(m["format"]),
            "status": {"ok": int(len(m)), "quarantined": int((q["status"] != "skipped").sum()),
                       **({"skipped": int((q["status"] == "skipped").sum())} if (q["status"] == "skipped").any() else {})},
            "reason": counts(q["reason"]),
        }


def _tables(rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    good = [r for r in rows if r.get("status") == "ok"]
    bad = [r for r in rows if r.get("status") != "ok"]
    manifest = pd.DataFrame(good, columns=MANIFEST_COLUMNS)
    for col in _INT_COLUMNS:
        manifest[col] = manifest[col].astype("Int64")
    for col in _FLOAT_COLUMNS:
        manifest[col] = manifest[col].astype("float64")
    for col in set(MANIFEST_COLUMNS) - set(_INT_COLUMNS) - set(_FLOAT_COLUMNS):
        manifest[col] = manifest[col].astype(object).where(manifest[col].notna(), "").astype(str)
    quarantine = pd.DataFrame(bad, columns=QUARANTINE_COLUMNS).astype(str)
    manifest = manifest.sort_values("path", kind="stable").reset_index(drop=True)
    quarantine = quarantine.sort_values("path", kind="stable").reset_index(drop=True)
    return manifest, quarantine


def scan(
    folder: str | os.PathLike[str],
    *,
    workers: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    progress: bool = True,
    decode: bool = False,
    resume_from: str | os.PathLike[str] | None = None,
    pixel_budget: int | None = None,
    modality: list[str] | tuple[str, ...] | None = None,
    body_part: list[str] | tuple[str, ...] | None = None,
    exclude: str | os.PathLike[str] | None = None,
    hash_uids: bool = False,
) -> ScanResult:
    """Scan ``folder`` (recursively) into a manifest and a quarantine table.

    Args:
        folder: The folder to ingest.
        workers: Worker processes (default: CPU count).
        executor: ``"local"`` or ``"dask"`` (see :func:`medbench.parallel.map_items`).
        scheduler: Dask scheduler address.
        progress: Show a progress bar.
        decode: Also decode every image (slower; catches corrupt compressed data).
        resume_from: A run folder of an earlier scan: files whose size and modification time are
            unchanged (and were scanned with at least the same ``decode``) keep their rows.
        pixel_budget: Largest declared pixel size in bytes (rows x columns x frames x samples x
            bytes); larger files are quarantined as ``pixel_budget`` before decoding. None: 2 GiB
            or ``$MEDBENCH_PIXEL_BUDGET``.
        modality: Keep only these modalities (e.g. ``["CR", "DX"]``); other usable files are
            listed in the quarantine table with status "skipped" and reason "filtered".
        body_part: Keep only these BodyPartExamined values (case-insensitive); likewise.
        exclude: A folder under ``folder`` left out of the scan (the run folder, when inside it).
        hash_uids: Write keyed hashes (:func:`hash_uid`) instead of the SOP/Series/Study instance
            UIDs, so that tables derived from the manifest (predictions, splits) carry no raw UID.

    With ``decode`` the files are decoded in isolated worker processes: a decoder that aborts the
    process quarantines that file as ``decoder_crash`` and the scan goes on.

    Raises:
        InputError: Missing or empty folder.
    """
    check_executor(executor)
    budget = pixel_budget_of(pixel_budget)
    files = list_files(folder, exclude=exclude)
    stats = [os.stat(p) for p in files]
    state = pd.DataFrame({
        "path": files,
        "size": [st.st_size for st in stats],
        "mtime_ns": [st.st_mtime_ns for st in stats],
        "decode": [bool(decode)] * len(files),
    })
    reused = _previous_rows(resume_from, state)
    if not hash_uids:  # rows of an earlier --hash-uids scan cannot give back their raw UIDs: rescan
        reused = {p: r for p, r in reused.items() if not any(_is_uid_hash(r.get(c)) for c in UID_COLUMNS)}
    todo = [p for p in files if p not in reused]
    fn = functools.partial(scan_file, decode=decode, budget=budget)
    results = map_items(fn, todo, workers=workers, executor=executor, scheduler=scheduler, desc="scan",
                        progress=progress, isolate=decode)
    fresh: dict[str, dict[str, Any]] = {}
    for path, res in zip(todo, results):
        if isinstance(res, Failure):  # scan_file does not raise, but a worker can still die
            reason = "decoder_crash" if res.error == WORKER_CRASH else "error"
            fresh[path] = _quarantine(path, reason, f"{res.error}: {res.message}", "unknown")
        else:
            fresh[path] = res
    rows = [reused[p] if p in reused else fresh[p] for p in files]
    if hash_uids:
        rows = [{**r, **{c: hash_uid(r.get(c)) for c in UID_COLUMNS}} for r in rows]
    rows = filter_rows(rows, modality=modality, body_part=body_part)
    manifest, quarantine = _tables(rows)
    if reused:
        state.loc[state["path"].isin(list(reused)), "decode"] = [reused[p]["_decode"] for p in files if p in reused]
    logger.info(
        "scanned %d files (%d reused from %s): %d ok, %d quarantined",
        len(files), len(reused), resume_from, len(manifest), len(quarantine),
    )
    return ScanResult(manifest, quarantine, state)


def _tables_digest(run: Path) -> str:
    """sha256 over the bytes of manifest.parquet and quarantine.parquet in ``run``."""
    h = hashlib.sha256()
    for name in ("manifest.parquet", "quarantine.parquet"):
        with open(run / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def _committed_state(run: Path) -> pd.DataFrame | None:
    """``scan_state.parquet`` when it was committed with the current tables, else None (with a warning)."""
    path = run / STATE_FILE
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    digest = (pq.read_schema(path).metadata or {}).get(_DIGEST_KEY, b"").decode()
    if digest != _tables_digest(run):
        logger.warning("%s: scan state does not belong to the current manifest (interrupted save?); "
                       "it is ignored and every file is scanned again", path)
        return None
    return pd.read_parquet(path)
def filter_rows(rows: list[dict[str, Any]], *, modality: list[str] | tuple[str, ...] | None = None,
                body_part: list[str] | tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Turn usable rows outside the wanted modalities / body parts into "skipped" rows with a reason."""
    mods = {m.strip().upper() for m in modality or () if m.strip()}
    parts = {b.strip().upper() for b in body_part or () if b.strip()}
    if not mods and not parts:
        return rows
    out = []
    for row in rows:
        if row.get("status") == "ok":
            why = ""
            if mods and str(row.get("modality", "")).upper() not in mods:
                why = f"modality {row.get('modality') or '(blank)'!s} not in --modality {','.join(sorted(mods))}"
            elif parts and str(row.get("body_part", "")).upper() not in parts:
                why = (f"body part {row.get('body_part') or '(blank)'!s} not in --body-part "
                       f"{','.join(sorted(parts))}")
            if why:
                fmt = row.get("format", "dicom")
                row = {"path": row["path"], "reason": "filtered", "message": why, "format": fmt, "status": "skipped"}
        out.append(row)
    return out


def _previous_rows(run_dir: str | os.PathLike[str] | None, state: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Rows of an earlier scan for files that have not changed since (path -> row)."""
    if run_dir is None or not (Path(run_dir) / STATE_FILE).exists() or not (Path(run_dir) / "manifest.parquet").exists():
        return {}
    try:
        old = ScanResult.load(run_dir)
    except Exception as exc:  # noqa: BLE001 - a damaged earlier run just means a full scan
        logger.warning("%s: earlier scan unreadable (%s); scanning everything", run_dir, exc)
        return {}
    if old.state is None:
        return {}
    if set(MANIFEST_COLUMNS) - set(old.manifest.columns):  # written by an older medbench: rescan
        logger.info("%s: earlier manifest lacks newer columns; scanning everything", run_dir)
        return {}
    merged = state.merge(old.state, on="path", suffixes=("", "_old"))
    same = merged[
        (merged["size"] == merged["size_old"]) & (merged["mtime_ns"] == merged["mtime_ns_old"])
        & (merged["decode_old"] | ~merged["decode"])
    ]
    keep = dict(zip(same["path"], same["decode_old"]))
    rows: dict[str, dict[str, Any]] = {}
    for table in (old.manifest, old.quarantine):
        for row in table.to_dict("records"):
            if row["path"] in keep and row.get("status") != "skipped":  # filters may differ now
                row = {k: (math.nan if v is pd.NA else v) for k, v in row.items()}
                row["_decode"] = bool(keep[row["path"]])
                rows[row["path"]] = row
    return rows
