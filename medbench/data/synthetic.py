"""The embedded default data: synthetic chest radiographs (DX/CR) and CT phantom series as DICOM.

In-memory generators live in ``synthetic_cxr`` / ``synthetic_ct`` / ``vendors`` and are re-exported
here; this module writes them to a folder (resumable: files already written are skipped).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from medbench.data.dicom_out import (
    ct_series_uid,
    is_complete_dicom,
    radiograph_sop_uid,
    write_ct_slice,
    write_radiograph,
)
from medbench.data.synthetic_ct import CT_HU, CT_LABELS, make_ct_phantom
from medbench.data.synthetic_cxr import (
    META_COLUMNS,
    CxrRecord,
    cxr_records,
    lesion_center,
    make_cxr,
    records_frame,
    render_cxr,
    render_cxr_linear,
)
from medbench.data.vendors import (
    DEFAULT_VENDOR_MIX,
    VENDOR_CURVES,
    VENDOR_INVERSES,
    VENDOR_MODELS,
    VENDORS,
    VendorLook,
    apply_vendor_look,
)
from medbench.errors import InputError
from medbench.utils.files import atomic_path, write_json_atomic
from medbench.utils.rng import derive_seed, numpy_rng

__all__ = [
    "CT_HU",
    "CT_LABELS",
    "DEFAULT_VENDOR_MIX",
    "META_COLUMNS",
    "VENDORS",
    "VENDOR_CURVES",
    "VENDOR_INVERSES",
    "VENDOR_MODELS",
    "CxrRecord",
    "VendorLook",
    "apply_vendor_look",
    "cxr_records",
    "lesion_center",
    "make_ct_phantom",
    "make_cxr",
    "read_labels",
    "records_frame",
    "render_cxr",
    "render_cxr_linear",
    "write_ct_series_dataset",
    "write_cxr_dataset",
]

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
SETTINGS_FILE = "synth.json"
CT_INDEX_FILE = "ct_series.csv"
_FOV_MM = 430.0
_CT_FOV_MM = 360.0


def write_cxr_dataset(
    out_dir: str | Path,
    n: int,
    *,
    size: int = 256,
    seed: int = 0,
    monochrome1_fraction: float = 0.15,
    vendors: list[str] | dict[str, float] | None = None,
    lesion_prob: float = 0.5,
    uid_prefix: str = "cxr",
    progress: bool = True,
) -> pd.DataFrame:
    """Write ``n`` synthetic radiographs as DICOM under ``out_dir/images`` plus ``out_dir/labels.csv``.

    Args:
        out_dir: Output folder (created). Files already complete there are kept (resume).
        n: Number of images.
        size: Image size in pixels.
        seed: Base seed (same meaning as in :func:`make_cxr`).
        monochrome1_fraction: Share of files stored as MONOCHROME1 (inverted values).
        vendors: Manufacturers to draw from: a list (uniform) or a name -> weight mapping.
        lesion_prob: Probability that a patient has the lesion.
        uid_prefix: Prefix of uids and patient ids.
        progress: Show a progress bar.

    Returns:
        DataFrame[path (absolute), uid, patient_id, label, sex, age, vendor, model, modality,
        photometric, sop_uid], also written to ``labels.csv``.
    """
    if not 0.0 <= float(monochrome1_fraction) <= 1.0:
        raise InputError(f"monochrome1_fraction must lie in [0, 1] (got {monochrome1_fraction})")
    if int(size) < 16:
        raise InputError(f"size must be >= 16 pixels (got {size})")
    mix = None
    if vendors is not None:
        mix = {v: 1.0 for v in vendors} if not isinstance(vendors, dict) else dict(vendors)
        if not mix:
            raise InputError("vendors must name at least one Manufacturer (or be None)")
    recs = cxr_records(n, seed=seed, lesion_prob=lesion_prob, uid_prefix=uid_prefix, vendor_mix=mix)
    out = _prepare_out(out_dir, {
        "kind": "cxr", "size": int(size), "seed": int(seed), "monochrome1_fraction": float(monochrome1_fraction),
        "vendor_mix": mix, "lesion_prob": float(lesion_prob), "uid_prefix": uid_prefix,
    })
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    skipped = 0
    spacing = _FOV_MM / int(size)
    for rec in tqdm(recs, desc="synthetic CXR", disable=not progress, unit="img"):
        path = out / "images" / f"{rec.uid}.dcm"
        mono1 = bool(numpy_rng(seed, rec.uid, "photometric").random() < monochrome1_fraction)
        model, modality = VENDOR_MODELS[rec.vendor]
        meta = rec.meta()
        if is_complete_dicom(path):
            skipped += 1
        else:
            img = render_cxr(rec, size=int(size), seed=seed)
            write_radiograph(
                path, img, uid=rec.uid, seed=seed, patient=meta, manufacturer=rec.vendor,
                model=model, modality=modality, monochrome1=mono1, pixel_spacing_mm=spacing,
                study_key=rec.uid,
            )
        rows.append({
            "path": str(path.resolve()), **meta, "model": model, "modality": modality,
            "photometric": "MONOCHROME1" if mono1 else "MONOCHROME2", "sop_uid": radiograph_sop_uid(seed, rec.uid),
        })
    if skipped:
        logger.info("resumed: %d of %d images were already written in %s", skipped, len(recs), out)
    df = pd.DataFrame(rows, columns=["path", *META_COLUMNS, "model", "modality", "photometric", "sop_uid"])
    df = df.astype({"label": "int64", "age": "int64"})
    with atomic_path(out / LABELS_FILE) as tmp:
        df.to_csv(tmp, index=False)
    return df


def _prepare_out(out_dir: str | Path, settings: dict) -> Path:
    """Check ``out_dir`` is (or can be) a folder and record its generator settings there; refuse
    to resume with different ones."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"out_dir {out} exists and is not a folder: choose another --out")
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != json.loads(json.dumps(settings)):
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            raise InputError(
                f"{path.parent} already holds a synthetic dataset written with other settings "
                f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}): "
                "use the same settings to resume, or choose another --out"
            )
    else:
        write_json_atomic(path, settings)
    return out


def read_labels(folder: str | Path) -> pd.DataFrame:
    """Read ``folder/labels.csv``; paths that no longer exist are re-based onto ``folder``."""
    folder = Path(folder)
    csv = folder / LABELS_FILE
    if not csv.is_file():
        raise InputError(f"no {LABELS_FILE} in {folder}: write the dataset first (`medbench synth --out {folder}`)")
    df = pd.read_csv(csv, dtype={"uid": str, "patient_id": str, "sex": str, "vendor": str})
    df["path"] = [p if Path(p).exists() else str((folder / "images" / Path(p).name).resolve()) for p in df["path"]]
    return df


def write_ct_series_dataset(
    out_dir: str | Path,
    n_series: int,
    *,
    n_slices: int = 8,
    size: int = 128,
    seed: int = 0,
    slice_thickness_mm: float = 2.5,
    progress: bool = True,
) -> pd.DataFrame:
    """Write ``n_series`` CT phantom series (one folder each) and ``out_dir/ct_series.csv``.

    Even series store int16 with RescaleIntercept 0; odd series store 12-bit uint16 with intercept
    -1024. Slices are spaced by ``slice_thickness_mm`` along the slice normal.

    Returns:
        DataFrame with one row per slice: path, series_uid, series_index, slice_index, z_mm,
        patient_id, manufacturer, phantom_seed.
    """
    if int(n_series) < 0:
        raise InputError(f"n_series must be >= 0 (got {n_series})")
    out = _prepare_out(out_dir, {
        "kind": "ct", "n_slices": int(n_slices), "size": int(size), "seed": int(seed),
        "slice_thickness_mm": float(slice_thickness_mm),
    })
    rows = []
    total = int(n_series) * int(n_slices)
    bar = tqdm(total=total, desc="synthetic CT", disable=not progress, unit="slice")
    spacing = _CT_FOV_MM / int(size)
    for s in range(int(n_series)):
        key = f"ct-{s:03d}"
        pseed = derive_seed(seed, "ct-series", s)
        folder = out / key
        paths = [folder / f"slice_{k:04d}.dcm" for k in range(int(n_slices))]
        hu = None
        patient = {"patient_id": f"ct-p{s:03d}", "sex": "F" if s % 2 else "M", "age": 40 + (s * 7) % 40}
        manufacturer, model = ("RefVendor", "RefCT 64") if s % 2 == 0 else ("VendorPow", "PowerCT 128")
        origin = (-_CT_FOV_MM / 2 + spacing / 2, -_CT_FOV_MM / 2 + spacing / 2, -slice_thickness_mm * int(n_slices) / 2)
        orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        series_uid = ct_series_uid(seed, key)
        for k, path in enumerate(paths):
            if not is_complete_dicom(path):
                if hu is None:
                    hu = make_ct_phantom(int(n_slices), size=int(size), seed=pseed)
                write_ct_slice(
                    path, hu[k], series_key=key, index=k, n_slices=int(n_slices), seed=seed,
                    patient=patient, manufacturer=manufacturer, model=model, origin=origin,
                    orientation=orientation, pixel_spacing_mm=spacing,
                    slice_thickness_mm=float(slice_thickness_mm), signed=(s % 2 == 0),
                )
            rows.append({
                "path": str(path.resolve()), "series_uid": series_uid, "series_index": s, "slice_index": k,
                "z_mm": origin[2] + k * float(slice_thickness_mm), "patient_id": patient["patient_id"],
                "manufacturer": manufacturer, "phantom_seed": pseed,
            })
            bar.update(1)
    bar.close()
    df = pd.DataFrame(rows, columns=["path", "series_uid", "series_index", "slice_index", "z_mm", "patient_id", "manufacturer", "phantom_seed"])
    if len(df):
        with atomic_path(out / CT_INDEX_FILE) as tmp:
            df.to_csv(tmp, index=False)
    return df

