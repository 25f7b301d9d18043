"""CT/MR series to NIfTI with SimpleITK, voxel values (HU) and geometry taken from medbench's reader."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medbench.errors import InputError

logger = logging.getLogger(__name__)

DTYPES = ("auto", "int16", "float32")


def series_to_nifti(folder: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    series_uid: str | None = None, dtype: str = "auto") -> Path:
    """Write the series in ``folder`` as a NIfTI volume.

    Voxel values are :func:`medbench.io.series.read_series`'s modality values (HU for CT, the
    rescale applied); spacing, origin and direction are its patient geometry (ITK/LPS convention,
    which SimpleITK converts to NIfTI's header on write).

    Args:
        folder: A folder (recursive), or one multi-frame file.
        out: Output path ending in ``.nii`` or ``.nii.gz``.
        series_uid: Which series, when the folder holds several.
        dtype: "auto" (int16 when every value is a whole number in int16 range, else float32),
            "int16" (refused when that would round or clip) or "float32".

    Raises:
        InputError: Bad output name or dtype, or values that int16 cannot hold exactly.
    """
    import SimpleITK as sitk  # noqa: N813 - the library's usual name

    from medbench.io.series import read_series
    dest = Path(out)
    if not (dest.name.endswith(".nii") or dest.name.endswith(".nii.gz")):
        raise InputError(f"--out {dest}: a NIfTI file name must end in .nii or .nii.gz")
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    vol = read_series(folder, series_uid=series_uid)
    hu = np.asarray(vol.hu)
    exact_int = bool(np.all(np.isfinite(hu)) and np.all(hu == np.round(hu))
                     and hu.min(initial=0) >= -32768 and hu.max(initial=0) <= 32767)
    if dtype == "int16" and not exact_int:
        raise InputError("values are not whole numbers within int16 range: use --dtype float32")
    arr = hu.astype(np.int16) if (dtype == "int16" or (dtype == "auto" and exact_int)) else hu.astype(np.float32)
    img = sitk.GetImageFromArray(arr)  # (Z, H, W) -> ITK (x=W, y=H, z=Z)
    dz, dy, dx = (float(s) for s in vol.spacing)
    img.SetSpacing((dx, dy, dz))
    img.SetOrigin(tuple(float(v) for v in vol.origin))
    img.SetDirection(tuple(float(v) for v in np.asarray(vol.direction, dtype=float).reshape(-1)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(dest), True)
    logger.info("wrote %s: %s voxels %s, spacing %s mm", dest, arr.dtype, arr.shape[::-1], (dx, dy, dz))
    return dest
