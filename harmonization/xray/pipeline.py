"""End-to-end GDCE jobs on files: fit from a labelled manifest, apply to a DICOM folder.

Intensities are mapped to [0, 1] by the file's DICOM VOI window (WindowCenter/Width, mirrored for
MONOCHROME1 like the pixels), or by the stored value range (``BitsStored`` after the modality LUT
and MONOCHROME1 inversion) when the file has no linear window; never per image: a per-image
min-max stretch would erase exactly the vendor look that GDCE is meant to learn. On the way back,
pixels inside the window get ``lo + curve(u) (hi - lo)``; pixels outside it are kept as they are
(the curve fixes 0 and 1, so the result is continuous and monotone in the input).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medbench.errors import InputError
from medbench.runs import Run, open_run

if TYPE_CHECKING:
    from harmonization.xray.baselines import Harmonizer
    from medbench.io.dicom import DicomImage

log = logging.getLogger(__name__)


GREY = ("MONOCHROME1", "MONOCHROME2")


def read_unit_image(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A grey image in [0, 1] (DICOM VOI window, else stored range) and that range (lo, hi)."""
    from medbench.io import read_dicom

    return _unit_image(read_dicom(path), path)


def unit_range(img: DicomImage) -> tuple[float, float, str]:
    """``(lo, hi, how)``: the values of ``img.pixels`` mapped to 0 and 1.

    The first linear VOI window of the file (``center -/+ width / 2``, mirrored into the inverted
    values of a MONOCHROME1 file) when there is one, else the stored range after the modality LUT.
    """
    s_lo, s_hi = img.meta.get("inversion_range", (float(img.pixels.min()), float(img.pixels.max())))
    window = img.meta.get("window")
    ds = getattr(img, "dataset", None)
    function = str(ds.get("VOILUTFunction", "LINEAR") if ds is not None else "LINEAR").upper()
    if window is not None and float(window[1]) > 1 and function != "SIGMOID" \
            and (ds is None or "VOILUTSequence" not in ds):
        center, width = float(window[0]), float(window[1])
        if img.meta.get("inverted"):
            center = s_lo + s_hi - center
        return center - width / 2.0, center + width / 2.0, "DICOM window"
    if not s_hi > s_lo:
        return float(img.pixels.min()), float(img.pixels.max()) + 1e-6, "image range"
    return float(s_lo), float(s_hi), "stored range"


def _unit_image(img: DicomImage, path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """:func:`read_unit_image` of an already decoded image."""
    if img.pixels.ndim != 2 or img.meta.get("colour"):
        raise InputError(f"{path}: GDCE works on single-frame grey X-rays (pixels shape {img.pixels.shape})")
    photometric = str(img.meta.get("photometric") or "")
    if photometric and photometric not in GREY:
        raise InputError(f"{path}: GDCE needs a MONOCHROME1/2 radiograph, got PhotometricInterpretation "
                         f"{photometric!r}")
    lo, hi, _ = unit_range(img)
    return np.clip((img.pixels - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), (float(lo), float(hi))


def from_unit(pixels: np.ndarray, harmonised: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Back to pixel values: ``lo + h (hi - lo)`` inside the window, the input outside it."""
    x = np.asarray(pixels, np.float64)
    inside = (x >= lo) & (x <= hi)
    return np.where(inside, lo + np.asarray(harmonised, np.float64) * (hi - lo), x)


def load_images(paths: list[str], size: int, *, with_how: bool = False) -> np.ndarray | tuple[np.ndarray, list[str]]:
    """Read and resize (antialiased) images to ``(N, size, size)``; with ``with_how`` also how
    each was mapped to [0, 1] (``"DICOM window"``, ``"stored range"``, ``"image range"``)."""
    from medbench.io import read_dicom

    out = np.empty((len(paths), size, size), np.float32)
    hows = []
    for i, p in enumerate(paths):
        img = read_dicom(p)
        x, _ = _unit_image(img, p)
        hows.append(unit_range(img)[2])
        t = torch.from_numpy(x)[None, None]
        out[i] = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()
    return (out, hows) if with_how else out


def model_fingerprint(path: str | Path) -> str:
    """Short content hash of a model file (recorded in the derived DICOMs)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


WORKFLOW = "harmonize"  # the run folder's workflow name (log: harmonize.log)
APPLY_LOG = "harmonize_log.csv"  # one row per input file of a ``harmonize apply`` batch


@dataclass(frozen=True)
class _ApplyJob:
    src: str
    dst: str
    model: str
    fingerprint: str
    deidentify: bool = False
    run: Run | None = None
    unit: str = ""
    settings: dict | None = None


def _apply_one(job: _ApplyJob) -> str:
    from medbench.io import read_dicom, write_derived_image

    dst = Path(job.dst)
    if job.model not in _HARMONIZERS:  # one load per worker process
        _HARMONIZERS[job.model] = _load_checked(job.model)
    harmonizer = _HARMONIZERS[job.model]
    img = read_dicom(job.src)  # read once: pixels and (optionally) the vendor
    x, (lo, hi) = _unit_image(img, job.src)
    vendor = str(img.meta.get("manufacturer") or "")
    reference = harmonizer.reference
    if vendor and vendor == reference:
        values, how = img.pixels, f"reference vendor {vendor}: intensities unchanged"
    else:
        # e.g. GDCE: the image-conditioned predictor ("*") needs no vendor name; per-vendor curves are optional
        harmonizer.check_vendor(vendor, job.src)
        h = harmonizer.transform(x[None], vendor=vendor)[0]
        values = from_unit(img.pixels, h, lo, hi)
        how = f"{harmonizer.label} intensity harmonization to {reference or 'the reference'}"
    deid = None
    if job.deidentify:
        from medbench.io.deid import Deidentifier

        deid = Deidentifier()  # keyed by the project secret: the same UID map in every worker
    write_derived_image(values, job.src, dst, description=f"{how} (medbench, model {job.fingerprint})",
                        series_description=f"{harmonizer.label} harmonized (medbench)",
                        uid_key=f"{harmonizer.name}:{job.fingerprint}:{job.src}", deidentify=deid)
    if job.run is not None:
        job.run.mark_unit(job.unit, job.settings)
    return "written"


#: Fitted harmonizers by model path, loaded once per process.
_HARMONIZERS: dict[str, Harmonizer] = {}


def _load_checked(model: str) -> Harmonizer:
    """:func:`~harmonization.xray.baselines.load_harmonizer`, with a one-line :class:`InputError`
    for a file torch cannot read."""
    from harmonization.xray.baselines import load_harmonizer
    from medbench.errors import MedbenchError

    try:
        return load_harmonizer(model)
    except InputError as exc:
        raise InputError(" ".join(str(exc).split())[:500]) from None
    except MedbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        first = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(f"GDCE model {model} cannot be read ({type(exc).__name__}: {first}); "
                         "pass a model.pt written by `medbench harmonize fit`") from None


def apply_folder(model: str | Path, folder: str | Path, out: str | Path, *, workers: int | None = None,
                 executor: str = "local", scheduler: str | None = None, progress: bool = True,
                 deidentify: bool = False, restart: bool = False) -> pd.DataFrame:
    """Harmonise every DICOM under ``folder`` into ``out`` (same relative paths).

    ``deidentify``: write de-identified headers (:mod:`medbench.io.deid`). An ``out`` inside
    ``folder`` is left out of the input scan. Inputs are only read. Files that fail are reported
    in the returned table (and ``harmonize_log.csv``) with their error, and the batch goes on.

    ``out`` is a :func:`medbench.runs.open_run` run folder (``config.yaml``, ``harmonize.log``,
    ``units/``): each image is a unit recorded with the settings hash (model content, input folder,
    de-identification), so a re-run with the same settings skips finished images, and one with other
    settings is refused, every change listed, unless ``restart`` (which removes the previous outputs).
    """
    from medbench.parallel import Failure, check_executor, map_items

    check_executor(executor)
    src_root, dst_root = Path(os.path.abspath(folder)), Path(out)  # list_files gives absolute paths
    if not src_root.is_dir():
        raise InputError(f"input folder {src_root} does not exist")
    if not Path(model).is_file():
        raise InputError(f"GDCE model {model} not found: train one with `medbench harmonize fit`")
    from medbench.io.manifest import list_files
    from medbench.utils.files import output_inside_input, remove_stale_temps

    inside = output_inside_input(src_root, dst_root)  # equal: refused; inside: left out of the scan
    remove_stale_temps(dst_root)
    files = [Path(p) for p in list_files(src_root, exclude=inside)]
    files = [p for p in files if p.suffix.lower() in (".dcm", ".dicom", "")]
    if not files:
        raise InputError(f"no DICOM files (*.dcm) under {src_root}")
    key = str(Path(model).resolve())
    if key not in _HARMONIZERS:  # a corrupt model is reported once, up front, not once per file
        _HARMONIZERS[key] = _load_checked(key)
    fp = model_fingerprint(model)
    settings = {"command": "apply", "input": str(src_root), "model": key, "model_sha256": fp,
                "deidentify": bool(deidentify)}
    rel = [p.relative_to(src_root).as_posix() for p in files]
    old = _recorded_outputs(dst_root)
    with open_run(dst_root, WORKFLOW, settings, outputs=sorted(set(rel) | old) + [APPLY_LOG],
                  restart=restart) as run:
        jobs = [_ApplyJob(str(p), str(dst_root / r), key, fp, deidentify, run, r, settings)
                for p, r in zip(files, rel, strict=True)]
        todo = [job for job in jobs if not run.unit_done(job.unit, settings, outputs=[job.unit])]
        results = map_items(_apply_one, todo, workers=workers, executor=executor, scheduler=scheduler,
                            desc="harmonize", progress=progress, isolate=True)
        status = {job.src: res for job, res in zip(todo, results, strict=True)}
        rows = []
        for job in jobs:
            res = status.get(job.src, "skipped")
            if isinstance(res, Failure):
                rows.append({"path": job.src, "output": "", "status": "failed",
                             "error": f"{res.error}: {res.message}"})
            else:
                rows.append({"path": job.src, "output": job.dst, "status": res, "error": "",
                             "deidentified": bool(deidentify)})
        table = pd.DataFrame(rows)
        run.write_table(APPLY_LOG, table)
    return table


def _recorded_outputs(out: Path) -> set[str]:
    """Output files of a previous batch in ``out`` (from its log), so ``restart`` removes them too."""
    try:
        old = pd.read_csv(out / APPLY_LOG)
    except (OSError, ValueError):
        return set()
    return {os.path.relpath(p, out) for p in old.get("output", pd.Series(dtype=str)).dropna().astype(str)
            if p and not os.path.relpath(p, out).startswith("..")}
